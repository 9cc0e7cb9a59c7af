"""SIGKILL at a random point of `ingest FILE --sync`, then the same command again (issue #18).

One table holds two sources: `docs` (1,000 sections) and `other` (200). Version 2 of `docs`
drops 100 sections, changes 150 and adds 100 (250 to embed: 10 requests of 25, 4 in flight,
0.15 s latency each), and its sync is killed with SIGKILL (no handler, no cleanup) at a point
drawn from a fixed seed: once the server has seen K of its requests (0..10), or once the
deletions have begun (its 100 deletions are one transaction: the run usually ends before the
kill lands, and is then checked the same way). Then, with the killed client's transactions settled:

- `other`'s 200 rows are untouched, and no row of `docs` that version 2 keeps was deleted;
- the same command again exits 0 and leaves `docs` equal to version 2, every vector its own
  text's, and `other` as it was; nothing outside the two sources' ids exists.
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
    client_backends,
    make_sections,
    run_cli,
    settle,
    wait_for_clients_gone,
    write_jsonl,
)

DIMS = 256
BATCH = 25
ARGS = ("--dimensions", str(DIMS), "--batch-size", str(BATCH), "--concurrency", "4", "--sync", "--max-delete", "100%")


def _rows(conn: Any, table: str, source: str) -> set[int]:
    return {r[0] for r in conn.execute(f"select section_id from {table} where source = %s", (source,))}


@pytest.mark.parametrize("seed", [903, 901, 904])  # K = 0, 6, and once the deletions began
def test_sync_killed_at_a_random_point_then_rerun(openai_env: Any, pg_conn: Any, pg_dsn: str, tmp_path: Path, seed: int) -> None:
    fake = openai_env
    rng = random.Random(seed)
    kill_after = rng.randint(0, 11)  # 11: once the deletions have begun
    table = f"synckill_{seed}"
    v1 = make_sections(1000, seed=seed)
    other = make_sections(200, seed=seed + 1, first_id=100_001)
    v2 = [({**s, "content": s["content"] + " (edited)"} if 100 < s["id"] <= 250 else s) for s in v1[100:]]
    v2 += make_sections(100, seed=seed + 2, first_id=2001)
    path_v1 = write_jsonl(tmp_path / "v1.jsonl", v1)
    path_other = write_jsonl(tmp_path / "other.jsonl", other)
    path_v2 = write_jsonl(tmp_path / "v2.jsonl", v2)
    for path, source in ((path_v1, "docs"), (path_other, "other")):
        done = run_cli(path, pg_dsn, table, fake.base_url, *ARGS, "--source", source)
        assert done.returncode == 0, done.stderr
    other_before = {r[0]: r[1] for r in pg_conn.execute(f"select section_id, updated_at from {table} where source = 'other'")}
    fake.configure(latency_base=0.15, seed=seed)
    fake.reset_stats()

    before = client_backends(pg_dsn)
    process = subprocess.Popen(
        cli_command(path_v2, pg_dsn, table, *ARGS, "--source", "docs"), env=cli_env(fake.base_url), cwd=tmp_path,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and not (
            len(_rows(pg_conn, table, "docs")) < 1000 if kill_after > 10 else fake.stats()["requests"] >= kill_after
        ):
            assert time.monotonic() < deadline, "the CLI made no progress"
            time.sleep(0.005)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
    finally:
        _, err = process.communicate(timeout=60)
    if killed:
        assert process.returncode == -signal.SIGKILL
        FIGURES.add_fault("sigkill")
    else:
        assert process.returncode == 0, err
    settle(fake)
    wait_for_clients_gone(pg_dsn, before)
    kept = {s["id"] for s in v2} & {s["id"] for s in v1}
    assert kept <= _rows(pg_conn, table, "docs"), "the killed sync deleted rows its new version keeps"
    after_kill = {r[0]: r[1] for r in pg_conn.execute(f"select section_id, updated_at from {table} where source = 'other'")}
    assert after_kill == other_before, "the killed sync touched another source's rows"

    rerun = run_cli(path_v2, pg_dsn, table, fake.base_url, *ARGS, "--source", "docs")
    assert rerun.returncode == 0, rerun.stderr
    assert _rows(pg_conn, table, "docs") == {s["id"] for s in v2}
    final = check_table(pg_dsn, table, [*v2, *other], dimensions=DIMS, complete=True)
    final.assert_clean()
    assert {r[0]: r[1] for r in pg_conn.execute(f"select section_id, updated_at from {table} where source = 'other'")} \
        == other_before
    print(f"seed {seed}: killed={killed} after {kill_after if kill_after <= 10 else 'the deletions began'}")
