"""Every CLI command ends with 130 on SIGINT (Ctrl-C) and 143 on SIGTERM, wherever the signal lands.

Not only during an ingest's embedding requests (test_cli_runs.py): each command
is stopped while it waits on something outside the process, the places where a
signal really arrives:

- connecting to a database that accepted the TCP connection and never answers
  (``ingest``, ``search``, ``schema --apply``);
- inside a database statement that waits on a lock another session holds
  (``schema --apply``, ``ingest`` and ``search`` on a table another session has locked);
- waiting for the embeddings endpoint (``search``'s query, ``ingest``'s sections).

Each must say one line ("interrupted ..."), print no traceback, and return the
shell's code for the signal: 128 + 2 = 130, 128 + 15 = 143. (The Batch API's
``ingest --batch-api`` has its own tests, test_batch_cli.py.)
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import EXAMPLE, clean_env, start_cli

from core.stores.schema import apply_schema

pytestmark = pytest.mark.integration

LATENCY = 8.0
"""Seconds the fake endpoint holds each request: long enough to signal inside it, short enough that the
next test's server is idle again (its fixture waits up to 5 s for requests in flight). Tests wait for
`requests` (counted per test), not `in_flight` (a gauge that still counts an earlier test's request)."""

SIGNALS = pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)


class SilentDatabase:
    """A TCP port that accepts connections and never answers (a database hung at startup)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def dsn(self) -> str:
        return f"postgresql://app:pw@127.0.0.1:{self.sock.getsockname()[1]}/db"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_db() -> Iterator[SilentDatabase]:
    db = SilentDatabase()
    try:
        yield db
    finally:
        db.close()


def wait_for(condition: Any, proc: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the CLI ended ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for: {what}")
        time.sleep(0.05)


def stop(proc: Any, signum: int, code: int) -> tuple[str, str]:
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=60)
    except Exception:
        proc.kill()
        raise
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{out}\n{err}"
    assert "Traceback" not in err, err
    assert "interrupted" in err, err
    assert "pw@" not in err + out  # the DSN's password never shows, even here
    return out, err


def waiting_on_lock(pg_conn: Any) -> bool:
    return bool(pg_conn.execute(
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and pid <> pg_backend_pid()"
    ).fetchone()[0])


@pytest.fixture
def locker(pg_dsn: str) -> Iterator[Any]:
    """A second connection (not autocommit) that holds locks until the test ends."""
    import psycopg

    conn = psycopg.connect(pg_dsn)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.execute("select pg_advisory_unlock_all()")
        conn.close()


# --- while connecting to a database that never answers -------------------------------------------


@SIGNALS
@pytest.mark.parametrize("command", ["ingest", "search", "schema-apply"])
def test_connecting_to_a_silent_database(
    command: str, signum: int, code: int, silent_db: SilentDatabase, fake_openai: Any
) -> None:
    args = {
        "ingest": ["ingest", str(EXAMPLE), "--database-url", silent_db.dsn, "--dimensions", "8"],
        "search": ["search", "unix sockets", "--database-url", silent_db.dsn],
        "schema-apply": ["schema", "--apply", silent_db.dsn, "--dimensions", "8"],
    }[command]
    proc = start_cli(*args, env=clean_env(fake_openai))
    wait_for(lambda: silent_db.accepted, proc, "the CLI connected")
    time.sleep(0.2)  # inside libpq's wait for the server's first answer
    stop(proc, signum, code)
    assert fake_openai.stats()["requests"] == 0  # nothing was embedded (or paid for)


# --- inside a statement waiting on a lock ---------------------------------------------------------


@SIGNALS
def test_schema_apply_waiting_on_a_locked_table(
    signum: int, code: int, pg_dsn: str, pg_conn: Any, locker: Any, fake_openai: Any
) -> None:
    """The table exists and another session holds it: the script's first statement on it waits."""
    apply_schema(pg_dsn, table="sig_schema", dimensions=8, with_index=False)
    locker.execute("lock table sig_schema in access exclusive mode")  # held: the transaction stays open
    proc = start_cli("schema", "--apply", pg_dsn, "--table", "sig_schema", "--dimensions", "8",
                     env=clean_env(fake_openai))
    wait_for(lambda: waiting_on_lock(pg_conn), proc, "schema --apply waited on the lock")
    stop(proc, signum, code)
    locker.rollback()
    # rolled back, not half made: the index the interrupted script would have added is not there
    assert pg_conn.execute("select count(*) from pg_indexes where tablename = 'sig_schema' "
                           "and indexdef ilike '%hnsw%'").fetchone()[0] == 0


@SIGNALS
@pytest.mark.parametrize("command", ["ingest", "search"])
def test_waiting_on_a_locked_table(
    command: str, signum: int, code: int, pg_dsn: str, pg_conn: Any, locker: Any, fake_openai: Any
) -> None:
    apply_schema(pg_dsn, table="sig_locked", dimensions=8, with_index=False)
    locker.execute("lock table sig_locked in access exclusive mode")  # held: the transaction stays open
    args = {
        "ingest": ["ingest", str(EXAMPLE), "--database-url", pg_dsn, "--table", "sig_locked", "--dimensions", "8",
                   "--no-index"],
        "search": ["search", "unix sockets", "--database-url", pg_dsn, "--table", "sig_locked"],
    }[command]
    proc = start_cli(*args, env=clean_env(fake_openai))
    wait_for(lambda: waiting_on_lock(pg_conn), proc, f"{command} waited on the locked table")
    stop(proc, signum, code)
    locker.rollback()
    assert pg_conn.execute("select count(*) from sig_locked").fetchone()[0] == 0


# --- waiting for the embeddings endpoint ----------------------------------------------------------


@SIGNALS
def test_search_waiting_for_the_query_embedding(
    signum: int, code: int, pg_dsn: str, pg_conn: Any, fake_openai: Any
) -> None:
    apply_schema(pg_dsn, table="sig_search", dimensions=8, with_index=False)
    fake_openai.configure(latency_base=LATENCY)
    proc = start_cli("search", "unix sockets", "--database-url", pg_dsn, "--table", "sig_search",
                     env=clean_env(fake_openai))
    wait_for(lambda: fake_openai.stats()["requests"] >= 1, proc, "the query was sent")
    out, _err = stop(proc, signum, code)
    assert out == ""  # no results, no half a table of them


@SIGNALS
def test_ingest_waiting_for_the_first_embeddings(
    signum: int, code: int, pg_dsn: str, pg_conn: Any, fake_openai: Any, tmp_path: Path
) -> None:
    """Before a single section is stored: the summary says none were, and the exit code is the signal's."""
    fake_openai.configure(latency_base=LATENCY)
    proc = start_cli("ingest", str(EXAMPLE), "--database-url", pg_dsn, "--table", "sig_first", "--dimensions", "8",
                     "--no-index", env=clean_env(fake_openai), cwd=tmp_path)
    wait_for(lambda: fake_openai.stats()["requests"] >= 1, proc, "the first request was sent")
    out, err = stop(proc, signum, code)
    assert out.startswith("stored 0, "), out
