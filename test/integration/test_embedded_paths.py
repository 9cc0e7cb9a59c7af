"""The embedded server in data folders whose paths a shell or a URI would misread (issue #15 item 8).

pgserver's own start puts the socket folder unquoted (and the data folder in double
quotes) into pg_ctl's ``/bin/sh -c`` command line: a space failed the start, ``&``
or ``$(...)`` ran a command. Every such path must work, run nothing, and give a
connection string that points at the right socket (``%``, ``?`` escaped).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from core.embedded.server import EmbeddedPostgres, import_pgserver
from core.embedded.spawn import SOCKET_PREFIX, dsn_for, shell_safe
from core.errors import ConfigurationError, MissingDependencyError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _pgserver() -> None:
    try:
        import_pgserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no embedded PostgreSQL: {exc}")


@pytest.fixture
def root() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="cep-"))  # short: the socket must fit in 107 bytes
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _use(folder: Path, rows: int = 1) -> str:
    """Start the server in `folder`, write a row through its DSN (then `rows` are there), stop it; the DSN."""
    server = EmbeddedPostgres(folder)
    dsn = server.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create table if not exists t (v text)")
            conn.execute("insert into t values (%s)", (str(folder),))
            assert conn.execute("select count(*) from t").fetchone() == (rows,)
            assert conn.execute("show data_directory").fetchone() == (str(folder.resolve()),)
        socket_dir = server.socket_dir
        assert socket_dir is not None and shell_safe(socket_dir) and socket_dir.is_dir()
    finally:
        server.stop()
    assert not (folder / "postmaster.pid").exists(), "the server did not stop"
    if socket_dir.name.startswith(SOCKET_PREFIX):
        assert not socket_dir.exists(), "the private socket folder was left behind"
    else:  # pgserver's own choice for a safe path: the data folder itself
        assert shell_safe(folder) and socket_dir == folder.resolve()
    return dsn


@pytest.mark.parametrize(
    "name",
    ["Application Support", "per%cent", "what?x=1", "it's", 'say "hi"', "a,b", "back\\slash", "ünïcode"],
)
def test_data_folder_paths_that_a_shell_or_uri_would_misread(root: Path, name: str) -> None:
    folder = root / name / "pgdata"
    assert not shell_safe(folder)
    dsn = _use(folder)
    assert f"?host={tempfile.gettempdir()}/{SOCKET_PREFIX}" in dsn and name not in dsn  # the socket is ours; nothing of the path leaks into the URI raw
    if " " in name:  # once: a second start of the same folder keeps its data
        _use(folder, rows=2)


def test_a_command_in_the_path_runs_nothing(root: Path) -> None:
    """``&touch X&`` and ``$(touch Y)`` in the path: pg_ctl's shell ran them as the database's OS user.
    The markers go straight under /tmp, where that user (``pgserver`` when run as root) may write."""
    tag = root.name
    marker_amp, marker_sub = Path(f"/tmp/{tag}-pwned-amp"), Path(f"/tmp/{tag}-pwned-sub")
    try:
        failed = []
        for folder in (Path(f"{root}/x&touch {marker_amp}&/pgdata"), Path(f"{root}/y$(touch {marker_sub})/pgdata")):
            try:
                _use(folder)
            except Exception as exc:  # checked after the markers: running a command is the worse failure
                failed.append(exc)
        assert not marker_amp.exists() and not marker_sub.exists(), "a command in the data folder's path ran"
        assert not failed, failed
    finally:
        marker_amp.unlink(missing_ok=True)
        marker_sub.unlink(missing_ok=True)


def test_a_control_character_in_the_path_is_refused_before_anything_runs(root: Path) -> None:
    folder = root / "line\nbreak" / "pgdata"
    with pytest.raises(ConfigurationError, match="control character"):
        EmbeddedPostgres(folder).start()
    assert not folder.parent.exists()


def test_a_safe_path_still_goes_through_pgserver(root: Path) -> None:
    folder = root / "plain_name-1.2" / "pgdata"
    assert shell_safe(folder)
    _use(folder)


def test_dsn_escapes_the_socket_folder() -> None:
    dsn = dsn_for("/tmp/a b%c?d#e&f")
    assert dsn == "postgresql://postgres:@/postgres?host=/tmp/a%20b%25c%3Fd%23e%26f"
    assert psycopg.conninfo.conninfo_to_dict(dsn)["host"] == "/tmp/a b%c?d#e&f"


def test_no_server_is_left_running(root: Path) -> None:
    folder = root / "left over" / "pgdata"
    _use(folder)
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(folder) in (p.info["cmdline"] or [])]


def test_wal_settings_of_the_embedded_server_only(root: Path) -> None:
    """Issue #20: a local unreplicated server needs WAL for crash safety only (wal_level minimal,
    small max_wal_size); set in its own folder at start, whatever the path."""
    from core.embedded.spawn import SETTINGS

    for folder in (root / "safe" / "pgdata", root / "not safe" / "pgdata"):
        server = EmbeddedPostgres(folder)
        dsn = server.start()
        try:
            with psycopg.connect(dsn) as conn:
                for name, value in SETTINGS.items():
                    assert conn.execute(f"show {name}").fetchone() == (value,), name
        finally:
            server.stop()
