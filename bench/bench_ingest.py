"""End-to-end ingest benchmark (issue #4): the real CLI, where the time goes, store vs bare COPY.

Not a test: it measures, prints Markdown tables and writes every figure of the
run to ``bench/results/ingest.json``.

    python bench/bench_ingest.py                    # 100,000 sections, ~12 minutes on 2 cores
    python bench/bench_ingest.py --quick            # 10,000 sections, ~1-2 minutes
    python bench/bench_ingest.py --sections 30000   # any size

What runs (everything on this machine; nothing touches the internet):

0. A JSONL file of N sections (ids 1..N) in a temporary folder: titles and
   sentences drawn from a seeded, Zipf-weighted vocabulary of 20,000 words,
   ~100-300 cl100k tokens per section.
1. ``python -m core ingest FILE --data-dir DIR --json --quiet`` in a subprocess,
   with OPENAI_API_KEY / OPENAI_BASE_URL pointing at
   `core.testing.openai_server` (no rate limit; latency as configured, none by
   default) and DIR a new embedded PostgreSQL folder under `tempfile.mkdtemp()`.
   The CLI's RSS (and its children's, and the PostgreSQL server's, a separate
   process tree) is sampled every 0.2 s; the kernel's high-water mark of the CLI
   comes from ``os.wait4``. The phases (server start, embedding requests, HNSW
   build) are read from the fake server's request log and from
   ``pg_stat_activity`` (a side connection polls it).
   Then the same command again over the same file: everything must be skipped
   and the fake server must see no request.
2. The same ingest in this process (same settings as the CLI: 8 requests in
   flight, 2,048 inputs per request, windows of 8,192 sections), with
   `EmbeddingService.embed`, `PostgresStore.write_rows`, `fetch_hashes`, the
   client's token counting and the file reading timed separately.
3. `PostgresStore.write_rows` of N precomputed rows (dense random unit float32
   vectors, 1536 dims) into an empty table without index, then over the same
   ids (every row takes ``on conflict do update``), against a bare binary
   ``COPY ... FROM STDIN (FORMAT BINARY)`` of the same rows into an empty copy
   of the table (one COPY, and one COPY per 500-row transaction). Then the HNSW
   index build on the loaded table with ``maintenance_work_mem = '1GB'`` and
   with the server's default (capped by ``--default-index-timeout``).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import core.embedding_service as embedding_service_module  # noqa: E402
from core.embedded.server import EmbeddedPostgres  # noqa: E402
from core.embedding_service import EmbeddingService  # noqa: E402
from core.stores.ingest import section_text  # noqa: E402
from core.stores.postgres import PostgresStore  # noqa: E402
from core.readers import read_records  # noqa: E402
from core.engine.rows import Row  # noqa: E402
from core.stores.schema import index_name, render_index  # noqa: E402
from core.testing.openai_server import FakeOpenAIServer, expected_embedding  # noqa: E402

DIMENSIONS = 1536
MODEL = "text-embedding-3-small"
CLI_TABLE = "section_embeddings"
API_KEY = "sk-bench-local-0000"
COLUMNS = ("section_id", "title", "embedding", "model", "content_hash", "token_count", "updated_at")
COPY_TYPES = ["int8", "text", "vector", "text", "text", "int4", "timestamptz"]
RESULTS = REPO / "bench" / "results" / "ingest.json"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- 0. the sections file ----------------------------------------------------------------------

_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "cr", "dr", "st", "tr", "sh", "ch", "th", "pl", "gr", "qu", ""]
_NUCLEI = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou", "io", "y"]
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "x"]
_COMMON = ("the of and to in a is that for it as with was on be by this are from at or an which have not but "
           "can each we when all their use will one if may more other these into some then than only its also "
           "data system value table section model index query server time").split()


def make_vocabulary(rng: random.Random, size: int) -> list[str]:
    """Common English words first (most frequent), then pronounceable made-up words."""
    words = list(dict.fromkeys(_COMMON))
    seen = set(words)
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(syllables)) + rng.choice(_CODAS)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def write_sections(path: Path, n: int, seed: int, keep: set[int]) -> tuple[dict[int, str], dict[str, Any]]:
    """Write `n` sections (ids 1..n) as JSONL; return the embedded texts of the ids in `keep` and stats."""
    from core.engine.tokens import count_tokens_batch

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    vocab = make_vocabulary(rng, 20_000)
    ranks = np.arange(len(vocab), dtype=np.float64)
    weights = 1.0 / (ranks + 3.0) ** 1.05  # Zipf-like: a few very common words, a long tail
    weights /= weights.sum()
    kept: dict[int, str] = {}
    sample: list[str] = []
    sample_every = max(1, n // 2000)
    block = 10_000
    size = 0
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, n, block):
            count = min(block, n - start)
            lengths = nrng.integers(46, 123, size=count)  # words per content: ~100-300 tokens in all
            title_lengths = nrng.integers(2, 7, size=count)
            words = nrng.choice(len(vocab), size=int(lengths.sum() + title_lengths.sum()), p=weights).tolist()
            pos = 0
            lines = []
            for k in range(count):
                section_id = start + k + 1
                t = int(title_lengths[k])
                title = " ".join(vocab[i].capitalize() for i in words[pos : pos + t])
                pos += t
                m = int(lengths[k])
                body = [vocab[i] for i in words[pos : pos + m]]
                pos += m
                sentences = []
                j = 0
                while j < m:
                    length = rng.randint(6, 18)
                    sentence = body[j : j + length]
                    j += length
                    sentence[0] = sentence[0].capitalize()
                    if len(sentence) > 8 and rng.random() < 0.4:
                        sentence[len(sentence) // 2] += ","
                    sentences.append(" ".join(sentence) + ".")
                content = " ".join(sentences)
                if section_id in keep:
                    kept[section_id] = section_text(title, content)
                if section_id % sample_every == 0:
                    sample.append(section_text(title, content))
                lines.append(json.dumps({"id": section_id, "title": title, "content": content}))
            data = "\n".join(lines) + "\n"
            size += len(data.encode("utf-8"))
            out.write(data)
    tokens = np.array(count_tokens_batch(sample))
    stats = {
        "sections": n,
        "file_bytes": size,
        "vocabulary": len(vocab),
        "token_sample": len(sample),
        "tokens_min": int(tokens.min()),
        "tokens_p5": int(np.percentile(tokens, 5)),
        "tokens_median": int(np.median(tokens)),
        "tokens_p95": int(np.percentile(tokens, 95)),
        "tokens_max": int(tokens.max()),
        "tokens_mean": round(float(tokens.mean()), 1),
        "chars_mean": round(statistics.mean(len(t) for t in sample), 1),
    }
    return kept, stats


# --- 1. the CLI in a subprocess ------------------------------------------------------------------


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (files that vanish mid-walk are skipped)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def postmaster(pgdata: Path) -> tuple[int, str, str] | None:
    """(pid, status, dsn) from `pgdata`/postmaster.pid, or None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 8:
        return None
    pid, socket_dir, status = int(lines[0]), lines[4].strip(), lines[7].strip()
    return pid, status, f"postgresql://postgres:@/postgres?host={socket_dir}"


class Sampler(threading.Thread):
    """Samples RSS of the CLI process, its descendants and the PostgreSQL server's process tree."""

    def __init__(self, pid: int, pgdata: Path, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.pgdata = pgdata
        self.interval = interval
        self.halt = threading.Event()
        self.samples: list[tuple[float, int, int, int, int, int]] = []  # t, cli, kids, pg rss, pg pss, pg procs
        self.pg_ready_at: float | None = None
        self.disk: list[tuple[float, int]] = []  # t, bytes under pgdata (every 2 s: a walk of the folder)

    def run(self) -> None:
        try:
            cli = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        pg: psutil.Process | None = None
        while not self.halt.is_set():
            started = time.time()
            try:
                rss = cli.memory_info().rss
                kids = 0
                for child in cli.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        kids += child.memory_info().rss
            except psutil.Error:
                break
            pg_rss = pg_pss = procs = 0
            if pg is None or not pg.is_running():
                pg = None
                info = postmaster(self.pgdata)
                if info is not None and info[1] == "ready":
                    with contextlib.suppress(psutil.Error):
                        pg = psutil.Process(info[0])
                        if self.pg_ready_at is None:
                            self.pg_ready_at = started
            if pg is not None:
                with contextlib.suppress(psutil.Error):
                    for proc in [pg, *pg.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            full = proc.memory_full_info()
                            pg_rss += full.rss
                            pg_pss += full.pss
                            procs += 1
            self.samples.append((started, rss, kids, pg_rss, pg_pss, procs))
            if not self.disk or started - self.disk[-1][0] >= 2.0:
                self.disk.append((started, folder_bytes(self.pgdata)))
            self.halt.wait(max(0.0, self.interval - (time.time() - started)))

    def peaks(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        mb = 1 << 20
        cli = max(s[1] for s in self.samples)
        both = max(s[1] + s[2] for s in self.samples)
        return {
            "samples": len(self.samples),
            "cli_peak_rss_mb": round(cli / mb, 1),
            "cli_plus_children_peak_rss_mb": round(both / mb, 1),
            "postgres_peak_rss_sum_mb": round(max(s[3] for s in self.samples) / mb, 1),
            "postgres_peak_pss_sum_mb": round(max(s[4] for s in self.samples) / mb, 1),
            "postgres_max_processes": max(s[5] for s in self.samples),
            "pgdata_peak_mb": round(max((d[1] for d in self.disk), default=0) / mb, 1),
            # One sample a second: [s after the first sample, CLI RSS MB, Postgres PSS MB].
            "rss_timeline": [[round(s[0] - self.samples[0][0], 1), round(s[1] / mb), round(s[4] / mb)]
                             for s in self.samples[:: max(1, round(1 / self.interval))]],
        }


class IndexWatch(threading.Thread):
    """Polls the CLI's PostgreSQL (side connection) for the HNSW build: its start and end (epoch)."""

    def __init__(self, pgdata: Path, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pgdata = pgdata
        self.interval = interval
        self.halt = threading.Event()
        self.start_epoch: float | None = None
        self.end_epoch: float | None = None
        self.settings: dict[str, str] = {}
        self.error: str | None = None

    def run(self) -> None:
        import psycopg

        conn = None
        last_active: float | None = None
        while not self.halt.is_set():
            if conn is None:
                info = postmaster(self.pgdata)
                if info is not None and info[1] == "ready":
                    try:
                        conn = psycopg.connect(info[2], autocommit=True, connect_timeout=5)
                    except psycopg.Error:
                        conn = None
                if conn is None:
                    self.halt.wait(self.interval)
                    continue
            try:
                row = conn.execute(
                    "select extract(epoch from query_start)::float8, state, extract(epoch from state_change)::float8 "
                    "from pg_stat_activity where query ilike '%using hnsw%' and pid <> pg_backend_pid() "
                    "and backend_type = 'client backend' order by query_start desc limit 1"
                ).fetchone()
            except psycopg.Error as exc:  # the CLI stopped the server (fast shutdown ends this session)
                self.error = type(exc).__name__
                row = None
                conn = None
            polled = time.time()
            if row is not None and row[1] == "active":
                self.start_epoch = row[0]
                last_active = polled
            elif row is not None and row[1] == "idle" and self.start_epoch is not None:
                self.end_epoch = row[2]  # finished, session still open: the exact end
                break
            elif self.start_epoch is not None:  # finished and the session (or server) is gone
                self.end_epoch = polled  # first poll without it: at most one interval late
                break
            if conn is None and self.error:
                break
            self.halt.wait(self.interval)
        if self.start_epoch is not None and self.end_epoch is None and last_active is not None:
            self.end_epoch = last_active + self.interval / 2
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def request_log_summary(stats: dict[str, Any], offset: float) -> dict[str, Any]:
    """Embedding requests as the server saw them: span, busy time (>= 1 in flight), in epoch seconds."""
    entries = [e for e in stats.get("log", []) if e[2] == 200]
    if not entries:
        return {"requests_ok": 0}
    intervals = sorted((e[0], e[1]) for e in entries)
    busy = 0.0
    cur_start, cur_end = intervals[0]
    for s, e in intervals[1:]:
        if s > cur_end:
            busy += cur_end - cur_start
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    busy += cur_end - cur_start
    durations = [e - s for s, e in intervals]
    return {
        "requests_ok": len(entries),
        "first_request_epoch": intervals[0][0] + offset,
        "last_answer_epoch": max(e for _, e in intervals) + offset,
        "busy_s": round(busy, 3),
        "request_s_median": round(statistics.median(durations), 3),
        "request_s_max": round(max(durations), 3),
        "inputs_per_request_median": statistics.median(e[4] for e in entries),
        "tokens_per_request_median": statistics.median(e[3] for e in entries),
    }


def run_cli(file: Path, pgdata: Path, fake: FakeOpenAIServer, workdir: Path, label: str) -> dict[str, Any]:
    """One `python -m core ingest` run, monitored; returns its figures."""
    env = {k: v for k, v in os.environ.items() if k not in ("SUPABASE_URL", "DATABASE_URL", "SUPABASE_KEY",
                                                           "SUPABASE_SERVICE_ROLE_KEY", "CORE_DATA_DIR")}
    env.update(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=fake.base_url, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "core", "ingest", str(file), "--data-dir", str(pgdata), "--json", "--quiet"]
    fake.reset_stats()
    offset = time.time() - time.monotonic()  # fake server log times are CLOCK_MONOTONIC (system-wide)
    before = load()
    out_path, err_path = workdir / f"{label}.stdout", workdir / f"{label}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=str(REPO))
        sampler = Sampler(proc.pid, pgdata)
        watch = IndexWatch(pgdata)
        sampler.start()
        watch.start()
        _, status, usage = os.wait4(proc.pid, 0)
        t1 = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.halt.set()
    watch.halt.set()
    sampler.join(5)
    watch.join(5)
    after = load()
    stdout = out_path.read_text(encoding="utf-8", errors="replace").strip()
    stderr = err_path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        summary = json.loads(stdout.splitlines()[-1]) if stdout else {}
    except json.JSONDecodeError:
        summary = {"unparsed_stdout": stdout[-2000:]}
    stats = fake.stats()
    reqs = request_log_summary(stats, offset)
    wall = t1 - t0
    result: dict[str, Any] = {
        "command": " ".join(["python", "-m", "core", "ingest", "FILE", "--data-dir", "DIR", "--json", "--quiet"]),
        "exit_status": proc.returncode,
        "wall_s": round(wall, 3),
        "summary": summary,
        "stderr_tail": stderr[-2000:],
        "cli_cpu_user_s": round(usage.ru_utime, 2),
        "cli_cpu_system_s": round(usage.ru_stime, 2),
        "cli_maxrss_mb_kernel": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux; CLI and its waited children
        "server_requests": stats["requests"],
        "server_inputs_ok": stats["inputs_ok"],
        "server_tokens_ok": stats["tokens_ok"],
        "server_max_in_flight": stats["max_in_flight"],
        "requests": reqs,
        "load_before": before,
        "load_after": after,
    }
    result.update(sampler.peaks())
    result["pgdata_final_mb"] = round(folder_bytes(pgdata) / (1 << 20), 1)
    n = int(summary.get("sections", 0) or 0)
    tokens = int(summary.get("tokens", 0) or 0)
    result["sections_per_s"] = round(n / wall, 1) if wall else None
    result["tokens_per_s"] = round(tokens / wall) if wall else None
    # Timeline, seconds after the spawn.
    timeline: dict[str, float | None] = {"exit": round(wall, 2)}
    if sampler.pg_ready_at is not None:
        timeline["postgres_ready"] = round(sampler.pg_ready_at - t0, 2)
    if reqs.get("requests_ok"):
        timeline["first_request"] = round(reqs["first_request_epoch"] - t0, 2)
        timeline["last_answer"] = round(reqs["last_answer_epoch"] - t0, 2)
    if watch.start_epoch is not None:
        timeline["index_build_start"] = round(watch.start_epoch - t0, 2)
        if watch.end_epoch is not None:
            timeline["index_build_end"] = round(watch.end_epoch - t0, 2)
            result["index_build_s"] = round(watch.end_epoch - watch.start_epoch, 2)
    result["timeline_s"] = timeline
    if watch.start_epoch is not None:
        ingest_end = watch.start_epoch
    else:
        ingest_end = t1
    result["ingest_phase_s"] = round(ingest_end - t0, 2)  # spawn -> index build start (or exit)
    if n and result["ingest_phase_s"]:
        result["ingest_phase_sections_per_s"] = round(n / result["ingest_phase_s"], 1)
        result["ingest_phase_tokens_per_s"] = round(tokens / result["ingest_phase_s"])
    return result


def verify_cli_table(dsn: str, n: int, kept: dict[int, str]) -> dict[str, Any]:
    """Row count, index present, and sampled vectors equal to the server's expected ones (bit for bit)."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        count = conn.execute(f"select count(*) from {CLI_TABLE}").fetchone()[0]
        has_index = conn.execute("select to_regclass(%s) is not null", (index_name(CLI_TABLE),)).fetchone()[0]
        equal = 0
        for section_id, text in kept.items():
            row = conn.execute(
                f"select embedding, content_hash from {CLI_TABLE} where section_id = %s", (section_id,)
            ).fetchone()
            if row is None:
                continue
            vector = np.asarray(row[0].to_numpy() if hasattr(row[0], "to_numpy") else row[0], dtype=np.float32)
            same = np.array_equal(vector, expected_embedding(text, DIMENSIONS))
            same = same and row[1] == hashlib.sha256(text.encode()).hexdigest()
            equal += bool(same)
        size = conn.execute(f"select pg_total_relation_size('{CLI_TABLE}')").fetchone()[0]
    return {"rows": int(count), "expected_rows": n, "hnsw_index": bool(has_index),
            "sampled_vectors_equal": equal, "sampled": len(kept), "table_total_mb": round(size / (1 << 20), 1)}


# --- 2. where the time goes (in process) ---------------------------------------------------------


class TimedStore(PostgresStore):
    write_s = 0.0
    fetch_s = 0.0
    writes = 0

    def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        started = time.perf_counter()
        try:
            return super().write_rows(rows)
        finally:
            self.write_s += time.perf_counter() - started
            self.writes += 1

    def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        started = time.perf_counter()
        try:
            return super().fetch_hashes(section_ids)
        finally:
            self.fetch_s += time.perf_counter() - started


class TimedService:
    """The service with `embed` timed (as the CLI's `_Metered` wraps it)."""

    def __init__(self, service: EmbeddingService) -> None:
        self._service = service
        self.embed_s = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def embed(self, texts: Sequence[Any], *, max_batch_size: int | None = None, progress: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return self._service.embed(texts, max_batch_size=max_batch_size, progress=progress)
        finally:
            self.embed_s += time.perf_counter() - started
            self.calls += 1


def in_process_ingest(file: Path, dsn: str, fake: FakeOpenAIServer, table: str) -> dict[str, Any]:
    """`batch_ingest_embeddings` as the CLI runs it, each part timed."""
    tokenize = {"s": 0.0}
    original = embedding_service_module.count_tokens_batch

    def timed_count(texts: Sequence[str], **kwargs: Any) -> list[int]:
        started = time.perf_counter()
        try:
            return original(texts, **kwargs)
        finally:
            tokenize["s"] += time.perf_counter() - started

    reading = {"s": 0.0}

    def sections() -> Iterator[dict[str, Any]]:
        records = read_records(file, "jsonl")
        while True:
            started = time.perf_counter()
            record = next(records, None)
            reading["s"] += time.perf_counter() - started
            if record is None:
                return
            yield record.section  # type: ignore[misc]

    service = EmbeddingService(API_KEY, base_url=fake.base_url, model=MODEL, max_batch_size=2048, max_concurrency=8)
    timed = TimedService(service)
    store = TimedStore(dsn, table=table, dimensions=DIMENSIONS, create_schema=False)
    before = load()
    try:
        store._admin("bench", lambda conn: conn.execute(f"drop table if exists {table} cascade"))
        store.ensure_schema(with_index=False)
        store._admin("bench", lambda conn: conn.execute("checkpoint"))
        fake.reset_stats()
        offset = time.time() - time.monotonic()
        embedding_service_module.count_tokens_batch = timed_count  # type: ignore[assignment]
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = store.batch_ingest_embeddings(sections(), timed, batch_size=2048, window=8192)
        total = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        embedding_service_module.count_tokens_batch = original  # type: ignore[assignment]
        service.close()
        store.close()
    stats = fake.stats()
    reqs = request_log_summary(stats, offset)
    parts = {
        "embed_s": timed.embed_s,
        "store_write_s": store.write_s,
        "store_fetch_hashes_s": store.fetch_s,
        "read_file_s": reading["s"],
    }
    other = total - sum(parts.values())
    out: dict[str, Any] = {k: round(v, 2) for k, v in parts.items()}
    out.update(
        total_s=round(total, 2),
        other_s=round(other, 2),
        embed_share=round(timed.embed_s / total, 3),
        store_share=round((store.write_s + store.fetch_s) / total, 3),
        client_tokenize_s=round(tokenize["s"], 2),
        embed_calls=timed.calls,
        write_calls=store.writes,
        process_cpu_s=round(cpu, 2),
        stored=result["success_count"],
        failed=result["failed_count"],
        skipped=result["skipped_count"],
        tokens=result["total_tokens"],
        sections_per_s=round((result["success_count"] + result["failed_count"] + result["skipped_count"]) / total, 1),
        tokens_per_s=round(result["total_tokens"] / total),
        store_rows_per_s=round(result["success_count"] / store.write_s, 1) if store.write_s else None,
        server_requests=stats["requests"],
        server_busy_s=reqs.get("busy_s"),
        server_max_in_flight=stats["max_in_flight"],
        load_before=before,
        load_after=load(),
    )
    return out


# --- 3. store vs bare COPY, index builds -----------------------------------------------------------


def make_rows(n: int, seed: int) -> list[Row]:
    """`n` rows (ids 1..n) with dense random unit float32 vectors, like real embeddings."""
    rng = np.random.default_rng(seed)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat()
    rows: list[Row] = []
    block = 10_000
    for start in range(0, n, block):
        m = min(block, n - start)
        vectors = rng.standard_normal((m, DIMENSIONS), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for k in range(m):
            i = start + k + 1
            rows.append(Row(i, f"Section {i}", array.array("f", vectors[k].tobytes()), MODEL,
                            hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(), 100 + i % 200, stamp))
    return rows


def copy_rows(conn: Any, table: str, rows: Sequence[Row], chunk: int | None) -> None:
    """Bare binary COPY of `rows` into `table`: one COPY, or one per `chunk`-row transaction."""
    cols = ", ".join(COLUMNS)
    step = chunk or len(rows)
    for start in range(0, len(rows), step):
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for row in rows[start : start + step]:
                    copy.write_row((
                        row.section_id,
                        row.title,
                        np.frombuffer(row.embedding, dtype=np.float32),
                        row.model,
                        row.content_hash,
                        row.token_count,
                        dt.datetime.fromisoformat(row.updated_at),
                    ))


class BuildProgress(threading.Thread):
    """Polls pg_stat_progress_create_index (own connection) while an index builds; keeps the last row."""

    def __init__(self, dsn: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = interval
        self.halt = threading.Event()
        self.last: dict[str, Any] | None = None

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.halt.wait(self.interval):
                    row = conn.execute(
                        "select phase, tuples_done, tuples_total from pg_stat_progress_create_index "
                        "where pid <> pg_backend_pid() limit 1"
                    ).fetchone()
                    if row is not None:
                        self.last = {"phase": row[0], "tuples_done": int(row[1]), "tuples_total": int(row[2])}
        except psycopg.Error:
            pass


def store_vs_copy(dsn: str, n: int, repeat: int, default_index_timeout: float) -> dict[str, Any]:
    import psycopg
    from pgvector.psycopg import register_vector

    log(f"phase 3: building {n:,} precomputed rows")
    first = make_rows(n, seed=11)
    # Existing-row pass: same ids, other vectors (shared arrays, no extra memory) and hashes.
    second = [Row(r.section_id, r.title, first[(k + 1) % n].embedding, r.model, r.content_hash[::-1],
                  r.token_count, r.updated_at) for k, r in enumerate(first)]
    runs: dict[str, list[dict[str, Any]]] = {"store_new": [], "store_existing": [], "copy": [], "copy_500": []}

    conn = psycopg.connect(dsn, autocommit=True)
    register_vector(conn)
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(f"{diag.message_primary} {diag.message_detail or ''}".strip()))
    settings = dict(conn.execute(
        "select name, setting || coalesce(unit, '') from pg_settings where name in "
        "('maintenance_work_mem', 'max_parallel_maintenance_workers', 'shared_buffers', 'max_wal_size', "
        "'synchronous_commit', 'wal_level', 'fsync')"
    ).fetchall())
    storage = conn.execute("select typstorage from pg_type where typname = 'vector'").fetchone()

    def timed(label: str, fn: Callable[[], Any], rows: int) -> None:
        conn.execute("checkpoint")
        cpu0, t0 = time.process_time(), time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        runs[label].append({"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
                            "client_cpu_us_per_row": round(cpu / rows * 1e6, 1), "load_after": load()})
        log(f"  {label}: {rows / seconds:,.0f} rows/s ({seconds:.1f} s)")

    try:
        for round_no in range(repeat):
            order = ["store", "copy"] if round_no % 2 == 0 else ["copy", "store"]
            for what in order:
                if what == "store":
                    with PostgresStore(dsn, table="bench_store", dimensions=DIMENSIONS, create_schema=False) as store:
                        store._admin("bench", lambda conn: conn.execute("drop table if exists bench_store cascade"))
                        store.ensure_schema(with_index=False)

                        def write(rows: Sequence[Row], store: PostgresStore = store) -> None:
                            failures = store.write_rows(rows)
                            if failures:
                                raise SystemExit(f"write_rows failed: {list(failures.items())[:3]}")

                        timed("store_new", lambda: write(first), n)
                        timed("store_existing", lambda: write(second), n)
                        assert store.count() == n
                else:
                    for label, chunk in (("copy", None), ("copy_500", 500)):
                        conn.execute("drop table if exists bench_copy")
                        conn.execute("create table bench_copy (like bench_store including all)")
                        timed(label, lambda chunk=chunk: copy_rows(conn, "bench_copy", first, chunk), n)
                        assert conn.execute("select count(*) from bench_copy").fetchone()[0] == n
        # The HNSW build after the load, on the freshly COPYed table (no dead tuples).
        index_sql = render_index(table="bench_copy", dimensions=DIMENSIONS)
        builds: list[dict[str, Any]] = []
        for memory, cap in (("1GB", None), ("default", default_index_timeout)):
            conn.execute(f"drop index if exists {index_name('bench_copy')}")
            conn.execute("checkpoint")
            log(f"  HNSW build, maintenance_work_mem={memory}" + (f" (capped at {cap:.0f} s)" if cap else ""))
            notices.clear()
            progress = BuildProgress(dsn)
            progress.start()
            t0 = time.perf_counter()
            finished = True
            try:
                with conn.transaction():
                    if memory != "default":
                        conn.execute(f"set local maintenance_work_mem = '{memory}'")
                    if cap:
                        conn.execute(f"set local statement_timeout = '{int(cap * 1000)}ms'")
                    conn.execute(index_sql.encode())
            except psycopg.errors.QueryCanceled:
                finished = False
            seconds = time.perf_counter() - t0
            progress.halt.set()
            progress.join(5)
            builds.append({"maintenance_work_mem": memory if memory != "default" else settings["maintenance_work_mem"],
                           "seconds": round(seconds, 1), "finished": finished, "load_after": load(),
                           "last_progress": progress.last, "notices": list(notices)})
            log(f"    {'built' if finished else 'cancelled'} after {seconds:.1f} s; last progress {progress.last}")
        conn.execute("drop table if exists bench_copy")
        conn.execute("drop table if exists bench_store cascade")
    finally:
        conn.close()

    def best(label: str) -> float:
        return max(r["rows_per_s"] for r in runs[label])

    def median(label: str) -> float:
        return statistics.median(r["rows_per_s"] for r in runs[label])

    return {
        "rows": n,
        "repeat": repeat,
        "vectors": "dense random unit float32 (numpy seed 11)",
        "postgres_settings": settings,
        "vector_typstorage": storage[0] if storage else None,
        "runs": runs,
        "best_rows_per_s": {k: best(k) for k in runs},
        "median_rows_per_s": {k: median(k) for k in runs},
        "store_new_vs_copy": round(best("store_new") / best("copy"), 3),
        "store_existing_vs_copy": round(best("store_existing") / best("copy"), 3),
        "store_new_vs_fastest_copy": round(best("store_new") / max(best("copy"), best("copy_500")), 3),
        "store_existing_vs_fastest_copy": round(best("store_existing") / max(best("copy"), best("copy_500")), 3),
        "index_builds": builds,
    }


# --- report ------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "**no**"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"
    lines = ["| " + " | ".join(headers) + " |", rule]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(res: dict[str, Any]) -> str:
    out: list[str] = []
    g = res["sections_file"]
    out.append(f"### Input: {g['sections']:,} sections, {g['file_bytes'] / 1e6:.0f} MB JSONL; tokens per section "
               f"(sample of {g['token_sample']:,}): min {g['tokens_min']}, p5 {g['tokens_p5']}, median "
               f"{g['tokens_median']}, p95 {g['tokens_p95']}, max {g['tokens_max']}")
    fake = res["fake_server"]
    out.append(f"Fake server: latency_base {fake['latency_base']} s, latency_per_token {fake['latency_per_token']} s; "
               "no rate limit.\n")
    if "cli_first_run" in res:
        out.append(report_cli(res))
    if "in_process" in res:
        out.append(report_in_process(res["in_process"]))
    if "store_vs_copy" in res:
        out.append(report_store(res["store_vs_copy"]))
    return "\n".join(out)


def report_cli(res: dict[str, Any]) -> str:
    out: list[str] = []
    c1, c2 = res["cli_first_run"], res["cli_second_run"]
    rows = []
    for name, c in (("1st run (all new)", c1), ("2nd run (unchanged)", c2)):
        s = c["summary"]
        rows.append([name, c["wall_s"], c.get("ingest_phase_s", ""), c.get("index_build_s", "—"),
                     c["sections_per_s"], c["tokens_per_s"], s.get("stored"), s.get("skipped"), s.get("failed"),
                     c["server_requests"], c.get("cli_peak_rss_mb"), c.get("cli_maxrss_mb_kernel"),
                     c.get("postgres_peak_pss_sum_mb"), c["load_before"][0], c["load_after"][0]])
    out.append("### 1. End to end, real CLI (subprocess)\n")
    out.append(table(["run", "wall s", "spawn→index s", "HNSW build s", "sections/s", "tokens/s", "stored",
                      "skipped", "failed", "API requests", "CLI peak RSS MB (sampled)", "CLI maxrss MB (kernel)",
                      "Postgres peak PSS MB", "load before", "load after"], rows))
    out.append(f"\nTimeline of the 1st run (s after spawn): {c1.get('timeline_s')}")
    out.append(f"Summary JSON (1st run): {json.dumps({k: v for k, v in c1['summary'].items() if k != 'failures'})}")
    out.append(f"Summary JSON (2nd run): {json.dumps({k: v for k, v in c2['summary'].items() if k != 'failures'})}")
    r = c1["requests"]
    out.append(f"1st run: CLI CPU {c1['cli_cpu_user_s']} s user + {c1['cli_cpu_system_s']} s system; "
               f"{r.get('requests_ok')} embedding requests (median {r.get('inputs_per_request_median')} inputs, "
               f"{r.get('tokens_per_request_median')} tokens, {r.get('request_s_median')} s each; server busy "
               f"{r.get('busy_s')} s; at most {c1['server_max_in_flight']} in flight); "
               f"Postgres peak RSS sum {c1.get('postgres_peak_rss_sum_mb')} MB over "
               f"{c1.get('postgres_max_processes')} processes; "
               f"check of the stored table: {res.get('cli_table_check')}\n")
    return "\n".join(out)


def report_in_process(p: dict[str, Any]) -> str:
    out: list[str] = []
    out.append("### 2. Where the time goes (in process, same settings)\n")
    out.append(table(["part", "seconds", "share"], [
        ["embed (`service.embed`)", p["embed_s"], f"{p['embed_s'] / p['total_s']:.0%}"],
        ["  of which client token counting", p["client_tokenize_s"], f"{p['client_tokenize_s'] / p['total_s']:.0%}"],
        ["store `write_rows`", p["store_write_s"], f"{p['store_write_s'] / p['total_s']:.0%}"],
        ["store `fetch_hashes`", p["store_fetch_hashes_s"], f"{p['store_fetch_hashes_s'] / p['total_s']:.0%}"],
        ["reading the file", p["read_file_s"], f"{p['read_file_s'] / p['total_s']:.0%}"],
        ["other (validate, hash, rows)", p["other_s"], f"{p['other_s'] / p['total_s']:.0%}"],
        ["total", p["total_s"], "100%"],
    ]))
    out.append(f"\n{p['sections_per_s']:,.0f} sections/s, {p['tokens_per_s']:,} tokens/s; "
               f"store {p['store_rows_per_s']:,.0f} "
               f"rows/s inside the ingest; server busy {p['server_busy_s']} s; process CPU {p['process_cpu_s']} s; "
               f"load {p['load_before'][0]} → {p['load_after'][0]}\n")
    return "\n".join(out)


def report_store(s: dict[str, Any]) -> str:
    out: list[str] = []
    out.append(f"### 3. Store vs bare binary COPY ({s['rows']:,} rows x {DIMENSIONS} dims, best of {s['repeat']})\n")
    labels = {"store_new": "`write_rows`, empty table (500 rows/txn)",
              "store_existing": "`write_rows`, over existing rows",
              "copy": "bare binary COPY, one transaction", "copy_500": "bare binary COPY, 500 rows/txn"}
    copy_best = s["best_rows_per_s"]["copy"]
    fastest = max(copy_best, s["best_rows_per_s"]["copy_500"])
    out.append(table(["path", "rows/s (best)", "rows/s (median)", "vs one COPY", "vs fastest COPY",
                      "client CPU µs/row"], [
        [labels[k], s["best_rows_per_s"][k], s["median_rows_per_s"][k], f"{s['best_rows_per_s'][k] / copy_best:.0%}",
         f"{s['best_rows_per_s'][k] / fastest:.0%}", min(r["client_cpu_us_per_row"] for r in s["runs"][k])]
        for k in labels
    ]))
    out.append("")
    out.append(table(["HNSW build after the load", "seconds", "finished", "progress when cancelled", "notices"], [
        [f"maintenance_work_mem = {b['maintenance_work_mem']}", b["seconds"], b["finished"],
         "" if b["finished"] or not b.get("last_progress") else
         f"{b['last_progress']['tuples_done']:,} of {s['rows']:,} tuples loaded ({b['last_progress']['phase']})",
         "; ".join(b.get("notices", [])) or "—"]
        for b in s["index_builds"]
    ]))
    out.append(f"\nPostgres settings: {s['postgres_settings']}; vector typstorage {s['vector_typstorage']!r}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 sections, shorter index cap")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--latency-base", type=float, default=0.0, help="fake server: seconds per request")
    parser.add_argument("--latency-per-token", type=float, default=0.0, help="fake server: seconds per token")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the store-vs-COPY comparison")
    parser.add_argument("--default-index-timeout", type=float, default=None,
                        help="cap (s) on the HNSW build with the default maintenance_work_mem (default 120; quick 60)")
    parser.add_argument("--skip", default="", help="comma list of phases to skip: cli,inproc,store")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    n = 10_000 if args.quick and args.sections == 100_000 else args.sections
    cap = args.default_index_timeout or (60.0 if args.quick else 120.0)
    skip = set(filter(None, args.skip.split(",")))

    started = time.time()
    res: dict[str, Any] = {
        "benchmark": "bench/bench_ingest.py",
        "date": now_iso(),
        "machine": {
            "cores": psutil.cpu_count(),
            "cpu": cpu_model(),
            "memory_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
            "python": platform.python_version(),
            "load_average_before": load(),
        },
        "parameters": {"sections": n, "seed": args.seed, "dimensions": DIMENSIONS, "model": MODEL,
                       "cli_defaults": "concurrency 8, batch size 2048, window 8192", "repeat": args.repeat,
                       "default_index_timeout_s": cap},
    }
    root = Path(tempfile.mkdtemp(prefix="core-ingest-bench-"))
    log(f"temporary folder {root}; {n:,} sections")
    try:
        file = root / "sections.jsonl"
        rng = random.Random(args.seed)
        keep = set(rng.sample(range(1, n + 1), min(20, n)))
        t0 = time.perf_counter()
        kept, gen_stats = write_sections(file, n, args.seed, keep)
        gen_stats["generate_s"] = round(time.perf_counter() - t0, 1)
        res["sections_file"] = gen_stats
        log(f"sections written: {gen_stats}")
        config = {"latency_base": args.latency_base, "latency_per_token": args.latency_per_token}
        res["fake_server"] = dict(config)
        pgdata = root / "pgdata"

        if "cli" not in skip:
            with FakeOpenAIServer(**config) as fake:
                log("phase 1: CLI, first run")
                res["cli_first_run"] = run_cli(file, pgdata, fake, root, "cli1")
                log(f"  {res['cli_first_run']['wall_s']} s, summary {res['cli_first_run']['summary']}")
                log("phase 1: CLI, second run (unchanged)")
                res["cli_second_run"] = run_cli(file, pgdata, fake, root, "cli2")
                log(f"  {res['cli_second_run']['wall_s']} s, summary {res['cli_second_run']['summary']}")

        server = EmbeddedPostgres(pgdata)
        dsn = server.start()
        try:
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as conn:
                res["machine"]["postgres"] = conn.execute("select version()").fetchone()[0].split(" on ")[0]
                conn.execute("create extension if not exists vector")
                res["machine"]["pgvector"] = conn.execute(
                    "select extversion from pg_extension where extname = 'vector'").fetchone()[0]
            if "cli" not in skip:
                res["cli_table_check"] = verify_cli_table(dsn, n, kept)
                log(f"CLI table check: {res['cli_table_check']}")
            if "inproc" not in skip:
                with FakeOpenAIServer(**config) as fake:  # a fresh server: cold token-count cache, as in run 1
                    log("phase 2: in-process ingest, timed")
                    res["in_process"] = in_process_ingest(file, dsn, fake, "ingest_inproc")
                    log(f"  {res['in_process']}")
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("drop table if exists ingest_inproc cascade")
            if "store" not in skip:
                res["store_vs_copy"] = store_vs_copy(dsn, n, args.repeat, cap)
        finally:
            server.stop()
        res["machine"]["load_average_after"] = load()
        res["bench_wall_s"] = round(time.time() - started, 1)
        res["targets"] = targets(res)
        if not skip or Path(args.out) != RESULTS:  # a partial run never overwrites the committed results
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
            log(f"results written to {args.out}")
        print(report(res))
        print("\n### Targets\n")
        print(table(["target", "measured", "met"], [[t["target"], t["measured"], t["met"]] for t in res["targets"]]))
        print(f"\nbench wall time {res['bench_wall_s']} s; "
              f"load average before {res['machine']['load_average_before']}, "
              f"after {res['machine']['load_average_after']}")
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    c1 = res.get("cli_first_run")
    if c1:
        s = c1["summary"]
        n = res["parameters"]["sections"]
        out.append({"target": f"stored / failed = {n:,} / 0", "measured": f"{s.get('stored')} / {s.get('failed')}",
                    "met": s.get("stored") == n and s.get("failed") == 0})
        peak = max(c1.get("cli_peak_rss_mb") or 0, c1.get("cli_maxrss_mb_kernel") or 0)
        out.append({"target": "CLI peak RSS < 500 MB", "measured": f"{peak} MB", "met": peak < 500})
    check = res.get("cli_table_check")
    if c1 and check:  # issue #20: the embedded folder at most 1.5x its table plus 64 MB after a large load
        limit = 1.5 * check["table_total_mb"] + 64
        out.append({"target": "embedded folder <= 1.5x its table + 64 MB",
                    "measured": f"{c1['pgdata_final_mb']:,.0f} MB for a table of {check['table_total_mb']:,.0f} MB "
                                f"(peak {c1.get('pgdata_peak_mb', 0):,.0f} MB during the run)",
                    "met": c1["pgdata_final_mb"] <= limit})
    c2 = res.get("cli_second_run")
    if c2:
        s = c2["summary"]
        out.append({"target": "2nd run: all skipped, no embeddings request",
                    "measured": f"skipped {s.get('skipped')}, requests {c2['server_requests']}, {c2['wall_s']} s",
                    "met": s.get("skipped") == res["parameters"]["sections"] and c2["server_requests"] == 0})
    p = res.get("in_process")
    if p:
        out.append({"target": "time dominated by the embedding side", "measured":
                    f"embed {p['embed_share']:.0%}, store {p['store_share']:.0%} of {p['total_s']} s",
                    "met": p["embed_share"] > 0.5})
    s3 = res.get("store_vs_copy")
    if s3:
        out.append({"target": "store rows/s >= 50% of bare COPY (empty table)",
                    "measured": f"{s3['store_new_vs_copy']:.0%} of one COPY, {s3['store_new_vs_fastest_copy']:.0%} of "
                                f"500-row COPYs (over existing rows: {s3['store_existing_vs_copy']:.0%} / "
                                f"{s3['store_existing_vs_fastest_copy']:.0%})",
                    "met": s3["store_new_vs_fastest_copy"] >= 0.5})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
