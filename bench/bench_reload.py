"""Loads into a table that already has rows (issue #20): the CLI on the embedded default, the local
server without latency or rate limit, side by side in one run.

    python bench/bench_reload.py                  # 20,000 + 20,000 sections (~6 minutes on 2 cores)
    python bench/bench_reload.py --sections 5000  # smaller

For each `--rebuild-index` mode (`never`: every row goes into the HNSW index one by one, what the
CLI did before; `auto`: a load of at least a fifth of the table drops the index and builds it
again after): a new embedded data folder, `ingest A` (N sections into a new table: load, then one
index build) and `ingest B` (N other sections into that same, indexed table), each timed from the
command's start to its end; rows/s of B against rows/s of A is the measure (issue #20's target:
>= 0.45). Also the data folder's size against the table's (heap + indexes + TOAST), after each load.
Writes bench/results/reload.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import bench_defaults as bd  # noqa: E402

RESULTS = os.path.join(HERE, "results", "reload.json")


def folder_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total


def write_sections(path: str, first: int, n: int, seed: int) -> None:
    texts = bd.make_corpus(n, seed, mean_tokens=200)
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            title, _, content = text.partition("\n\n")
            f.write(json.dumps({"id": first + i, "title": title, "content": content or title}) + "\n")


def ingest(path: str, data_dir: str, base_url: str, mode: str) -> dict[str, Any]:
    env = dict(os.environ, OPENAI_API_KEY=bd.API_KEY, OPENAI_BASE_URL=base_url,
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "core", "ingest", path, "--data-dir", data_dir, "--json", "--quiet",
         "--rebuild-index", mode],
        env=env, capture_output=True, text=True, timeout=3600,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 1), "stored": report.get("stored"), "rows_per_s": round(report.get("stored", 0) / wall, 1),
            "notes": [line for line in done.stderr.splitlines() if "index" in line][-3:]}


def table_bytes(data_dir: str) -> int:
    from core.embedded import EmbeddedPostgres

    with EmbeddedPostgres(data_dir) as dsn:
        import psycopg

        with psycopg.connect(dsn) as conn:
            return int(conn.execute("select pg_total_relation_size('section_embeddings')").fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=20_000)
    parser.add_argument("--modes", default="never,auto")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    from core.testing import FakeOpenAIServer

    n = args.sections
    results: dict[str, Any] = {"meta": {"date": datetime.date.today().isoformat(), "machine": platform.platform(),
                                        "cpus": os.cpu_count(), "load_at_start": bd.load(), "sections": n}, "modes": {}}
    root = tempfile.mkdtemp(prefix="bench-reload-")
    try:
        a, b = os.path.join(root, "a.jsonl"), os.path.join(root, "b.jsonl")
        write_sections(a, 1, n, args.seed)
        write_sections(b, n + 1, n, args.seed + 1)
        with FakeOpenAIServer() as fake:
            fake.configure(**bd.NO_LIMITS)
            for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
                data_dir = os.path.join(root, f"pg-{mode}")
                first = ingest(a, data_dir, fake.base_url, mode)
                first["folder_bytes"], first["table_bytes"] = folder_bytes(data_dir), table_bytes(data_dir)
                second = ingest(b, data_dir, fake.base_url, mode)
                second["folder_bytes"], second["table_bytes"] = folder_bytes(data_dir), table_bytes(data_dir)
                ratio = second["rows_per_s"] / first["rows_per_s"]
                results["modes"][mode] = {"fresh": first, "existing": second, "existing_vs_fresh": round(ratio, 3)}
                bd.say(f"{mode:6s}: fresh {first['rows_per_s']:,.0f} rows/s ({first['wall_s']} s), into the indexed table "
                       f"{second['rows_per_s']:,.0f} rows/s ({second['wall_s']} s): {ratio:.2f}x; folder "
                       f"{second['folder_bytes'] / 1e6:,.0f} MB for a table of {second['table_bytes'] / 1e6:,.0f} MB")
                shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["meta"]["load_at_end"] = bd.load()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
