"""What the library achieves at each OpenAI usage tier (issue #20): text-embedding-3-small's published
limits, the sync and async drivers at their defaults, against the local server enforcing the tier.

    python bench/bench_tiers.py                 # every tier, both drivers (~10 minutes on 2 cores)
    python bench/bench_tiers.py --tiers 1,3     # a subset

Limits used (text-embedding-3-small, OpenAI's usage-tier pages, read 2026-12-06): free 100 RPM /
40,000 TPM; tier 1 3,000 RPM / 1M TPM (Batch API queue 3M tokens); tier 2 5,000 / 1M (20M); tier 3
5,000 / 5M (100M); tier 4 10,000 / 5M (500M); tier 5 10,000 / 10M (4B).

Time is scaled per tier so that each run takes seconds, not minutes: the server's rate-limit
"minute" (`window_seconds`) is 60 s divided by a factor that brings the tier's ceiling to about
`--ceiling` tokens/s (300,000 by default: what this machine's client and server sustain with the
latency below, so the tier, not the machine, is what binds). RPM scales with the same window.
Latency is not scaled (0.15 s + 4 us/token per request): a conservative choice, a scaled minute
holds fewer round trips than a real one. Each run embeds 2.5 scaled minutes' worth of tokens from
`bench_defaults.make_corpus`; the measure is tokens/s against the best possible run (a perfect
client starts with a full bucket, then goes at the ceiling: its tokens/s over 2.5 minutes is 1.65x
the ceiling), and 429s per request. From the measured fraction, the table projects what a 100,000-section corpus of 437
tokens a section (43.7M tokens) takes online at that tier, in real hours, and through the Batch API
(the queue holds `queue` tokens: rounds = tokens / queue, each batch done within 24 hours).

Writes bench/results/tiers.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench_defaults as bd  # noqa: E402  (its child runner, corpus and log analysis)

TIERS: dict[str, dict[str, int]] = {
    "free": {"rpm": 100, "tpm": 40_000, "queue": 0},
    "1": {"rpm": 3_000, "tpm": 1_000_000, "queue": 3_000_000},
    "2": {"rpm": 5_000, "tpm": 1_000_000, "queue": 20_000_000},
    "3": {"rpm": 5_000, "tpm": 5_000_000, "queue": 100_000_000},
    "4": {"rpm": 10_000, "tpm": 5_000_000, "queue": 500_000_000},
    "5": {"rpm": 10_000, "tpm": 10_000_000, "queue": 4_000_000_000},
}
LIMITS_READ = "2026-12-06"
CORPUS_SECTIONS = 100_000
CORPUS_TOKENS = CORPUS_SECTIONS * bd.MEAN_TOKENS
RESULTS = os.path.join(HERE, "results", "tiers.json")


def run_tier(name: str, fake: Any, workdir: str, ceiling: float, seed: int) -> dict[str, Any]:
    tier = TIERS[name]
    per_minute_tokens = tier["tpm"]
    # The scaled "minute": at most 20x faster than real (a shorter one would hold too few round trips
    # of the unscaled latency, and a whole-second retry-after would outlast it).
    window = max(3.0, min(60.0, per_minute_tokens / ceiling))
    scale = 60.0 / window
    target_tokens = int(2.5 * per_minute_tokens)
    texts = bd.make_corpus(max(50, target_tokens // bd.MEAN_TOKENS), seed)
    from core.engine.tokens import count_tokens_batch

    total = sum(count_tokens_batch(texts))
    texts_path = os.path.join(workdir, f"texts_{name}.json")
    with open(texts_path, "w") as f:
        json.dump(texts, f)
    import reference_client

    fake.configure(**bd.NO_LIMITS)  # untimed: the server counts (and caches) every text's tokens once
    reference_client.embed(texts, base_url=fake.base_url, api_key=bd.API_KEY, dimensions=1, max_concurrency=2)
    cfg = {"tpm": tier["tpm"], "rpm": tier["rpm"], "window_seconds": window, **bd.LATENCY}
    ceiling_tps = tier["tpm"] / window
    best = total / ((total - tier["tpm"]) / ceiling_tps) / ceiling_tps if total > tier["tpm"] else None
    out: dict[str, Any] = {"tier": name, "limits": tier, "window_seconds": round(window, 3), "time_scale": round(scale, 2),
                           "sections": len(texts), "tokens": total, "ceiling_tokens_per_s": ceiling_tps,
                           "best_possible_fraction": best, "drivers": {}}
    bd.say(f"## tier {name}: {tier['rpm']:,} RPM / {tier['tpm']:,} TPM; 'minute' = {window:.2f} s "
           f"(x{scale:.1f}); {len(texts):,} sections, {total:,} tokens")
    for client in ("library", "async"):
        spec = {"mode": "run", "client": client, "base_url": fake.base_url, "texts_path": texts_path,
                "library": {}, "max_concurrency": 8, "vectors_path": os.path.join(workdir, f"v_{client}.npy")}
        child = bd.spawn(spec, workdir, fake, cfg)
        run = {**child, **bd.analyse_log(fake.stats(), child)}
        check = bd.check_vectors(spec["vectors_path"], texts)
        tps = total / child["wall_s"]
        fraction = tps / ceiling_tps
        # Steady state: the share of the best possible run (which starts with a full bucket); a
        # 100k-section corpus spends one minute's tokens from the first bucket, the rest at that share.
        steady = fraction / best if best else fraction
        online_hours = (CORPUS_TOKENS - tier["tpm"]) / (steady * tier["tpm"]) / 60.0 + 1 / 60
        out["drivers"][client] = {
            "tokens_per_s_scaled": round(tps), "fraction_of_ceiling": round(fraction, 3),
            "share_of_best_possible": round(steady, 3),
            "requests": run["requests"], "count_429": run["count_429"],
            "per_request_429": round(run["count_429"] / max(1, run["requests"]), 3),
            "failed": child["failed"], "vectors_ok": check["ok"], "wall_s": round(child["wall_s"], 2),
            "client_cpu_s": round(child["cpu_s"], 2), "load_before": child["load_before"],
            "corpus_100k_online_hours": round(online_hours, 2),
        }
        bd.say(f"  {client:8s}: {fraction:.3f} of the ceiling (best {best or 0:.3f}: {steady:.2f} of it), "
               f"{run['count_429']}/{run['requests']} answered 429, wall {child['wall_s']:.1f} s, "
               f"100k sections online: {online_hours:.2f} h")
    rounds = math.ceil(CORPUS_TOKENS / tier["queue"]) if tier["queue"] else None
    out["corpus_100k_batch_rounds"] = rounds
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":  # bench_defaults' child protocol
        return bd.child_main(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default=",".join(TIERS), help="comma-separated subset of " + ",".join(TIERS))
    parser.add_argument("--ceiling", type=float, default=300_000.0, help="scaled ceiling in tokens/s")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    chosen = [t.strip() for t in args.tiers.split(",") if t.strip()]
    from core.testing import FakeOpenAIServer

    results: dict[str, Any] = {
        "meta": {"date": datetime.date.today().isoformat(), "limits_read": LIMITS_READ, "machine": platform.platform(),
                 "cpus": os.cpu_count(), "load": bd.load(), "latency": "0.15 s + 4 us/token",
                 "corpus_100k_tokens": CORPUS_TOKENS},
        "tiers": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-tiers-") as workdir, FakeOpenAIServer() as fake:
        for name in chosen:
            results["tiers"][name] = run_tier(name, fake, workdir, args.ceiling, args.seed)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    bd.say("\n| tier | RPM / TPM | sync: of the best possible, 429/req | async: of the best possible, 429/req | 100k sections online (sync) | Batch API |")
    bd.say("|---|---|---|---|---|---|")
    for name, r in results["tiers"].items():
        s, a = r["drivers"]["library"], r["drivers"]["async"]
        batch = f"{r['corpus_100k_batch_rounds']} queue round(s), each ≤ 24 h" if r["corpus_100k_batch_rounds"] else "no Batch API"
        bd.say(f"| {name} | {r['limits']['rpm']:,} / {r['limits']['tpm']:,} | {s['share_of_best_possible']:.2f}, "
               f"{s['per_request_429']:.2f} | {a['share_of_best_possible']:.2f}, {a['per_request_429']:.2f} | "
               f"{s['corpus_100k_online_hours']:.1f} h | {batch} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
