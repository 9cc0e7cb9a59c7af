"""SIGKILL at a random point of a CLI ingest, then a re-run to completion.

The CLI loads 3,000 sections (30 requests of 100, 4 in flight, 0.15 s latency each,
then the HNSW index build) and is killed with SIGKILL — no handler, no cleanup —
at a point drawn from a fixed seed: once the server has seen K of its ~31 requests
(K uniform over 0..32; K above 30 means once every row is stored, i.e. while the
index is built) plus up to 0.3 s. The four seeds put the kill at the first
request, mid-load, late in the load, and in the index build. Then, with the killed client's requests and transaction settled:

- every row the killed run left is its own section's (0 wrong, 0 duplicated);
- the re-run exits 0, skips exactly the rows left, and its embeddings requests carry
  exactly the sections that were missing (server ``inputs_ok`` == missing);
- the rows the killed run stored are not rewritten; every section ends stored once.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import (
    FIGURES,
    check_table,
    cli_command,
    cli_env,
    cli_report,
    client_backends,
    make_sections,
    run_cli,
    settle,
    wait_for_clients_gone,
    write_jsonl,
)

DIMS = 256
SECTIONS = 3000
BATCH = 100


@pytest.mark.parametrize("seed", [815, 825, 807, 838])  # K = 0, 17, 23, 32
def test_cli_sigkill_at_a_random_point_then_rerun(
    openai_env: Any, pg_conn: Any, pg_dsn: str, tmp_path: Path, seed: int
) -> None:
    fake = openai_env
    rng = random.Random(seed)
    requests_before_kill = rng.randint(0, SECTIONS // BATCH + 2)
    extra_delay = rng.uniform(0.0, 0.3)
    after_load = requests_before_kill > SECTIONS // BATCH
    sections = make_sections(SECTIONS, seed=seed)
    path = write_jsonl(tmp_path / "sections.jsonl", sections)
    table = f"kill_{seed}"
    fake.configure(latency_base=0.15, seed=seed)
    args = ("--dimensions", str(DIMS), "--batch-size", str(BATCH), "--concurrency", "4")

    before = client_backends(pg_dsn)
    process = subprocess.Popen(
        cli_command(path, pg_dsn, table, *args), env=cli_env(fake.base_url), cwd=tmp_path,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and not (
            _rows(pg_conn, table) >= SECTIONS if after_load else fake.stats()["requests"] >= requests_before_kill
        ):
            assert time.monotonic() < deadline, "the CLI made no progress"
            time.sleep(0.01)
        time.sleep(0.0 if after_load else extra_delay)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
    finally:
        _, err = process.communicate(timeout=60)
    if killed:
        assert process.returncode == -signal.SIGKILL
        FIGURES.add_fault("sigkill")
    else:  # it finished first: the re-run must then skip everything
        assert process.returncode == 0, err
    first_stats = settle(fake)  # the killed client's requests still in flight end server-side
    wait_for_clients_gone(pg_dsn, before)  # and its transaction is over (rolled back or committed)
    first = check_table(pg_dsn, table, sections, dimensions=DIMS)
    first.assert_clean()
    print(f"seed {seed}: killed={killed} after {first_stats['requests']} requests"
          f"{' and the load (index build)' if after_load else f' (+{extra_delay:.2f} s)'}: "
          f"{len(first.stored)} stored, {len(first.missing)} missing")

    fake.reset_stats()
    rerun = run_cli(path, pg_dsn, table, fake.base_url, *args)
    assert rerun.returncode == 0, rerun.stderr
    summary = cli_report(rerun)
    stats = settle(fake)
    assert summary["skipped"] == len(first.stored)
    assert summary["stored"] == len(first.missing)
    assert stats["inputs_ok"] == len(first.missing), "the re-run embedded sections that were already stored"
    after = check_table(pg_dsn, table, sections, dimensions=DIMS, complete=True)
    after.assert_clean()
    assert all(after.stored[i] == stamp for i, stamp in first.stored.items()), "the re-run rewrote stored rows"
    index = pg_conn.execute("select count(*) from pg_indexes where tablename = %s and indexdef ilike '%%hnsw%%'",
                            (table,)).fetchone()[0]
    assert index == 1, "the re-run did not leave the HNSW index in place"


def _rows(conn: Any, table: str) -> int:
    """Rows in `table` (0 while it does not exist)."""
    if conn.execute("select to_regclass(%s)", (table,)).fetchone()[0] is None:
        return 0
    return int(conn.execute(f"select count(*) from {table}").fetchone()[0])
