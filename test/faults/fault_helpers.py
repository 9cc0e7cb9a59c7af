"""The fault suite's shared parts: sections, the ledger that checks every stored vector, the figures.

Every test here ingests into a real PostgreSQL through the local OpenAI-compatible
server with faults switched on, then `check_table` reads back every row and
compares it, bit for bit, with the server's deterministic vector of that row's own
section text (`core.testing.expected_embeddings`):

- **wrong**: a stored vector (or hash, or model) that is not its own section's;
- **lost**: a section neither stored nor reported failed by the run;
- **duplicated**: more than one row per section id, or a section counted twice
  in the run's report (``success + failed + skipped != n``);
- **stray**: a stored row whose id is no section of the file.

The totals of every check (sections checked, faults the server injected) are
printed at the end of the session (`pytest_terminal_summary`): they are the
figures quoted in the README's "Fault suite" section.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.stores.ingest import content_hash, section_text

REPO = Path(__file__).resolve().parents[2]
MODEL = "text-embedding-3-small"

_WORDS = (
    "vector index postgres embedding section table search cosine token request limit retry backoff "
    "server answer fault storm reset latency window hash model row column primary key upsert chunk "
    "commit rollback savepoint connection socket timeout budget minute probe pack order input output"
).split()


# --- sections --------------------------------------------------------------------------------


def make_sections(n: int, seed: int, *, first_id: int = 1, words: tuple[int, int] = (6, 40)) -> list[dict[str, Any]]:
    """`n` sections with unique texts of varied length (some with an empty title), ids from `first_id`."""
    rng = random.Random(seed)
    sections = []
    for k in range(n):
        section_id = first_id + k
        body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(*words)))
        title = "" if k % 7 == 3 else f"Section {section_id} {rng.choice(_WORDS)}"
        sections.append({"id": section_id, "title": title, "content": f"{body} (s{seed}-{section_id})"})
    return sections


def write_jsonl(path: Path, sections: Iterable[Mapping[str, Any]]) -> Path:
    import json

    with open(path, "w", encoding="utf-8") as out:
        for section in sections:
            out.write(json.dumps(section) + "\n")
    return path


# --- the ledger ------------------------------------------------------------------------------


@dataclass
class Figures:
    """Totals over the session: printed at the end, quoted in the README."""

    runs_checked: int = 0
    sections_checked: int = 0
    rows_checked: int = 0
    lost: int = 0
    wrong: int = 0
    duplicated: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def add_faults(self, stats: Mapping[str, Any], *, label: str = "") -> None:
        """Count what the local server injected (its `stats()`): faults by name, 429s of rate limits."""
        for name, count in stats.get("faults", {}).items():
            self.faults[name] += count

    def add_fault(self, name: str, count: int = 1) -> None:
        self.faults[name] += count


FIGURES = Figures()


@dataclass
class Check:
    """What `check_table` found."""

    stored: dict[int, Any]
    """id -> (updated_at) of every row of the table."""
    lost: list[int]
    wrong: list[int]
    duplicated: list[int]
    stray: list[int]

    @property
    def missing(self) -> list[int]:
        """Section ids with no row (failed, or never reached by an interrupted run)."""
        return sorted(set(self._ids) - set(self.stored))

    _ids: list[int] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.wrong, f"{len(self.wrong)} stored vectors are not their own section's: {self.wrong[:10]}"
        assert not self.duplicated, f"{len(self.duplicated)} sections stored or counted more than once: {self.duplicated[:10]}"
        assert not self.lost, f"{len(self.lost)} sections neither stored nor reported failed: {self.lost[:10]}"
        assert not self.stray, f"{len(self.stray)} rows belong to no section: {self.stray[:10]}"


def fetch_rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    """(section_id, embedding float32 ndarray, content_hash, model, updated_at) of every row, binary-exact."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("select to_regclass(%s)", (table,)).fetchone()[0] is None:
            return []  # never created (a run killed before it got that far)
        register_vector(conn)
        with conn.cursor(binary=True) as cur:
            cur.execute(f"select section_id, embedding, content_hash, model, updated_at from {table}")
            return cur.fetchall()


def check_table(
    dsn: str,
    table: str,
    sections: Sequence[Mapping[str, Any]],
    report: Mapping[str, Any] | None = None,
    *,
    dimensions: int = 1536,
    complete: bool = False,
) -> Check:
    """Read every row of `table` and compare it with `sections` (see the module doc).

    Args:
        report: The run's report (``batch_ingest_embeddings``' dict, or an interrupted
            run's): with it, a section with no row must be among its failures.
        complete: Every section must be stored (a finished re-run).
    """
    import numpy as np

    from core.testing import expected_embeddings

    by_id = {int(s["id"]): s for s in sections}
    rows = fetch_rows(dsn, table)
    counts = Counter(int(r[0]) for r in rows)
    duplicated = sorted(i for i, c in counts.items() if c > 1)
    stray = sorted(i for i in counts if i not in by_id)
    mine = [r for r in rows if int(r[0]) in by_id]
    texts = [section_text(by_id[int(r[0])]["title"], by_id[int(r[0])]["content"]) for r in mine]
    wrong: list[int] = []
    for start in range(0, len(mine), 2000):
        part = mine[start : start + 2000]
        want = expected_embeddings(texts[start : start + 2000], dimensions, model=MODEL)
        got = np.stack([_as_array(r[1]) for r in part]) if part else want
        same = np.all(got.view(np.uint32) == want.view(np.uint32), axis=1) if part else []
        for row, text, ok in zip(part, texts[start : start + 2000], same):
            if not ok or row[2] != content_hash(text) or row[3] != MODEL:
                wrong.append(int(row[0]))
    stored = {int(r[0]): r[4] for r in mine}
    lost: list[int] = []
    if report is not None:
        finished = report.get("finished", True)  # False: a run that stopped (StoreError, SIGINT) part way
        failed = [f["id"] for f in report.get("failures", [])]
        reported = Counter([*failed, *report.get("skipped_ids", [])])
        duplicated += sorted(i for i, c in reported.items() if c > 1 and i is not None)
        accounted = int(report["success_count"]) + int(report["failed_count"]) + int(report["skipped_count"])
        if finished and accounted > len(sections):
            duplicated.append(-1)  # -1: the report counts more sections than there are
        if finished:
            failed_set = set(failed)
            lost = sorted(i for i in by_id if i not in stored and i not in failed_set)
        # Sections the report says are stored (now or before) must all be there.
        claimed = int(report["success_count"]) + int(report["skipped_count"])
        if claimed > len(stored):
            lost.append(-1)  # -1: the report claims more stored sections than the table holds
    if complete:
        lost = sorted(set(lost) | (set(by_id) - set(stored)))
    FIGURES.runs_checked += 1
    FIGURES.sections_checked += len(sections)
    FIGURES.rows_checked += len(rows)
    FIGURES.lost += len(lost)
    FIGURES.wrong += len(wrong)
    FIGURES.duplicated += len(duplicated)
    return Check(stored, lost, sorted(wrong), duplicated, stray, _ids=sorted(by_id))


def settle(server: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until `server` has no request in flight (hung or killed clients' included); its stats."""
    deadline = time.monotonic() + timeout
    while True:
        stats = server.stats()
        if not stats["in_flight"] or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def client_backends(dsn: str) -> set[int]:
    """Pids of the client backends connected now (this query's own excepted)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"
        ).fetchall()
    return {int(r[0]) for r in rows}


def wait_for_clients_gone(dsn: str, before: set[int], timeout: float = 15.0) -> None:
    """Wait until every client backend not in `before` is gone (a killed client's transaction has ended)."""
    deadline = time.monotonic() + timeout
    while client_backends(dsn) - before:
        if time.monotonic() > deadline:
            raise AssertionError(f"clients still connected: {client_backends(dsn) - before}")
        time.sleep(0.05)


# --- the CLI ---------------------------------------------------------------------------------


def cli_env(base_url: str) -> dict[str, str]:
    """The environment of a CLI run against the local server: no Supabase, no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "DATABASE_URL", "OPENAI_"))}
    env.update(
        OPENAI_API_KEY="local",
        OPENAI_BASE_URL=base_url,
        NO_PROXY=",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")])),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    return env


def cli_command(path: Path, dsn: str, table: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "core", "ingest", str(path), "--database-url", dsn, "--table", table,
            "--quiet", "--json", *extra]


def run_cli(path: Path, dsn: str, table: str, base_url: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(path, dsn, table, *extra), env=cli_env(base_url), cwd=path.parent,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def cli_report(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The CLI's ``--json`` summary."""
    import json

    for line in reversed(completed.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON summary (exit {completed.returncode}):\n{completed.stdout}\n{completed.stderr}")




def _as_array(value: Any) -> Any:
    """A stored embedding as float32 numpy (pgvector's binary loader gives a `Vector`)."""
    import numpy as np

    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32)
