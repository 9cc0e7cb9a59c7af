"""SupabaseStore: one retry loop, secrets through core.secrets, defaults from core.limits,
preflight before paying, lookups that fail loudly, rows built as they are sent.

The store's HTTP is the real supabase-py client answered by respx (nothing leaves
the process; no test sleeps: retries sleep through an injected recorder). The
stand-in end of the same checks is in test/integration/test_supabase_preflight.py.
"""

from __future__ import annotations

import array
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from core import limits, supabase_store
from core.errors import StoreError
from core.engine.retry import RetryPolicy
from core.engine.rows import Row, vector_literal
from core.stores.supabase_errors import ResponseError
from core.supabase_store import SupabaseStore, row_retry_delay

URL = "http://127.0.0.1:54321"
KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2VjcmV0LXNpZ25hdHVyZS0x"
TABLE_PATH = "/rest/v1/section_embeddings"
NOW = "2026-01-01T00:00:00+00:00"

pytestmark = pytest.mark.filterwarnings(
    # supabase-py passes postgrest-py arguments it has itself deprecated
    "ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"
)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_store(sleeps: list[float], **kwargs: Any) -> SupabaseStore:
    return SupabaseStore(url=URL, key=KEY, sleep=sleeps.append, **kwargs)


def make_rows(ids: Any, dims: int = 4) -> list[Row]:
    return [
        Row(i, f"Section {i}", array.array("f", [i / 8, -i / 16, 0.5, 1.0][:dims]), "m", f"{i:064x}", 3, NOW)
        for i in ids
    ]


def error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body.update(code=code, details=None, hint=None)
    return httpx.Response(status, json=body, headers=headers)


# --- defaults named once -----------------------------------------------------------------


class TestDefaults:
    def test_defaults_come_from_core_limits(self):
        store = SupabaseStore(url=URL, key=KEY)
        assert store.table == limits.DEFAULT_TABLE == "section_embeddings"
        assert store.match_function == limits.DEFAULT_MATCH_FUNCTION == "match_sections"
        assert store.max_concurrency == limits.SUPABASE_MAX_CONCURRENCY == 16

    def test_the_store_defines_no_copy_of_them(self):
        # The embeddings' DEFAULT_MAX_CONCURRENCY (8) and the store's (16) no longer share a name.
        for name in ("DEFAULT_TABLE", "DEFAULT_MAX_CONCURRENCY", "DEFAULT_MATCH_FUNCTION"):
            assert getattr(supabase_store, name, limits.__dict__.get(name)) is limits.__dict__.get(name)
        assert not hasattr(supabase_store, "DEFAULT_MAX_CONCURRENCY")
        assert limits.DEFAULT_MAX_CONCURRENCY == 8


# --- one retry loop --------------------------------------------------------------------------


class TestOneRetryLoop:
    def test_every_row_goes_through_call_with_retries_with_the_store_policy(self, router, sleeps, mocker):
        spy = mocker.spy(supabase_store, "call_with_retries")
        router.post(TABLE_PATH).mock(return_value=httpx.Response(201))
        store = make_store(sleeps, row_retries=3)
        assert store.write_rows(make_rows(range(1, 6))) == {}
        assert spy.call_count == 5
        for call in spy.call_args_list:
            policy = call.args[1]
            assert isinstance(policy, RetryPolicy) and policy.max_retries == 3
            assert policy.delay is row_retry_delay
            assert call.kwargs["sleep"] == sleeps.append

    def test_backoff_is_the_stores_formula(self):
        plain = httpx.ConnectError("refused")
        assert [row_retry_delay(n, plain) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]

    @pytest.mark.parametrize(
        "headers,expected",
        [
            ({"Retry-After": "3"}, 3.0),
            ({"retry-after-ms": "1500"}, 1.5),
            ({"Retry-After": "9999"}, limits.MAX_RETRY_AFTER),
        ],
        ids=["seconds", "ms", "capped"],
    )
    def test_a_retry_after_header_sets_the_wait(self, router, sleeps, headers, expected):
        attempts = iter([error(503, None, "busy", headers), error(503, None, "busy", headers), httpx.Response(201)])
        router.post(TABLE_PATH).mock(side_effect=lambda request: next(attempts))
        assert make_store(sleeps).write_rows(make_rows([1])) == {}
        assert sleeps == [expected, expected]

    def test_a_coded_postgrest_error_keeps_its_code_and_still_carries_the_headers(self, router, sleeps):
        router.post(TABLE_PATH).mock(return_value=error(503, "PGRST001", "Database client error", {"Retry-After": "2"}))
        failures = make_store(sleeps, row_retries=1).write_rows(make_rows([1]))
        assert failures == {1: "PGRST001: Database client error"}
        assert sleeps == [2.0]

    def test_bulk_chunks_use_the_same_loop_and_halve_without_retrying(self, router, sleeps, mocker):
        spy = mocker.spy(supabase_store, "call_with_retries")
        router.post(TABLE_PATH).mock(
            side_effect=lambda request: error(413, None, "Payload Too Large")
            if len(json.loads(request.content)) > 2
            else httpx.Response(201)
        )
        store = make_store(sleeps, rows_per_request=4)
        assert store.write_rows(make_rows(range(1, 5))) == {}
        assert spy.call_count == 3  # 4 rows (413), then 2 + 2
        assert sleeps == []


# --- secrets -----------------------------------------------------------------------------------


class TestSecrets:
    def test_reasons_are_masked_through_core_secrets(self, router, sleeps, mocker):
        spy = mocker.spy(supabase_store, "redact")
        other_jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.b3RoZXItc2lnbmF0dXJl"
        router.post(TABLE_PATH).mock(
            return_value=error(401, "PGRST301", f"JWT {KEY} is invalid; also tried {other_jwt} and sk-abcdefghijklmnop")
        )
        failures = make_store(sleeps).write_rows(make_rows([1]))
        assert failures == {1: "PGRST301: JWT *** is invalid; also tried *** and ***"}
        assert spy.call_count >= 1 and spy.call_args.args[1] == KEY

    def test_the_store_masks_through_core_secrets_only(self, router, sleeps, monkeypatch):
        """Behaviour, not source text: with core.secrets' redact swapped for a marker, the
        store's failure reasons carry the marker and no mask of the store's own."""
        seen: list[tuple[str, ...]] = []

        def marker(text: str, *secrets: str | None) -> str:
            seen.append(tuple(s for s in secrets if s))
            return "<redacted by core.secrets>"

        monkeypatch.setattr(supabase_store, "redact", marker)
        router.post(TABLE_PATH).mock(return_value=error(401, "PGRST301", f"JWT {KEY} is invalid"))
        failures = make_store(sleeps).write_rows(make_rows([1, 2]))
        assert failures == {1: "<redacted by core.secrets>", 2: "<redacted by core.secrets>"}
        assert seen and all(KEY in secrets for secrets in seen)


# --- preflight -----------------------------------------------------------------------------------


def one_row(embedding: Any) -> httpx.Response:
    return httpx.Response(200, json=[{"section_id": 1, "content_hash": "h", "model": "m", "embedding": embedding}])


class TestPreflight:
    def test_one_select_with_limit_1_of_the_columns_the_store_uses(self, router, sleeps):
        get = router.get(TABLE_PATH).mock(return_value=httpx.Response(200, json=[]))
        make_store(sleeps).preflight(1536)
        assert get.call_count == 1
        params = get.calls.last.request.url.params
        assert params["select"] == "section_id,title,content,metadata,content_hash,model,embedding"
        assert params["limit"] == "1"
        assert get.calls.last.request.headers["apikey"] == KEY

    @pytest.mark.parametrize("dimensions", [4, None])
    def test_matching_width_empty_table_or_unknown_width_pass(self, router, sleeps, dimensions):
        """Preflight returns None after exactly one select (no retry, no sleep), for a row of
        the expected width (or any width when none is expected) and for an empty table."""
        for answer in (one_row("[0.5,0.25,1,2]"), httpx.Response(200, json=[])):
            get = router.get(TABLE_PATH).mock(return_value=answer)
            get.reset()
            assert make_store(sleeps).preflight(dimensions) is None
            assert get.call_count == 1
        assert sleeps == []
        # The same row under a different expected width is refused: the pass above is not vacuous.
        router.get(TABLE_PATH).mock(return_value=one_row("[0.5,0.25,1,2]"))
        with pytest.raises(StoreError, match="4-dimensional"):
            make_store(sleeps).preflight(8)

    @pytest.mark.parametrize("embedding", ["[0.5,0.25,1]", [0.5, 0.25, 1.0]], ids=["pgvector-text", "json-array"])
    def test_wrong_width_is_refused_naming_both(self, router, sleeps, embedding):
        router.get(TABLE_PATH).mock(return_value=one_row(embedding))
        with pytest.raises(StoreError) as caught:
            make_store(sleeps).preflight(1536)
        message = str(caught.value)
        assert "3-dimensional" in message and "1536" in message
        assert URL in message and "'section_embeddings'" in message and "\n" not in message

    def test_unreachable_url(self, router, sleeps):
        get = router.get(TABLE_PATH).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
        with pytest.raises(StoreError) as caught:
            make_store(sleeps).preflight(1536)
        message = str(caught.value)
        assert message.startswith(f"cannot reach Supabase at {URL}: ConnectError: [Errno 111] Connection refused")
        assert get.call_count == 3 and sleeps == [0.5, 1.0]  # transient: retried like a row first
        assert KEY not in message and caught.value.__cause__ is None

    def test_unreachable_port_for_real(self, sleeps):
        # No respx: a port nothing listens on.
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        store = SupabaseStore(url=f"http://127.0.0.1:{port}", key=KEY, sleep=sleeps.append)
        with pytest.raises(StoreError, match=rf"^cannot reach Supabase at http://127.0.0.1:{port}: ConnectError"):
            store.preflight(None)

    @pytest.mark.parametrize(
        "response,expected",
        [
            (error(404, "PGRST205", "Could not find the table 'public.section_embeddings' in the schema cache"),
             "table 'section_embeddings' does not exist on Supabase at"),
            (error(404, "42P01", 'relation "public.section_embeddings" does not exist'),
             "table 'section_embeddings' does not exist on Supabase at"),
            (httpx.Response(404, html="<html>Not Found</html>"),
             "has no table 'section_embeddings' (or is not a Supabase project URL)"),
            (error(400, "42703", "column section_embeddings.content_hash does not exist"),
             "table 'section_embeddings' on Supabase at http://127.0.0.1:54321 lacks a column the store uses"),
            (error(401, None, "Invalid API key"), "refused the key for table 'section_embeddings'"),
            (error(401, "PGRST301", f"JWT {KEY} is invalid"), "refused the key for table 'section_embeddings'"),
        ],
        ids=["PGRST205", "42P01", "404-html", "42703", "401-gateway", "PGRST301"],
    )
    def test_missing_table_column_or_bad_key(self, router, sleeps, response, expected):
        get = router.get(TABLE_PATH).mock(return_value=response)
        with pytest.raises(StoreError) as caught:
            make_store(sleeps).preflight(1536)
        message = str(caught.value)
        assert expected in message and URL in message
        assert KEY not in message and "\n" not in message
        assert get.call_count == 1 and sleeps == []  # permanent: not retried

    def test_a_transient_answer_is_retried_before_giving_up(self, router, sleeps):
        answers = iter([error(503, None, "upstream"), one_row("[1,2,3,4]")])
        router.get(TABLE_PATH).mock(side_effect=lambda request: next(answers))
        make_store(sleeps).preflight(4)
        assert sleeps == [0.5]

    def test_ingest_calls_it_before_any_embedding(self, router, sleeps):
        router.get(TABLE_PATH).mock(return_value=error(404, "PGRST205", "Could not find the table"))

        class Service:
            model = "text-embedding-3-small"
            dimensions = None

            def embed(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - must not be reached
                raise AssertionError("embedded before the store was checked")

        with pytest.raises(StoreError, match="does not exist"):
            make_store(sleeps).batch_ingest_embeddings([{"id": 1, "title": "t", "content": "c"}], Service())


# --- fetch_hashes fails loudly -------------------------------------------------------------------


class TestFetchHashes:
    @pytest.mark.parametrize(
        "answer,kind",
        [
            (lambda: error(503, None, "upstream"), "503"),
            (lambda: error(404, "PGRST205", "Could not find the table"), "PGRST205"),
            (httpx.ConnectError("[Errno 111] Connection refused"), "ConnectError"),
        ],
        ids=["503", "PGRST205", "connect"],
    )
    def test_errors_propagate(self, router, sleeps, answer, kind):
        if isinstance(answer, Exception):
            router.get(TABLE_PATH).mock(side_effect=answer)
        else:
            router.get(TABLE_PATH).mock(return_value=answer())
        expected = httpx.ConnectError if kind == "ConnectError" else ResponseError
        with pytest.raises(expected) as caught:
            make_store(sleeps).fetch_hashes([1, 2])
        assert kind in (getattr(caught.value, "code", None) or type(caught.value).__name__)

    def test_a_gateway_answer_without_code_names_its_status(self, router, sleeps):
        router.get(TABLE_PATH).mock(return_value=error(502, None, "Bad gateway"))
        with pytest.raises(ResponseError) as caught:
            make_store(sleeps).fetch_hashes([1])
        assert caught.value.code == "502" and caught.value.status_code == 502


# --- rows are built by the thread that sends them -------------------------------------------------


class TestRowsBuiltWhenSent:
    def test_at_most_one_row_per_worker_is_built_ahead(self, router, sleeps, mocker):
        built = sent = 0
        ahead: list[int] = []
        lock = threading.Lock()
        original = SupabaseStore.row_payload

        def counting(row: Row) -> dict[str, Any]:
            nonlocal built
            with lock:
                built += 1
            return original(row)

        def answer(request: httpx.Request) -> httpx.Response:
            nonlocal sent
            time.sleep(0.002)
            with lock:
                sent += 1
                ahead.append(built - sent)
            return httpx.Response(201)

        mocker.patch.object(SupabaseStore, "row_payload", staticmethod(counting))
        router.post(TABLE_PATH).mock(side_effect=answer)
        store = make_store(sleeps, max_concurrency=4)
        rows = make_rows(range(1, 201))
        assert store.write_rows(rows) == {}
        assert built == sent == 200
        assert max(ahead) <= 4  # never the whole batch of payloads at once

    def test_bodies_are_the_row_objects(self, router, sleeps):
        post = router.post(TABLE_PATH).mock(return_value=httpx.Response(201))
        rows = make_rows(range(1, 4))
        assert make_store(sleeps, max_concurrency=3).write_rows(rows) == {}
        bodies = sorted((json.loads(call.request.content) for call in post.calls), key=lambda b: b["section_id"])
        assert [b["embedding"] for b in bodies] == [vector_literal(r.embedding) for r in rows]

    def test_an_unexpected_exception_still_reaches_the_caller(self, router, sleeps, mocker):
        mocker.patch.object(SupabaseStore, "row_payload", staticmethod(lambda row: 1 / 0))
        with pytest.raises(ZeroDivisionError):
            make_store(sleeps, max_concurrency=4).write_rows(make_rows(range(1, 9)))
