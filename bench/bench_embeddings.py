"""Benchmark of the embedding engine (`EmbeddingService`) against the local OpenAI-compatible server.

Not a test: it measures, prints one Markdown table per scenario plus a summary,
and writes every figure of the run to ``bench/results/embeddings.json``.

    python bench/bench_embeddings.py            # full run, ~4-6 minutes
    python bench/bench_embeddings.py --quick    # smaller sizes, under a minute

Scenarios (see bench/README.md for what is measured and how):

1. rate-bound: a TPM ceiling that binds (scaled "minute"), sustained % of it,
   429s and 400s from the server's own request log;
2. latency-bound: (a) tokens/s of the service at max_concurrency 8/16/32 vs the
   seed's design (one 2048-input request after another), with client/server CPU
   accounting and a cProfile breakdown of client CPU; (b) 1000 x 300-token
   sections end to end, default settings and a tuned max_tokens_per_request;
3. faults: 500/503/hang/short answers; every returned vector is compared with
   the server's `expected_embedding` of its text;
4. client CPU and peak memory per 10,000 vectors for output list/array/numpy,
   each in a fresh subprocess.

Everything runs on 127.0.0.1; nothing touches the internet. The machine's load
average is recorded next to every figure: client and server share the CPU.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import heapq
import json
import os
import platform
import pstats
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
# The SDK must never send 127.0.0.1 traffic through a proxy from the environment.
os.environ["NO_PROXY"] = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")]))
os.environ["no_proxy"] = os.environ["NO_PROXY"]

import numpy as np  # noqa: E402
from openai import OpenAI  # noqa: E402

from core.embedding_service import EmbeddingService  # noqa: E402
from core.engine.packing import pack_requests  # noqa: E402
from core.testing.openai_server import FakeOpenAIServer, expected_embeddings  # noqa: E402
from core.engine.tokens import count_tokens_batch, get_encoding  # noqa: E402

API_KEY = "sk-bench-not-a-real-key"
DIMS = 1536
LATENCY_BASE = 0.15
LATENCY_PER_TOKEN = 4e-6
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "embeddings.json")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def load() -> str:
    """The 1/5/15-minute load averages, as `uptime` shows them."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid`, from /proc."""
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    except OSError:
        return float("nan")


class Meter:
    """Wall time, this process's CPU (all threads) and the server process's CPU over a block."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid

    def __enter__(self) -> Meter:
        self.load_before = load()
        self.s0 = proc_cpu(self.pid)
        self.c0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.client_cpu = time.process_time() - self.c0
        self.server_cpu = proc_cpu(self.pid) - self.s0
        self.load_after = load()

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall, 3),
            "client_cpu_s": round(self.client_cpu, 3),
            "server_cpu_s": round(self.server_cpu, 3),
            "cpu_busy_of_2_cores": round((self.client_cpu + self.server_cpu) / (2 * self.wall), 3),
            "load_before": self.load_before,
            "load_after": self.load_after,
        }


_SYLLABLES = (
    "ka lo mi ren tor ash vel qui bra sen dul fo ne pri zan ox el um tra gi ho wes cal dre ix "
    "nor pa lu ster mo bel vin ca ro tes an gul pe dor fin ha ju sa ki mar ol"
).split()
_COMMON = (
    "the of and to in is for on with as by at from that this are be or an it was which "
    "data system model section value table user time process index query vector store"
).split()


def make_vocabulary(seed: int) -> list[str]:
    """Pseudo-words from syllables plus common English glue words, a few with punctuation."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    words += _COMMON * 40
    words += [w + rng.choice((".", ",", ";", ":")) for w in rng.sample(words, 600)]
    words += [str(rng.randint(0, 9999)) for _ in range(200)]
    return words


def make_sections(n: int, target_tokens: int, seed: int, *, spread: float = 0.15) -> list[str]:
    """`n` distinct sections of about `target_tokens` cl100k tokens (+-`spread`), seeded."""
    vocab = make_vocabulary(seed)
    rng = random.Random(seed * 7919 + target_tokens)
    sample = " ".join(rng.choices(vocab, k=4000))
    tokens_per_word = len(get_encoding().encode_ordinary(sample)) / 4000
    words = target_tokens / tokens_per_word
    sections = []
    for i in range(n):
        k = max(3, round(words * rng.uniform(1 - spread, 1 + spread)))
        text = " ".join(rng.choices(vocab, k=k))
        sections.append(f"{text[:1].upper()}{text[1:]}. ({i})")
    return sections


def service(fake: FakeOpenAIServer, **kwargs: Any) -> EmbeddingService:
    return EmbeddingService(api_key=API_KEY, base_url=fake.base_url, **kwargs)


def warm_server_counts(fake: FakeOpenAIServer, texts: Sequence[str], counts: Sequence[int] | None = None,
                       chunk: int = 2048) -> float:
    """Untimed pass: make the server count (and cache) every text's tokens.

    Sent with ``dimensions=1`` and no latency so that answering costs next to nothing:
    the real API counts on its own hardware, not on the 2 cores we share with it.
    """
    saved = fake.get_config()
    fake.configure(latency_base=0.0, latency_per_token=0.0)
    t0 = time.perf_counter()
    client = OpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=2)
    if counts is None:
        counts = count_tokens_batch(list(texts))
    for request in pack_requests(range(len(texts)), counts, max_inputs=chunk, max_tokens=300_000):
        client.embeddings.create(model="text-embedding-3-small", input=[texts[i] for i in request],
                                 dimensions=1, encoding_format="base64")
    client.close()
    fake.configure(latency_base=saved["latency_base"], latency_per_token=saved["latency_per_token"])
    return time.perf_counter() - t0


def check_vectors(texts: Sequence[str], vectors: dict[int, Any], dims: int = DIMS) -> tuple[int, int]:
    """(missing, wrong): every input must have exactly the server's expected vector for its text."""
    missing = sum(1 for i in range(len(texts)) if i not in vectors)
    wrong = 0
    for start in range(0, len(texts), 2000):
        idx = [i for i in range(start, min(start + 2000, len(texts))) if i in vectors]
        if not idx:
            continue
        want = expected_embeddings([texts[i] for i in idx], dims)
        got = np.frombuffer(b"".join(np.asarray(vectors[i], dtype=np.float32).tobytes() for i in idx),
                            dtype=np.float32)
        if got.size != want.size:
            wrong += len(idx)
            continue
        got = got.reshape(len(idx), dims)
        wrong += int(np.count_nonzero(~np.all(got == want, axis=1)))
    return missing, wrong


def latency_bound_seconds(request_tokens: Sequence[int], concurrency: int, *, probe: bool) -> float:
    """Wall time if only server latency counted (free CPU): list-scheduling of the requests
    over `concurrency` slots, the first alone when the service probes."""
    lat = [LATENCY_BASE + LATENCY_PER_TOKEN * t for t in request_tokens]
    start = 0.0
    if probe and concurrency > 1 and len(lat) > 1:
        start, lat = lat[0], lat[1:]
    slots = [start] * min(concurrency, len(lat))
    heapq.heapify(slots)
    for x in lat:
        heapq.heappush(slots, heapq.heappop(slots) + x)
    return max(slots) if slots else start


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def say(text: str = "") -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------
# 1. Rate-bound
# ---------------------------------------------------------------------------------------


def steady_state(log: list[list[Any]], tpm: float, window: float) -> dict[str, Any]:
    """Sustained acceptance from the server's log, excluding the first window (the full-bucket burst).

    Let t0 be the first request's arrival. Over the accepted (200) requests that arrived at or
    after t0 + window, with a = the first such arrival and b = the last: tokens of the requests
    arriving in (a, b] divided by (b - a), against the ceiling tpm / window tokens/s.
    """
    log = sorted(log, key=lambda e: e[0])
    ok = [e for e in log if e[2] == 200]
    t0 = log[0][0]
    steady = [e for e in ok if e[0] >= t0 + window]
    ceiling = tpm / window
    out: dict[str, Any] = {"ceiling_tokens_per_s": ceiling}
    if len(steady) >= 2:
        a, b = steady[0][0], steady[-1][0]
        tokens = sum(e[3] for e in steady[1:])
        rate = tokens / (b - a)
        out.update(steady_seconds=round(b - a, 3), steady_tokens=tokens, steady_tokens_per_s=round(rate),
                   steady_tokens_per_window=round(rate * window), steady_pct_of_ceiling=round(100 * rate / ceiling, 2))
    # Whole run: everything accepted vs the most the server could accept between the first and
    # the last admitted request (a full bucket plus the refill over that time).
    first, last = ok[0][0], ok[-1][0]
    total = sum(e[3] for e in ok)
    out["whole_run_pct_of_max"] = round(100 * total / (tpm + ceiling * (last - first)), 2)
    return out


def scenario_rate(quick: bool, seed: int) -> dict[str, Any]:
    n = 1000 if quick else 10_000
    window = 2.0 if quick else 6.0
    tpm = 100_000 if quick else 360_000
    say(f"## 1. Rate-bound: {n:,} sections of ~300 tokens, TPM {tpm:,} per {window:g} s window")
    texts = make_sections(n, 300, seed)
    counts = count_tokens_batch(texts)
    total_tokens = sum(counts)
    variants = [("max_batch_size=100 (~30k tokens/request)", {"max_batch_size": 100})]
    if not quick:
        variants.append(("default packing (2048 inputs / 300k tokens)", {}))
    rows, results = [], []
    for label, kwargs in variants:
        with FakeOpenAIServer(tpm=tpm, window_seconds=window, latency_base=LATENCY_BASE,
                              latency_per_token=LATENCY_PER_TOKEN, seed=seed) as fake:
            svc = service(fake, **kwargs)
            with Meter(fake.pid) as m:
                batch = svc.embed(texts)
            svc.close()
            stats = fake.stats()
        missing, wrong = check_vectors(texts, batch.vectors)
        by_status = stats["by_status"]
        n_req = stats["requests"]
        res = {
            "variant": label, "service_kwargs": kwargs, "sections": n, "tokens": total_tokens,
            "tpm_per_window": tpm, "window_s": window, "max_concurrency": svc.max_concurrency,
            "requests": n_req, "by_status": by_status,
            "pct_429": round(100 * by_status.get("429", 0) / n_req, 2), "count_400": by_status.get("400", 0),
            "client_requests": batch.requests, "client_retries": batch.retries,
            "client_rate_limited": batch.rate_limited, "missing": missing, "wrong": wrong,
            **steady_state(stats["log"], tpm, window), **m.as_dict(),
        }
        res["ideal_wall_s"] = round((total_tokens - tpm) / (tpm / window), 2)
        results.append(res)
        rows.append([label, n_req, res.get("steady_pct_of_ceiling", "n/a"), res["whole_run_pct_of_max"],
                     res["pct_429"], res["count_400"], res["wall_s"], res["ideal_wall_s"],
                     f"{missing}/{wrong}", m.load_before])
    say(table(["variant", "requests", "steady % of TPM", "whole-run % of max", "% 429", "400s",
               "wall s", "ideal s", "missing/wrong", "load before"], rows))
    say(f"({total_tokens:,} tokens, mean {total_tokens / n:.0f}/section; ceiling {tpm / window:,.0f} tokens/s; "
        "ideal = (tokens - bucket) / refill rate)")
    say()
    return {"runs": results}


# ---------------------------------------------------------------------------------------
# 2. Latency-bound
# ---------------------------------------------------------------------------------------


def seed_design(fake: FakeOpenAIServer, texts: Sequence[str]) -> list[list[float]]:
    """The seed's design: plain SDK calls of 2048 inputs, one after another (SDK defaults:
    base64 on the wire, decoded to Python float lists)."""
    client = OpenAI(api_key=API_KEY, base_url=fake.base_url)
    out: list[list[float]] = []
    for i in range(0, len(texts), 2048):
        response = client.embeddings.create(model="text-embedding-3-small", input=list(texts[i : i + 2048]))
        out.extend(item.embedding for item in response.data)
    client.close()
    return out


def profile_client(fake: FakeOpenAIServer, texts: Sequence[str]) -> dict[str, Any]:
    """Where client time goes: one sequential embed() (max_concurrency=1, so every call runs in
    this thread) under cProfile (wall clock), server latency off. The parts are disjoint subtrees
    of embed(); time blocked in the HTTP exchange includes the server's own work (it shares our
    2 cores). cProfile inflates Python-heavy parts (SDK models), see `client_cpu_parts` for
    unprofiled figures."""
    saved = fake.get_config()
    fake.configure(latency_base=0.0, latency_per_token=0.0)
    svc = service(fake, max_concurrency=1, probe_limits=False, max_tokens_per_request=40_000)
    svc.embed(texts[:10])  # imports and connection out of the profile
    prof = cProfile.Profile()
    c0, t0 = time.process_time(), time.perf_counter()
    prof.enable()
    svc.embed(texts)
    prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    svc.close()
    fake.configure(latency_base=saved["latency_base"], latency_per_token=saved["latency_per_token"])
    st = pstats.Stats(prof)

    def cum(file_part: str, name: str) -> float:
        return sum(v[3] for (file, _, fn), v in st.stats.items()  # type: ignore[attr-defined]
                   if file.replace(os.sep, "/").endswith(file_part) and fn == name)

    parts = {
        "token counting (core.engine.tokens.count_tokens_batch)": cum("core/tokens.py", "count_tokens_batch"),
        "SDK request building (openai maybe_transform)": cum("openai/_utils/_transform.py", "maybe_transform"),
        "HTTP exchange incl. server work (httpx Client.send)": cum("_client.py", "send"),
        "JSON decode of responses (json.loads)": cum("json/__init__.py", "loads"),
        "SDK response models net of JSON (openai _response._parse)": cum("openai/_response.py", "_parse")
        - cum("json/__init__.py", "loads"),
        "base64 -> float32 + checks (EmbeddingService._decode)": cum("core/embedding_service.py", "_decode"),
    }
    total = cum("core/embedding_service.py", "embed")
    parts["other (dedup, packing, limiter, SDK glue)"] = max(0.0, total - sum(parts.values()))
    tokens = sum(count_tokens_batch(list(texts)))
    return {
        "sections": len(texts), "tokens": tokens, "wall_s": round(wall, 3), "client_cpu_s": round(cpu, 3),
        "profile_total_s": round(total, 3),
        "parts_s": {k: round(v, 3) for k, v in parts.items()},
        "parts_pct": {k: round(100 * v / total, 1) for k, v in parts.items()},
    }


def client_cpu_parts(texts: Sequence[str]) -> dict[str, Any]:
    """Unprofiled CPU of each client step, per 2048-input request of ~100-token sections and
    for the whole corpus's token counting (best of 3, time.process_time of this process)."""
    from openai._models import construct_type
    from openai._utils import maybe_transform
    from openai.types import CreateEmbeddingResponse, embedding_create_params

    from core.testing import openai_server as server_impl

    enc = get_encoding()

    def cpu(fn: Callable[[], Any], repeat: int = 3) -> float:
        best = float("inf")
        for _ in range(repeat):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        return best

    def cpu_and_wall(fn: Callable[[], Any], repeat: int = 2) -> tuple[float, float]:
        runs = []
        for _ in range(repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
        w, c = min(runs)
        return round(c, 3), round(w, 3)

    texts = list(texts)
    tokens = sum(count_tokens_batch(texts))
    batch_cpu, batch_wall = cpu_and_wall(lambda: count_tokens_batch(texts))
    loop_cpu, loop_wall = cpu_and_wall(lambda: [len(enc.encode_ordinary(t)) for t in texts])
    counting = {"tokens": tokens, "count_tokens_batch_cpu_s": batch_cpu, "count_tokens_batch_wall_s": batch_wall,
                "plain_loop_cpu_s": loop_cpu, "plain_loop_wall_s": loop_wall}
    sub = texts[:2048]
    rows = server_impl._base64_rows(server_impl._embed(sub, DIMS, DIMS))
    body = (b'{"object":"list","data":[' + b",".join(
        b'{"object":"embedding","index":%d,"embedding":"%s"}' % (i, bytes(r)) for i, r in enumerate(rows))
        + b'],"model":"text-embedding-3-small","usage":{"prompt_tokens":1,"total_tokens":1}}')
    parsed = json.loads(body)
    response = construct_type(type_=CreateEmbeddingResponse, value=parsed)
    svc = EmbeddingService(api_key=API_KEY, base_url="http://127.0.0.1:9/v1")
    request = {"model": "text-embedding-3-small", "input": sub, "encoding_format": "base64"}
    sub_tokens = sum(count_tokens_batch(sub))
    per_request = {
        "token counting, core.engine.tokens.count_tokens_batch": cpu(lambda: count_tokens_batch(sub)),
        "token counting, plain encode_ordinary loop (for comparison)": cpu(lambda: [len(enc.encode_ordinary(t)) for t in sub]),
        "SDK request building (maybe_transform)": cpu(lambda: maybe_transform(request, embedding_create_params.EmbeddingCreateParams)),
        "JSON encode of the request": cpu(lambda: json.dumps(request)),
        "JSON decode of the response": cpu(lambda: json.loads(body)),
        "SDK response models (construct_type)": cpu(lambda: construct_type(type_=CreateEmbeddingResponse, value=json.loads(body))) - cpu(lambda: json.loads(body)),
        "base64 -> float32 (EmbeddingService._decode)": cpu(lambda: svc._decode(response, len(sub))),
        "output='list' conversion (array.tolist)": cpu(lambda: [v.tolist() for v in svc._decode(response, len(sub))]) - cpu(lambda: svc._decode(response, len(sub))),
    }
    return {"counting": counting, "per_request_inputs": len(sub), "per_request_tokens": sub_tokens,
            "response_bytes": len(body), "per_request_cpu_s": {k: round(max(v, 0.0), 4) for k, v in per_request.items()}}


def scenario_latency(quick: bool, seed: int) -> dict[str, Any]:
    seed_requests = 3 if quick else 20
    n = 2048 * seed_requests
    say(f"## 2a. Latency-bound: {n:,} sections of ~100 tokens, latency {LATENCY_BASE} s + "
        f"{LATENCY_PER_TOKEN * 1e6:g} us/token, no rate limit")
    texts = make_sections(n, 100, seed + 1)
    counts = count_tokens_batch(texts)
    total_tokens = sum(counts)
    seed_tokens = [sum(counts[i:i + 2048]) for i in range(0, n, 2048)]
    assert max(seed_tokens) <= 300_000, "a seed request would exceed 300k tokens"
    out: dict[str, Any] = {"sections": n, "tokens": total_tokens, "max_tokens_per_section": max(counts)}
    rows = []
    with FakeOpenAIServer(seed=seed) as fake:
        out["server_warm_s"] = round(warm_server_counts(fake, texts, counts), 2)
        fake.configure(latency_base=LATENCY_BASE, latency_per_token=LATENCY_PER_TOKEN)

        with Meter(fake.pid) as m:
            vectors = seed_design(fake, texts)
        assert len(vectors) == n
        del vectors
        seed_tps = total_tokens / m.wall
        seed_bound = latency_bound_seconds(seed_tokens, 1, probe=False)
        out["seed"] = {"design": "sequential SDK loop, 2048 inputs/request", "requests": seed_requests,
                       "tokens_per_s": round(seed_tps), "latency_bound_s": round(seed_bound, 3), **m.as_dict()}
        rows.append(["seed: SDK loop, 2048 inputs, sequential", 1, seed_requests, round(seed_tps), 1.0,
                     m.wall, seed_bound, 1.0, m.client_cpu, m.client_cpu / m.wall, "", m.server_cpu, m.load_before])

        configs = [("default packing (2048 inputs)", 8, {})]
        configs += [("max_tokens_per_request=40,000", c, {"max_tokens_per_request": 40_000}) for c in (8, 16, 32)]
        out["service"] = []
        for label, conc, kwargs in configs:
            svc = service(fake, max_concurrency=conc, **kwargs)
            gc.collect()
            with Meter(fake.pid) as m:
                batch = svc.embed(texts)
            svc.close()
            assert len(batch.vectors) == n, batch.errors and next(iter(batch.errors.values()))
            del batch
            plan = pack_requests(range(n), counts, max_inputs=2048,
                                 max_tokens=kwargs.get("max_tokens_per_request", 300_000))
            bound = latency_bound_seconds([sum(counts[i] for i in r) for r in plan], conc, probe=True)
            tps = total_tokens / m.wall
            res = {"packing": label, "max_concurrency": conc, "requests": len(plan), "tokens_per_s": round(tps),
                   "vs_seed": round(tps / seed_tps, 2), "latency_bound_s": round(bound, 3),
                   "latency_bound_vs_seed": round(seed_bound / bound, 2),
                   "client_cores_used": round(m.client_cpu / m.wall, 2),
                   "client_cpu_bound_vs_seed": round(total_tokens / m.client_cpu / seed_tps, 2), **m.as_dict()}
            out["service"].append(res)
            rows.append([f"service: {label}", conc, len(plan), round(tps), res["vs_seed"], m.wall, bound,
                         res["latency_bound_vs_seed"], m.client_cpu, res["client_cores_used"],
                         res["client_cpu_bound_vs_seed"], m.server_cpu, m.load_before])
        say(table(["design", "concurrency", "requests", "tokens/s", "x seed", "wall s", "latency-only s",
                   "latency-only x seed", "client CPU s", "client cores used", "client-CPU bound x seed", "server CPU s",
                   "load before"], rows))
        say(f"({total_tokens:,} tokens; the server's token counts were warmed by one untimed pass "
            f"({out['server_warm_s']} s) before the timed runs; service runs call embed() (float32 arrays); "
            "latency-only = the same requests scheduled as if CPU were free; client-CPU bound = tokens / client CPU s, "
            "the rate if the client had one whole core and the server cost nothing, over the seed's rate)")
        say()

        prof_n = 2048 * (1 if quick else 4)
        out["profile"] = prof = profile_client(fake, texts[:prof_n])
    say(f"Client time (cProfile, wall clock; one sequential embed() of {prof_n:,} sections / {prof['tokens']:,} "
        f"tokens in 40k-token requests, server latency off; profiled run {prof['wall_s']} s wall, "
        f"{prof['client_cpu_s']} s client CPU):")
    say(table(["part", "s", "%"], [[k, v, prof["parts_pct"][k]] for k, v in prof["parts_s"].items()]))
    say()
    out["cpu_parts"] = parts = client_cpu_parts(texts[: 2048 * (1 if quick else 4)])
    c = parts["counting"]
    say(f"Client CPU per 2048-input request ({parts['per_request_tokens']:,} tokens, {parts['response_bytes'] / 1e6:.1f} MB "
        "response), unprofiled, best of 3:")
    say(table(["step", "CPU s", "us per input"],
              [[k, v, v / parts["per_request_inputs"] * 1e6] for k, v in parts["per_request_cpu_s"].items()]))
    say(f"Token counting of {c['tokens']:,} tokens: core.engine.tokens.count_tokens_batch {c['count_tokens_batch_cpu_s']} s CPU / "
        f"{c['count_tokens_batch_wall_s']} s wall vs a plain one-thread loop of encode_ordinary "
        f"{c['plain_loop_cpu_s']} s CPU / {c['plain_loop_wall_s']} s wall.")
    say()
    best = max(out["service"], key=lambda r: r["vs_seed"])
    out["best"] = {k: best[k] for k in ("packing", "max_concurrency", "vs_seed", "latency_bound_vs_seed",
                                        "client_cores_used", "client_cpu_bound_vs_seed")}
    return out


def scenario_small_job(quick: bool, seed: int) -> dict[str, Any]:
    n = 1000
    say(f"## 2b. {n:,} sections x ~300 tokens end to end (batch_generate_embeddings, fresh service each run)")
    texts = make_sections(n, 300, seed + 2, spread=0.05)
    counts = count_tokens_batch(texts)
    repeats = 1 if quick else 3
    rows, runs = [], []
    with FakeOpenAIServer(seed=seed) as fake:
        warm_server_counts(fake, texts, counts)
        fake.configure(latency_base=LATENCY_BASE, latency_per_token=LATENCY_PER_TOKEN)
        for label, kwargs in (("defaults", {}), ("max_tokens_per_request=40,000", {"max_tokens_per_request": 40_000})):
            walls, loads = [], []
            for _ in range(repeats):
                svc = service(fake, **kwargs)
                with Meter(fake.pid) as m:
                    result = svc.batch_generate_embeddings(texts)
                svc.close()
                assert len(result["embeddings"]) == n and not result["failed_indices"]
                walls.append(m.wall)
                loads.append(m.load_before)
            plan = pack_requests(range(n), counts, max_inputs=2048, max_tokens=kwargs.get("max_tokens_per_request", 300_000))
            bound = latency_bound_seconds([sum(counts[i] for i in r) for r in plan], 8, probe=True)
            res = {"settings": label, "requests": len(plan), "median_s": round(statistics.median(walls), 3),
                   "runs_s": [round(w, 3) for w in walls], "latency_bound_s": round(bound, 3), "loads": loads}
            runs.append(res)
            rows.append([label, len(plan), res["median_s"], ", ".join(f"{w:.2f}" for w in walls), bound, loads[0]])
    say(table(["settings", "requests", "median s", "runs s", "latency-only s", "load before"], rows))
    say(f"({sum(counts):,} tokens; server token counts warmed; default max_concurrency=8, probe on)")
    say()
    return {"sections": n, "tokens": sum(counts), "runs": runs}


# ---------------------------------------------------------------------------------------
# 3. Faults
# ---------------------------------------------------------------------------------------


def scenario_faults(quick: bool, seed: int) -> dict[str, Any]:
    n = 500 if quick else 3000
    say(f"## 3. Faults: {n:,} sections of ~300 tokens, client timeout 1 s, hang_seconds 3, "
        f"latency {LATENCY_BASE} s + {LATENCY_PER_TOKEN * 1e6:g} us/token")
    texts = make_sections(n, 300, seed + 3)
    variants = [
        ("10% 500, 10% 503, 5% hang, 10% short", {"500": 0.10, "503": 0.10, "hang": 0.05, "short": 0.10}),
        ("same + 5% extra + 5% bad_index", {"500": 0.10, "503": 0.10, "hang": 0.05, "short": 0.10,
                                              "extra": 0.05, "bad_index": 0.05}),
    ]
    rows, runs = [], []
    for label, rates in variants[:1] if quick else variants:
        with FakeOpenAIServer(fault_rates=rates, hang_seconds=3.0, latency_base=LATENCY_BASE,
                              latency_per_token=LATENCY_PER_TOKEN, seed=seed) as fake:
            svc = service(fake, timeout=1.0, max_tokens_per_request=15_000)
            with Meter(fake.pid) as m:
                batch = svc.embed(texts)
            svc.close()
            stats = fake.stats()
        missing, wrong = check_vectors(texts, batch.vectors)
        res = {"faults": label, "fault_rates": rates, "max_tokens_per_request": 15_000, "timeout_s": 1.0,
               "client_requests": batch.requests, "client_retries": batch.retries,
               "server_faults": stats["faults"], "server_by_status": stats["by_status"],
               "failed_inputs": len(batch.errors), "missing": missing, "wrong": wrong, **m.as_dict()}
        runs.append(res)
        faults = ", ".join(f"{k} {v}" for k, v in sorted(stats["faults"].items()))
        rows.append([label, batch.requests, batch.retries, faults, m.wall, missing, wrong, m.load_before])
    say(table(["faults", "requests", "retries", "faults served", "wall s", "missing", "wrong", "load before"], rows))
    say("(max_tokens_per_request=15,000 so a request's latency (~0.21 s) stays well under the 1 s timeout; "
        "every vector compared exactly with expected_embedding(text))")
    say()
    return {"sections": n, "runs": runs}


# ---------------------------------------------------------------------------------------
# 4. Client CPU and memory per 10,000 vectors (each variant in a fresh subprocess)
# ---------------------------------------------------------------------------------------


def proc_status_kib(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS: now, VmHWM: peak of this process image)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(output: str, base_url: str, n: int, seed: int, use_tracemalloc: bool) -> dict[str, Any]:
    """Runs in a fresh process: embed `n` ~100-token sections with `output`, report CPU and memory.

    Peak RSS is VmHWM, reset just before the call when the kernel allows it: ru_maxrss would
    carry the parent's peak across fork+exec.
    """
    import tracemalloc

    texts = make_sections(n, 100, seed + 4)
    svc = EmbeddingService(api_key=API_KEY, base_url=base_url, output=output)  # type: ignore[arg-type]
    svc.batch_generate_embeddings(texts[:3])  # SDK imports, numpy, connection: out of the figures
    c0 = time.process_time()
    count_tokens_batch(texts)
    tokenize_cpu = time.process_time() - c0
    gc.collect()
    if use_tracemalloc:
        tracemalloc.start()
    rss0 = proc_status_kib("VmRSS")
    peak_reset = reset_peak_rss()
    peak0 = proc_status_kib("VmHWM")
    # What batch_generate_embeddings does, timed in two parts: embed() (count, pack, send, decode
    # to float32 arrays), then _format() (the requested output type).
    c0, t0 = time.process_time(), time.perf_counter()
    svc._check_strict(texts)
    batch = svc.embed(texts)
    c1 = time.process_time()
    indices = batch.indices
    result = {"embeddings": svc._format([batch.vectors[i] for i in indices]), "indices": indices,
              "failed_indices": batch.failed_indices, "total_tokens": batch.total_tokens}
    del batch
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    out: dict[str, Any] = {"output": output, "vectors": len(result["embeddings"]), "cpu_s": round(cpu, 3),
                           "format_cpu_s": round(time.process_time() - c1, 3), "wall_s": round(wall, 3),
                           "tokenize_cpu_s": round(tokenize_cpu, 3)}
    gc.collect()
    if use_tracemalloc:
        current, peak = tracemalloc.get_traced_memory()
        out.update(traced_retained_bytes=current, traced_peak_bytes=peak)
        tracemalloc.stop()
    else:
        peak1 = proc_status_kib("VmHWM")
        out.update(rss_before_kib=rss0, peak_rss_before_kib=peak0, peak_rss_kib=peak1, peak_reset=peak_reset,
                   peak_rss_growth_kib=peak1 - max(peak0, rss0), rss_after_kib=proc_status_kib("VmRSS"),
                   ru_maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    embeddings = result["embeddings"]
    if output == "list":
        first = embeddings[0]
        out["retained_bytes_per_vector_model"] = sys.getsizeof(first) + sum(sys.getsizeof(x) for x in first)
    elif output == "array":
        out["retained_bytes_per_vector_model"] = sys.getsizeof(embeddings[0]) + 8  # + the list slot
    else:
        out["retained_bytes_per_vector_model"] = embeddings.nbytes / len(embeddings)
    return out


def scenario_memory(quick: bool, seed: int) -> dict[str, Any]:
    n = 1000 if quick else 10_000
    say(f"## 4. Client CPU and memory per 10,000 vectors ({DIMS} dims), {n:,} sections of ~100 tokens, "
        "service defaults (2048 inputs/request, concurrency 8), one fresh subprocess per figure")
    texts = make_sections(n, 100, seed + 4)
    runs = []
    with FakeOpenAIServer(seed=seed) as fake:
        warm_server_counts(fake, texts)
        for output in ("list", "array", "numpy"):
            res: dict[str, Any] = {}
            for traced in (False,) if quick else (False, True):
                cmd = [sys.executable, os.path.abspath(__file__), "--child", output, "--base-url", fake.base_url,
                       "--n", str(n), "--seed", str(seed)] + (["--tracemalloc"] if traced else [])
                load_before = load()
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
                child = json.loads(proc.stdout.strip().splitlines()[-1])
                if traced:  # tracemalloc slows the child: keep only its memory figures
                    res.update({k: v for k, v in child.items() if k.startswith("traced_")})
                else:
                    res.update(child, load_before=load_before)
            runs.append(res)
    scale = 10_000 / n
    rows = []
    for r in runs:
        rows.append([
            r["output"], r["cpu_s"] * scale, r["tokenize_cpu_s"] * scale, r["format_cpu_s"] * scale, r["wall_s"] * scale,
            r["peak_rss_kib"] / 1024, r["peak_rss_growth_kib"] / 1024 * scale,
            r["traced_peak_bytes"] / 2**20 * scale if "traced_peak_bytes" in r else "n/a",
            r["traced_retained_bytes"] / r["vectors"] if "traced_retained_bytes" in r else "n/a",
            r["retained_bytes_per_vector_model"], r["load_before"],
        ])
    say(table(["output", "client CPU s /10k", "tokenizing s (same texts, separately)", "formatting s (in the total)",
               "wall s /10k", "peak RSS MiB",
               "peak RSS growth MiB /10k", "traced peak MiB /10k", "retained B/vector (tracemalloc)",
               "B/vector (sizeof model)", "load before"], rows))
    say("(CPU = time.process_time() of the child (all its threads, user + system) around batch_generate_embeddings' "
        "steps: embed() then _format() for the output type, formatting timed on its own; tokenizing = "
        "count_tokens_batch of the same texts timed before, for scale; "
        "peak RSS = the child's VmHWM, reset to the current RSS just before the call (ru_maxrss would carry the "
        "parent's peak across fork+exec); growth = that peak minus RSS just before the call; traced figures from a "
        "second child under tracemalloc (Python allocations: peak during the call, retained after it)"
        + ("; --quick: no tracemalloc child)" if quick else ")"))
    say()
    return {"sections": n, "runs": runs}


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    r1 = results["rate_bound"]["runs"][0]
    items.append({"target": "1. sustained >= 95% of TPM ceiling (steady state)", "measured": f"{r1.get('steady_pct_of_ceiling')}%",
                  "met": (r1.get("steady_pct_of_ceiling") or 0) >= 95})
    items.append({"target": "1. <= 10% of requests answered 429", "measured": f"{r1['pct_429']}%", "met": r1["pct_429"] <= 10})
    items.append({"target": "1. no 400", "measured": str(r1["count_400"]), "met": r1["count_400"] == 0})
    best = results["latency_bound"]["best"]
    items.append({"target": "2a. >= 10x the seed's tokens/s", "measured":
                  f"{best['vs_seed']}x ({best['packing']}, concurrency {best['max_concurrency']}); CPU-bound: the client "
                  f"used {best['client_cores_used']} cores and its CPU alone caps it at {best['client_cpu_bound_vs_seed']}x; "
                  f"the same requests with free CPU: {best['latency_bound_vs_seed']}x", "met": best["vs_seed"] >= 10})
    small = {r["settings"]: r for r in results["small_job"]["runs"]}
    tuned = small["max_tokens_per_request=40,000"]
    default = small["defaults"]
    items.append({"target": "2b. 1000 x 300 tokens well under 2 s (tuned)", "measured": f"{tuned['median_s']} s (defaults: {default['median_s']} s)",
                  "met": tuned["median_s"] < 2})
    bad = sum(r["missing"] + r["wrong"] for r in results["faults"]["runs"])
    items.append({"target": "3. every vector present and correct under faults", "measured": f"{bad} missing/wrong",
                  "met": bad == 0})
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (< 1 minute)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated subset: rate,latency,small,faults,memory")
    parser.add_argument("--out", default=RESULTS, help="where to write the JSON results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(memory_child(args.child, args.base_url, args.n, args.seed, args.tracemalloc)))
        return 0

    get_encoding()
    started = time.perf_counter()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "seed": args.seed, "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_at_start": load(),
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT).stdout.strip(),
        "latency": f"{LATENCY_BASE} s + {LATENCY_PER_TOKEN * 1e6:g} us/token",
    }
    say(f"# Embedding engine benchmark ({'quick' if args.quick else 'full'}) — {meta['date']}, "
        f"load {meta['load_at_start']}, {meta['cpus']} CPUs, Python {meta['python']}, commit {meta['git_commit']}")
    say()
    only = set((args.only or "rate,latency,small,faults,memory").split(","))
    results: dict[str, Any] = {"meta": meta}
    steps = [("rate", "rate_bound", scenario_rate), ("latency", "latency_bound", scenario_latency),
             ("small", "small_job", scenario_small_job), ("faults", "faults", scenario_faults),
             ("memory", "memory", scenario_memory)]
    for key, name, fn in steps:
        if key in only:
            t0 = time.perf_counter()
            results[name] = fn(args.quick, args.seed)
            results[name]["scenario_wall_s"] = round(time.perf_counter() - t0, 1)
    meta["load_at_end"] = load()
    meta["total_wall_s"] = round(time.perf_counter() - started, 1)
    if only >= {"rate", "latency", "small", "faults"}:
        results["summary"] = items = summary(results)
        say("## Summary")
        say(table(["target", "measured", "met"], [[i["target"], i["measured"], "yes" if i["met"] else "NO"] for i in items]))
        say()
    say(f"Total {meta['total_wall_s']} s; load at start {meta['load_at_start']}, at end {meta['load_at_end']}.")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    say(f"Results written to {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
