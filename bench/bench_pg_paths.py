"""Measure PostgresStore's binary upsert path against three others (bench/pg_write_paths.py) on a local PostgreSQL 18 + pgvector (core.embedded.server backend).

Writes N rows of D float32 dimensions through each path into an empty table
(new rows), then the same ids again with new vectors (existing rows, so every
row takes the ``on conflict do update`` branch), and prints rows/s. The table
has no HNSW index, as in a bulk load (index maintenance costs every path the
same and would hide the differences); ``--with-index`` measures with it.

    python bench/bench_pg_paths.py [--rows 20000] [--dimensions 1536] [--chunk 500] [--repeat 3]

Needs the ``embedded`` extra. The server's data folder lives under
``tempfile.mkdtemp()`` and is deleted at the end.
"""

from __future__ import annotations

import argparse
import array
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from core.stores.postgres import PostgresStore  # noqa: E402
from core.engine.rows import Row  # noqa: E402
from pg_write_paths import PATHS, PathStore  # noqa: E402


def make_rows(n: int, dimensions: int, seed: int) -> list[Row]:
    """`n` rows with random unit float32 vectors."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dimensions), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stamp = "2026-01-01T00:00:00+00:00"
    return [
        Row(
            section_id=i + 1,
            title=f"Section {i + 1}",
            embedding=array.array("f", vectors[i].tobytes()),
            model="text-embedding-3-small",
            content_hash=f"{seed:02x}{i:062x}",
            token_count=100 + i % 500,
            updated_at=stamp,
        )
        for i in range(n)
    ]


def timed_write(store: PostgresStore, rows: Sequence[Row], cpu: list[float]) -> float:
    """rows/s of one `write_rows`; appends this process's CPU µs per row to `cpu`."""
    start, start_cpu = time.perf_counter(), time.process_time()
    failures = store.write_rows(rows)
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if failures:
        raise SystemExit(f"unexpected failures: {list(failures.items())[:3]}")
    cpu.append(elapsed_cpu / len(rows) * 1e6)
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--with-index", action="store_true")
    parser.add_argument("--dsn", help="use this database instead of starting pgserver")
    args = parser.parse_args()

    first = make_rows(args.rows, args.dimensions, seed=1)
    second = make_rows(args.rows, args.dimensions, seed=2)

    root = server = None
    dsn = args.dsn
    if dsn is None:
        from core.embedded.server import import_pgserver

        pgserver = import_pgserver()

        root = tempfile.mkdtemp(prefix="core-pg-bench-")
        server = pgserver.get_server(os.path.join(root, "data"), cleanup_mode="stop")
        dsn = server.get_uri()
    try:
        print(
            f"{args.rows} rows x {args.dimensions} dims, {args.chunk} rows/chunk, index={args.with_index}, "
            f"best of {args.repeat} (median in brackets)"
        )
        paths = args.paths.split(",")
        new: dict[str, list[float]] = {p: [] for p in paths}
        existing: dict[str, list[float]] = {p: [] for p in paths}
        cpu: dict[str, list[float]] = {p: [] for p in paths}
        # Paths take turns within each round, so drift on the machine hits them alike.
        for _ in range(args.repeat):
            for path in paths:
                with PathStore(
                    dsn, table="bench_rows", dimensions=args.dimensions, rows_per_chunk=args.chunk,
                    create_schema=False, write_path=path,
                ) as store:
                    store._admin("bench", lambda conn: conn.execute("drop table if exists bench_rows cascade"))
                    store.ensure_schema(with_index=args.with_index)
                    store._admin("bench", lambda conn: conn.execute("checkpoint"))
                    new[path].append(timed_write(store, first, cpu[path]))
                    existing[path].append(timed_write(store, second, cpu[path]))
                    assert store.count() == args.rows
        for path in paths:
            print(
                f"  {path:12s} new {max(new[path]):8.0f} rows/s [{statistics.median(new[path]):8.0f}]   "
                f"existing {max(existing[path]):8.0f} rows/s [{statistics.median(existing[path]):8.0f}]   "
                f"client CPU {statistics.median(cpu[path]):5.1f} µs/row",
                flush=True,
            )
        with PostgresStore(dsn, table="bench_rows", dimensions=args.dimensions, create_schema=False) as store:
            store._admin("bench", lambda conn: conn.execute("drop table if exists bench_rows cascade"))
    finally:
        if server is not None:
            server.cleanup()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
