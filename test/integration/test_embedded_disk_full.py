"""A full disk under the embedded data folder is named as such, with the log's place (issue #15 item 9).

The classification is a pure function over the client's error and the server's log
(`core.embedded.diagnose`), tested on the texts PostgreSQL writes; one real case
fills a small tmpfs (needs root and `mount`; skipped otherwise).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.embedded.diagnose import DISK_FULL, RECOVERING, classify, diagnose
from core.embedded.server import EmbeddedPostgres, import_pgserver
from core.errors import MissingDependencyError, StoreError

pytestmark = pytest.mark.integration

EXTEND_FAILED = (
    '2026-12-06 06:43:07.398 UTC [1665] ERROR:  could not extend file "base/5/16721": No space left on device\n'
    "2026-12-06 06:43:07.398 UTC [1665] HINT:  Check free disk space.\n"
)
WAL_PANIC = (
    '2026-12-06 07:01:02.000 UTC [77] PANIC:  could not write to file "pg_wal/xlogtemp.77": No space left on device\n'
    "2026-12-06 07:01:02.100 UTC [70] LOG:  server process (PID 77) was terminated by signal 6: Aborted\n"
    "2026-12-06 07:01:02.100 UTC [70] LOG:  terminating any other active server processes\n"
)


def test_classify_the_texts_postgres_writes() -> None:
    assert classify(EXTEND_FAILED) == DISK_FULL
    assert classify("", sqlstate="53100") == DISK_FULL
    assert classify("FATAL:  the database system is in recovery mode") == RECOVERING
    assert classify("", sqlstate="57P03") == RECOVERING
    assert classify('duplicate key value violates unique constraint "t_pkey"', sqlstate="23505") is None


def test_recovery_mode_after_a_full_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    said = diagnose(tmp_path, "FATAL:  the database system is in recovery mode", "57P03", log_text=WAL_PANIC)
    assert said is not None and "is full" in said and str(tmp_path / "log") in said and "MB free" in said
    crashed = diagnose(tmp_path, "FATAL:  the database system is in recovery mode", log_text="LOG: ok\n")
    assert crashed is not None and "recovering" in crashed and "full" not in crashed
    assert diagnose(tmp_path, "syntax error", log_text="LOG: ok\n") is None


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    try:
        import_pgserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no embedded PostgreSQL: {exc}")
    mount = Path(tempfile.mkdtemp(prefix="cep-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        shutil.rmtree(mount, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def test_a_real_full_disk(tiny_disk: Path) -> None:
    folder = tiny_disk / "pgdata"
    stored = 0
    with pytest.raises(StoreError) as info:
        with EmbeddedPostgres(folder) as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("create table filler (id int primary key, pad text)")
                for i in range(100_000):  # ~1 MB a row (uncompressible): the disk is full long before
                    conn.execute("insert into filler values (%s, (select string_agg(md5(random()::text), '') "
                                 "from generate_series(1, 32768)))", (i,))
                    stored += 1
    message = str(info.value)
    print(message)
    assert "is full" in message and str(folder / "log") in message, message
    assert stored > 0
    # What was committed before the disk filled stays there, counted right by a fresh connection.
    with EmbeddedPostgres(folder) as dsn, psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from filler").fetchone() == (stored,)
