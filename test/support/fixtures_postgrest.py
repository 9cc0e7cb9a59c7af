"""Fixtures: the PostgREST stand-in (test/servers/postgrest_server.py) over the session's PostgreSQL.

`postgrest_server` starts one stand-in process per test module; `rest` hands it to a
test reset (config, schema cache, stats) in front of an empty `public` (`pg_conn`
drops everything around each test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from servers.postgrest_server import FakePostgREST

__all__ = ["postgrest_server", "rest"]


@pytest.fixture(scope="module")
def postgrest_server(pg_dsn: str) -> Iterator[FakePostgREST]:
    with FakePostgREST(pg_dsn) as server:
        yield server


@pytest.fixture
def rest(postgrest_server: FakePostgREST, pg_conn: Any) -> FakePostgREST:
    """The stand-in, reset, in front of an empty `public` (pg_conn drops everything around each test)."""
    if not postgrest_server.running:
        postgrest_server.start()
    postgrest_server.reset_config()
    postgrest_server.reload_schema()  # tables are recreated by every test
    postgrest_server.reset_stats()
    return postgrest_server
