"""What the CLI prints never carries a credential from a URL (issue #15, items 3-5).

- a password in ``OPENAI_BASE_URL`` (httpx sends it as Basic auth);
- database URLs of any scheme (``postgresql+psycopg2://``, ``mysql://``);
- a short key (``OPENAI_API_KEY=local``) masked as a value, never inside ``localhost``.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from cli_helpers import EXAMPLE, in_process, one_line_error  # noqa: F401  (fixtures)

from core.stores.schema import apply_schema

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://user:S3cretPw@127.0.0.1:1/db",
        "mysql://user:S3cretPw@127.0.0.1:1/db",
        "postgres://user:S3cretPw@127.0.0.1:1/db",
    ],
)
@pytest.mark.parametrize("command", ["search", "ingest", "schema"])
def test_database_urls_of_any_scheme_never_print_their_password(command: str, url: str, in_process: Any) -> None:
    args = {
        "search": ["search", "anything", "--database-url", url],
        "ingest": ["ingest", str(EXAMPLE), "--database-url", url, "--dimensions", "8"],
        "schema": ["schema", "--apply", url, "--dimensions", "8"],
    }[command]
    status, captured = in_process(*args)
    assert status == 2, captured.err
    line = one_line_error(captured)
    assert "S3cretPw" not in captured.err + captured.out, line
    assert in_process.fake.stats()["requests"] == 0


def test_a_password_in_the_base_url_never_prints(in_process: Any, pg_dsn: str, pg_conn: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint refuses: one line naming it without its user:password, the short key
    masked where it stands as a value and ``localhost`` left whole."""
    apply_schema(pg_dsn, table="cli_secret_url", dimensions=8, with_index=False)
    port = closed_port()
    monkeypatch.setenv("OPENAI_API_KEY", "local")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://gw-user:pw-123@localhost:{port}/v1")
    for args in (["search", "unix sockets", "--table", "cli_secret_url"],
                 ["ingest", str(EXAMPLE), "--table", "cli_secret_url", "--dimensions", "8", "--no-index"]):
        status, captured = in_process(*args, "--database-url", pg_dsn)
        assert status == 2, captured.err
        assert "pw-123" not in captured.err + captured.out and "gw-user" not in captured.err, captured.err
        line = captured.err.strip().splitlines()[-1]  # ingest names its target on a line before
        assert line.startswith("python -m core: error: the embeddings endpoint "), line
        assert f"http://localhost:{port}/v1" in line and "***host" not in line, line
