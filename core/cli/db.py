"""``db``: the embedded PostgreSQL from the shell: its connection string, whether it runs, its size.

The data folder is the one every command uses (``--data-dir``, else
``$CORE_DATA_DIR``, else the per-user default: `core.embedded.data_dir`).

* ``db``: the folder, whether a server runs on it, and (while it runs) its
  connection string, to put in ``DATABASE_URL``;
* ``db --serve``: start it (creating the folder's database if new) and keep it
  running until Ctrl-C, for programs that connect with a URL;
* ``db --stop``: stop a server running on the folder (a fast shutdown: open
  transactions roll back, their clients are disconnected);
* ``db --size``: rows per table and bytes on disk.

Whether a server runs is read from PostgreSQL's own ``postmaster.pid`` in the
folder (PID, port, socket folder, status), not from a connection attempt, so
``db`` never starts or stops anything on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..embedded.server import EmbeddedPostgres, data_dir
from ..errors import ConfigurationError, MissingDependencyError, StoreError
from ..limits import DB_STOP_SECONDS
from .console import SECRETS, printable
from .status import EXIT_FAILED, EXIT_OK, UsageError

__all__ = ["Postmaster", "folder_bytes", "running", "run"]

_POLL_SECONDS = 0.1
_SERVE_POLL_SECONDS = 1.0
"""How often `db --serve` looks whether its server still runs (it ends when `db --stop` stopped it)."""


@dataclass(frozen=True)
class Postmaster:
    """A server running on a data folder, as its ``postmaster.pid`` says."""

    pid: int
    dsn: str
    status: str


def running(folder: Path) -> Postmaster | None:
    """The server running on `folder`, or None (no ``postmaster.pid``, or its process is gone).

    ``postmaster.pid``'s lines (PostgreSQL's ``pidfile.h``): PID, data folder,
    start time, port, socket folder, listen address, shared memory key, status.
    """
    try:
        lines = (folder / "postmaster.pid").read_text(encoding="utf-8", errors="replace").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a server that was killed
    except PermissionError:
        pass  # alive, another OS user's (as root, pgserver runs PostgreSQL as 'pgserver')
    field = lines + [""] * (8 - len(lines))
    port, socket_dir, host, status = field[3].strip(), field[4].strip(), field[5].strip(), field[7].strip()
    if socket_dir:
        dsn = f"postgresql://postgres:@/postgres?host={quote(socket_dir, safe='/')}"
        if port and port != "5432":
            dsn += f"&port={port}"
    else:
        dsn = f"postgresql://postgres:@{host or 'localhost'}:{port or 5432}/postgres"
    return Postmaster(pid, dsn, status or "unknown")


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under `folder` (what the data folder takes on disk, near enough)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a WAL segment recycled while we walk
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def run(args: argparse.Namespace) -> int:
    folder = data_dir(args.data_dir)
    print(printable(f"data folder: {folder}"))
    initialised = (folder / "PG_VERSION").is_file()
    server = running(folder) if initialised else None
    if server is not None:
        SECRETS.add_dsn(server.dsn)
    if args.serve:
        return _serve(folder)
    if not initialised:
        print("no database here yet: `ingest` creates it (or `db --serve`, which keeps it running)")
        return EXIT_OK
    if args.stop:
        return _stop(folder, server)
    if server is None:
        print("server: not running (it runs while a command or program uses it; `db --serve` keeps it up)")
    else:
        print(f"server: running (PID {server.pid}, {server.status})")
        print(printable(f"connection string: {server.dsn}"))
    if args.size:
        _size(folder, server)
    return EXIT_OK


@contextlib.contextmanager
def _connected_dsn(folder: Path, server: Postmaster | None) -> Iterator[str]:
    """The running server's DSN; else the server started for the block (and let go of after it)."""
    if server is not None:
        yield server.dsn
        return
    try:
        with EmbeddedPostgres(folder) as dsn:
            SECRETS.add_dsn(dsn)
            yield dsn
    except (ConfigurationError, MissingDependencyError) as exc:
        raise UsageError(str(exc)) from None


def _size(folder: Path, server: Postmaster | None) -> None:
    """Rows per table (exact counts) and bytes: each table with its indexes, the database, the folder."""
    import psycopg
    from psycopg import sql

    with _connected_dsn(folder, server) as dsn:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                tables = conn.execute(
                    "select n.nspname, c.relname, pg_total_relation_size(c.oid) from pg_class c "
                    "join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p') "
                    "and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%' "
                    "order by 1, 2"
                ).fetchall()
                database = conn.execute("select pg_database_size(current_database())").fetchone()
                counts = [
                    conn.execute(sql.SQL("select count(*) from {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(table))).fetchone()
                    for schema, table, _ in tables
                ]
        except psycopg.Error as exc:
            raise StoreError(f"cannot read the embedded database's sizes: {exc}") from None
    print(f"database: {_mb(int(database[0]) if database else 0)}; data folder on disk: {_mb(folder_bytes(folder))}")
    if not tables:
        print("  no tables yet")
    for (schema, table, size), count in zip(tables, counts):
        rows = int(count[0]) if count else 0
        print(printable(f"  {schema}.{table}: {rows:,} row{'s' if rows != 1 else ''}, {_mb(int(size))} with its indexes"))


def _stop(folder: Path, server: Postmaster | None) -> int:
    if server is None:
        print("server: not running; nothing to stop")
        return EXIT_OK
    try:
        os.kill(server.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    except PermissionError:
        raise UsageError(f"cannot stop the server (PID {server.pid}): it runs as another OS user") from None
    except ProcessLookupError:
        print("server: stopped")
        return EXIT_OK
    deadline = time.monotonic() + DB_STOP_SECONDS
    while running(folder) is not None:
        if time.monotonic() > deadline:
            print(f"server: still running {DB_STOP_SECONDS:.0f} s after the stop request (PID {server.pid}); "
                  f"see {folder / 'log'}")
            return EXIT_FAILED
        time.sleep(_POLL_SECONDS)
    print(f"server: stopped (PID {server.pid}); programs still connected to it lost their connection")
    return EXIT_OK


def _serve(folder: Path) -> int:
    """Start the server and hold it until Ctrl-C / SIGTERM; other processes may use it meanwhile."""
    try:
        with EmbeddedPostgres(folder) as dsn:
            SECRETS.add_dsn(dsn)
            print(printable(f"connection string: {dsn}"))
            print("serving; Ctrl-C stops it (unless another program still uses it)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C, or SIGTERM / SIGHUP through stop_on_signals
                while running(folder) is not None:
                    time.sleep(_SERVE_POLL_SECONDS)
                print("the server stopped (`db --stop`, or it was killed)")
                return EXIT_OK
    except (ConfigurationError, MissingDependencyError) as exc:
        raise UsageError(str(exc)) from None
    print("stopped serving")
    return EXIT_OK
