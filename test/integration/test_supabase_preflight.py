"""SupabaseStore.preflight and fetch_hashes against the PostgREST stand-in over real PostgreSQL.

Real supabase-py -> `servers.postgrest_server` (test/servers/) -> PostgreSQL +
pgvector with the shipped schema: a missing table, a missing column, vectors of
another width and a server that is not there are found before any embedding is
paid for, each as a one-line `StoreError` naming the URL and the table, never
the key. The respx end of the same checks is test/unit/test_supabase_retry.py.
"""

from __future__ import annotations

import array
import socket
from typing import Any

import pytest

from core.errors import StoreError
from core.engine.rows import Row
from core.stores.schema import apply_schema
from core.stores.supabase_errors import ResponseError
from core.supabase_store import SupabaseStore
from servers.postgrest_server import FakePostgREST

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"),
]

KEY = "test-service-role-key-preflight"


def make_store(url: str, sleeps: list[float] | None = None, **kwargs: Any) -> SupabaseStore:
    return SupabaseStore(url=url, key=KEY, sleep=(sleeps if sleeps is not None else []).append, **kwargs)


def one_row(dims: int) -> list[Row]:
    vector = array.array("f", [(i % 7) / 7 for i in range(dims)])
    return [Row(1, "t", vector, "m", "0" * 64, 1, "2026-01-01T00:00:00+00:00")]


def assert_one_line_naming(message: str, url: str) -> None:
    assert url in message and "'section_embeddings'" in message
    assert "\n" not in message and KEY not in message


def test_table_there_empty_then_with_rows_of_the_right_width(rest: FakePostgREST, pg_dsn: str) -> None:
    apply_schema(pg_dsn, dimensions=8, with_index=False)
    rest.reload_schema()
    store = make_store(rest.url)
    store.preflight(8)
    store.preflight(1536)  # an empty table cannot tell its width through PostgREST
    assert store.write_rows(one_row(8)) == {}
    store.preflight(8)
    store.preflight(None)
    reads = [entry for entry in rest.stats()["log"] if entry[2] == "GET"]
    assert all("limit=1" in entry[3] for entry in reads)


def test_rows_of_another_width_are_refused(rest: FakePostgREST, pg_dsn: str) -> None:
    apply_schema(pg_dsn, dimensions=8, with_index=False)
    rest.reload_schema()
    store = make_store(rest.url)
    assert store.write_rows(one_row(8)) == {}
    with pytest.raises(StoreError) as caught:
        store.preflight(1536)
    message = str(caught.value)
    assert "holds 8-dimensional vectors, but the embeddings have 1536 dimensions" in message
    assert_one_line_naming(message, rest.url)


def test_missing_table(rest: FakePostgREST) -> None:
    sleeps: list[float] = []
    with pytest.raises(StoreError) as caught:
        make_store(rest.url, sleeps).preflight(1536)
    message = str(caught.value)
    assert "does not exist" in message and "PGRST205" in message
    assert_one_line_naming(message, rest.url)
    assert sleeps == []  # permanent: not retried


def test_missing_column(rest: FakePostgREST, pg_conn: Any) -> None:
    pg_conn.execute("create table section_embeddings (section_id bigint primary key, title text)")
    rest.reload_schema()
    with pytest.raises(StoreError) as caught:
        make_store(rest.url).preflight(1536)
    message = str(caught.value)
    assert "lacks a column the store uses" in message and "42703" in message
    assert_one_line_naming(message, rest.url)


def test_unreachable_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again when the block ends
    sleeps: list[float] = []
    with pytest.raises(StoreError) as caught:
        make_store(url, sleeps).preflight(1536)
    assert str(caught.value).startswith(f"cannot reach Supabase at {url}: ConnectError")
    assert KEY not in str(caught.value)
    assert sleeps == [0.5, 1.0]  # retried as transient, then reported


def test_a_missing_table_stops_fetch_hashes_too(rest: FakePostgREST) -> None:
    with pytest.raises(ResponseError) as caught:
        make_store(rest.url).fetch_hashes([1, 2, 3])
    assert caught.value.code == "PGRST205" and caught.value.status_code == 404


def test_an_empty_table_of_another_width_stops_after_the_probe(rest: FakePostgREST, pg_dsn: str, fake_openai: Any) -> None:
    """Issue #15 item 17: through PostgREST an empty table's width cannot be read up front; the
    first write (the engine's small probe request) is the check, and the run stops there instead
    of paying for every section and failing them all."""
    from core import EmbeddingService

    apply_schema(pg_dsn, dimensions=8, with_index=False)
    rest.reload_schema()
    sections = [{"id": i, "title": f"T{i}", "content": "word " * 200} for i in range(1, 3001)]
    with EmbeddingService(api_key="k", base_url=fake_openai.base_url) as service:
        with pytest.raises(StoreError) as caught:
            make_store(rest.url).batch_ingest_embeddings(sections, service)
    message = str(caught.value)
    assert "takes 8-dimensional vectors, but the embeddings have 1536 dimensions" in message
    report = caught.value.report  # type: ignore[attr-defined]
    assert report["success_count"] == 0
    assert fake_openai.stats()["requests"] <= 2  # the probe (and at most one request already in flight)
    assert 0 < report["failed_count"] < len(sections)
