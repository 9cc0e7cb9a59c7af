"""The embedded PostgreSQL does not outlive its users, and is plain to use from Python.

Real servers (pgserver) in folders under `tempfile.mkdtemp()`, never the
repository or a home folder: run as root, pgserver opens read/execute on every
parent of the data folder. Processes that "own" a server are child Pythons, so
they can be killed with SIGKILL/SIGTERM/SIGHUP. Whatever a test leaves running
(children, postmasters) is killed at teardown.
"""

from __future__ import annotations

import doctest
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import core
from core.embedded.server import EmbeddedPostgres, Terminated, import_pgserver, stop_on_signals
from core.embedded.lifecycle import HANDLES_FILE, prune_dead_handles
from core.errors import MissingDependencyError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

psutil = pytest.importorskip("psutil")
psycopg = pytest.importorskip("psycopg")

# The `core` the tests import, for the children too (PYTHONPATH).
CORE_ROOT = str(Path(core.__file__).resolve().parent.parent)

# A child that holds the server: prints READY, then sleeps in a query or builds
# an HNSW index (~40 s unless stopped); on SIGTERM/SIGHUP prints CLEANED after
# its `with` blocks have run, and exits 128 + signal.
CHILD = r"""
import sys, time, psycopg
from core.embedded.server import EmbeddedPostgres, Terminated, stop_on_signals
folder, action = sys.argv[1], sys.argv[2]
try:
    with stop_on_signals(), EmbeddedPostgres(folder) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if action == "index":
                conn.execute("create extension if not exists vector")
                conn.execute(
                    "create table slow as select array(select random() from generate_series(1, 128)"
                    " where g > 0)::vector(128) as e from generate_series(1, 20000) g"
                )
            print("READY", conn.info.backend_pid, dsn, flush=True)
            if action == "index":
                conn.execute("create index on slow using hnsw (e vector_l2_ops) with (m = 48, ef_construction = 1000)")
            else:
                conn.execute("select pg_sleep(60)")
except Terminated as exc:
    print("CLEANED", exc.signum, flush=True)
    sys.exit(exc.exit_code)
"""


@pytest.fixture(scope="module", autouse=True)
def _pgserver() -> None:
    try:
        import_pgserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no embedded PostgreSQL: {exc}")


def _postmaster_pid(folder: Path) -> int | None:
    try:
        return int((folder / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _postmasters(folder: Path) -> list[Any]:
    """Live (non-zombie) postgres processes serving `folder`."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(folder) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {what}")
        time.sleep(0.1)


def _assert_server_gone(folder: Path, timeout: float = 10.0) -> None:
    _wait_until(lambda: not _postmasters(folder), timeout, f"a postgres server still runs for {folder}")
    assert not (folder / "postmaster.pid").exists()


class Run:
    """Child processes in one data folder; everything is killed and removed at the end."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="core-embedded-test-"))
        self.folder = self.root / "pgdata"
        self.children: list[subprocess.Popen[str]] = []

    def spawn(self, action: str) -> tuple[subprocess.Popen[str], int, str]:
        """A CHILD holding the server; returns it, its backend PID and the DSN once it is READY."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([CORE_ROOT, os.environ.get("PYTHONPATH", "")])}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.folder), action], stdout=subprocess.PIPE, text=True, env=env
        )
        self.children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline().split()  # blocks until READY (or the child dies: "")
        assert line[:1] == ["READY"], f"child did not start (exit {child.poll()})"
        return child, int(line[1]), line[2]

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        for proc in _postmasters(self.folder):  # only the postmaster has the folder in its command line
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown: the data is thrown away anyway
        _wait_until(lambda: not _postmasters(self.folder), 10, "leftover server did not stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def run() -> Iterator[Run]:
    r = Run()
    try:
        yield r
    finally:
        r.close()


def _active_index_builds(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where state = 'active' and query ilike 'create index%'"
        ).fetchone()
    return int(row[0])


# --- A: leftover servers -----------------------------------------------------------------------


def test_next_run_stops_server_left_by_sigkilled_owner(run: Run) -> None:
    child, _, _ = run.spawn("sleep")
    postmaster = _postmaster_pid(run.folder)
    child.kill()
    child.wait()
    assert postmaster is not None and psutil.pid_exists(postmaster)  # the leftover
    assert child.pid in json.loads((run.folder / HANDLES_FILE).read_text())

    with EmbeddedPostgres(run.folder) as dsn, psycopg.connect(dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    _assert_server_gone(run.folder)
    assert json.loads((run.folder / HANDLES_FILE).read_text()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_server_after_cleanup(run: Run, signum: int) -> None:
    child, _, _ = run.spawn("sleep")  # inside a query: psycopg is waiting on the server
    child.send_signal(signum)
    out, _ = child.communicate(timeout=20)
    assert child.returncode == 128 + signum
    assert out.split() == ["CLEANED", str(int(signum))]
    _assert_server_gone(run.folder)
    assert json.loads((run.folder / HANDLES_FILE).read_text()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_index_build_ends_with_its_client(run: Run, signum: int) -> None:
    # We hold the server too, so it stays up and we can see whether the build goes on.
    with EmbeddedPostgres(run.folder) as dsn:
        child, _, _ = run.spawn("index")
        _wait_until(lambda: _active_index_builds(dsn) == 1, 30, "the index build did not start")
        child.send_signal(signum)
        child.wait(timeout=20)
        _wait_until(lambda: _active_index_builds(dsn) == 0, 15, "the index build runs on without its client")
        if signum == signal.SIGTERM:
            assert child.returncode == 128 + signum
            assert child.pid not in json.loads((run.folder / HANDLES_FILE).read_text())
    _assert_server_gone(run.folder)


def test_prune_dead_handles_keeps_live_users_only(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    handles = tmp_path / HANDLES_FILE
    handles.write_text(json.dumps([os.getppid(), dead.pid, os.getpid()]))
    assert prune_dead_handles(tmp_path) == [dead.pid]
    assert json.loads(handles.read_text()) == [os.getppid(), os.getpid()]

    # A PID now held by a process younger than the list's last write was reused: not a user.
    young = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        handles.write_text(json.dumps([young.pid]))
        old = time.time() - 60
        os.utime(handles, (old, old))
        assert prune_dead_handles(tmp_path) == [young.pid]
    finally:
        young.kill()
        young.wait()

    handles.write_text("[12, 3")  # a write cut short by SIGKILL
    assert prune_dead_handles(tmp_path) == []
    assert json.loads(handles.read_text()) == []
    assert prune_dead_handles(tmp_path / "missing") == []


# --- stop_on_signals ---------------------------------------------------------------------------


def test_stop_on_signals_raises_once_and_restores_handlers() -> None:
    def mine(signum: int, frame: Any) -> None:
        raise AssertionError("the previous handler must not run inside the block")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        cleaned = []
        with pytest.raises(Terminated) as caught, stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs here
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not break off cleanup
                time.sleep(0.05)
                cleaned.append(True)
        assert cleaned == [True]
        assert isinstance(caught.value, KeyboardInterrupt)
        assert caught.value.exit_code == 128 + signal.SIGTERM
        assert str(caught.value) == "terminated by SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_stop_on_signals_off_main_thread_changes_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []

    def worker() -> None:
        with stop_on_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


# --- B: plain use from Python ------------------------------------------------------------------


def test_docstring_example_runs() -> None:
    assert "EmbeddedPostgres" in core.__all__
    assert core.EmbeddedPostgres is EmbeddedPostgres
    test = doctest.DocTestParser().get_doctest(EmbeddedPostgres.__doc__ or "", {}, "EmbeddedPostgres", None, 0)
    assert test.examples, "the docstring lost its example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    try:
        result = runner.run(test, clear_globs=False)  # keep test.globs: the example's folder is removed below
        assert result.failed == 0
    finally:
        folder = Path(test.globs["folder"]) if "folder" in test.globs else None
        if folder is not None:
            try:
                _assert_server_gone(folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def test_start_and_stop_still_work_and_dsn_attribute() -> None:
    root = Path(tempfile.mkdtemp(prefix="core-embedded-test-"))
    try:
        pg = EmbeddedPostgres(root / "pgdata")
        assert pg.dsn is None
        dsn = pg.start()
        assert dsn.startswith("postgresql://") and pg.dsn == dsn
        with psycopg.connect(dsn) as conn:
            # Set by the embedded server so killed clients' statements end (see core.embedded.lifecycle).
            assert conn.execute("show client_connection_check_interval").fetchone() == ("1s",)
        pg.stop()
        pg.stop()  # idempotent
        assert pg.dsn is None
        _assert_server_gone(pg.folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)

