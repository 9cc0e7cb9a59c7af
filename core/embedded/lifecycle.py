"""Keeping the embedded PostgreSQL from outliving the processes that use it.

pgserver (`core.embedded.server`) counts its users per data folder: each process that
starts a server appends its PID to ``.handle_pids.json`` in the data folder and
removes it at exit (``atexit``); the process that removes the last PID stops the
server. Three ways that went wrong, and what this module does about each:

* **SIGTERM / SIGHUP** (``kill``, ``timeout``, a closed terminal, a cancelled CI
  job) end Python without running ``atexit`` or ``finally`` blocks.
  `stop_on_signals` turns them into a `Terminated` exception in the main thread,
  so ``with`` blocks and ``atexit`` run as they do on Ctrl-C.
* **SIGKILL** (or a crash) runs nothing: the dead PID stays in the list, and
  since no later process is ever the last one, the server was never stopped.
  `prune_dead_handles` drops the PIDs of processes that no longer exist; the
  embedded server calls it on start and stop, so the next run stops it.
* **A statement still running when its client dies** (an HNSW index build takes
  minutes) keeps running until it ends. On SIGTERM/SIGHUP/Ctrl-C nothing more is
  needed: `Terminated` is a `KeyboardInterrupt`, and psycopg 3 cancels the
  running statement on the server when a `KeyboardInterrupt` interrupts it
  (``Connection.wait`` calls ``cancel_safe``). After SIGKILL no client code
  runs, so the server must notice: `enable_disconnect_check` sets
  ``client_connection_check_interval`` on the embedded server, and a statement
  whose client has gone is aborted within a second. That covers every client of
  the server with no code at the call sites, which is why there is no
  "cancel the queries of PID x" helper.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "DISCONNECT_CHECK_INTERVAL",
    "HANDLES_FILE",
    "Terminated",
    "enable_disconnect_check",
    "prune_dead_handles",
    "stop_on_signals",
]

HANDLES_FILE = ".handle_pids.json"
"""pgserver's list of the PIDs using the server, in the data folder."""
DISCONNECT_CHECK_INTERVAL = "1s"
"""How often a running statement checks that its client is still there."""
STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)  # no SIGHUP on Windows
)
# A live PID may only be kept if its process existed when the list was last
# written. Slack for psutil's create_time, which is rounded to the boot time's second.
_CREATE_TIME_SLACK = 2.0

_logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while `stop_on_signals` was active.

    A `KeyboardInterrupt` so that it travels like Ctrl-C: ``except Exception``
    handlers (retry loops, best-effort cleanups) let it through, and psycopg 3
    cancels the statement it interrupts on the server.

    Attributes:
        signum: The signal's number.
        exit_code: ``128 + signum``, what a shell reports for a process ended by it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        return f"terminated by {name}"


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Raise `Terminated` in the main thread on SIGTERM/SIGHUP while the block runs.

    The first signal raises; later ones are ignored until the block is left, so
    they cannot break off the cleanup the first one started (SIGKILL still
    ends the process). The previous handlers come back on exit. Off the main
    thread, where Python cannot install handlers, this does nothing.

    Args:
        signals: The signals to catch (default: SIGTERM, and SIGHUP where it exists).

    Raises:
        Terminated: From inside the block, when one of `signals` arrives.

    Example:
        >>> from core.embedded.server import EmbeddedPostgres, Terminated, stop_on_signals
        >>> def run(folder):
        ...     try:
        ...         with stop_on_signals(), EmbeddedPostgres(folder) as dsn:
        ...             ...  # work; on SIGTERM the server is let go of on the way out
        ...     except Terminated as exc:
        ...         return exc.exit_code
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Terminated(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            # None: a handler installed from C; the default is the closest we can restore.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def _alive(pid: int, written_at: float) -> bool:
    """Whether `pid` may still be the process that put itself in the handle list."""
    import psutil  # a dependency of every pgserver build

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # A process created after the list's last write cannot have written its
        # PID there: the PID was reused (containers reuse small PIDs all the time).
        return bool(process.create_time() <= written_at + _CREATE_TIME_SLACK)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # AccessDenied: someone else's live process
        return True


def prune_dead_handles(folder: str | os.PathLike[str], lock: Any = None) -> list[int]:
    """Remove the PIDs of exited processes from pgserver's handle list in `folder`.

    pgserver stops the server when the process leaving removes the last PID
    from the list; a PID left by a killed process made that never happen.
    After pruning, the last live user stops the server as intended.

    Args:
        folder: The data folder.
        lock: pgserver's inter-process lock (``PostgresServer._lock``), held
            while the list is rewritten so no other process's update is lost.

    Returns:
        The PIDs removed.
    """
    path = Path(folder) / HANDLES_FILE
    with lock if lock is not None else contextlib.nullcontext():
        try:
            written_at = path.stat().st_mtime
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return []
        try:
            pids = json.loads(text) if text else []
            if not isinstance(pids, list) or not all(isinstance(p, int) for p in pids):
                raise ValueError(f"not a list of PIDs: {text[:80]!r}")
        except ValueError as exc:
            # A write cut short by SIGKILL; pgserver would fail on it at every start.
            # Who still uses the server is unknown then: the last one to leave stops it.
            _logger.warning("resetting unreadable %s: %s", path, exc)
            path.write_text("[]", encoding="utf-8")
            return []
        dead = [pid for pid in pids if pid != os.getpid() and not _alive(pid, written_at)]
        if dead:
            path.write_text(json.dumps([pid for pid in pids if pid not in dead]), encoding="utf-8")
            _logger.info("dropped exited processes %s from %s", dead, path)
        return dead


def enable_disconnect_check(dsn: str, interval: str = DISCONNECT_CHECK_INTERVAL) -> bool:
    """Make the server abort statements whose client has gone (killed) within `interval`.

    Sets ``client_connection_check_interval`` server-wide (``ALTER SYSTEM``,
    kept in the data folder) unless it was set already; only for a server we
    own, as the embedded one. Best effort: failure is logged, not raised.

    Args:
        dsn: A connection string of the server.
        interval: A PostgreSQL duration.

    Returns:
        True when the setting was changed now.
    """
    if os.name == "nt":  # PostgreSQL cannot detect a closed socket there and rejects the setting
        return False
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "select source from pg_settings where name = 'client_connection_check_interval'"
            ).fetchone()
            if row is None or row[0] != "default":  # PostgreSQL < 14, or set by someone on purpose
                return False
            conn.execute(f"alter system set client_connection_check_interval = '{interval}'")
            conn.execute("select pg_reload_conf()")
            # The reload is asynchronous: wait (briefly) until new sessions see it.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as check:
                    now = check.execute("show client_connection_check_interval").fetchone()
                if now is not None and now[0] != "0":
                    break
                time.sleep(0.02)
            return True
    except psycopg.Error as exc:
        _logger.debug("could not set client_connection_check_interval: %s", exc)
        return False
