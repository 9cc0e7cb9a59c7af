"""SupabaseStore and the shared ingest pipeline, beyond the seed.

The supabase client here is `FakeSupabase`, a small hand-written stand-in for
the few supabase-py calls the store makes (`table().select().in_().execute()`,
`table().upsert().execute()`, `rpc().execute()`); it keeps the rows it was
given, so a test can check what was stored under which id. The embeddings come
from a real `EmbeddingService` over `FakeEmbeddings`, whose vectors depend on
the text, so a vector stored under the wrong section is caught.

No network, no real sleeps: every retry sleeps through an injected recorder.
The wire format of the same calls (real supabase-py over respx) is proven in
test_supabase_http.py.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import logging
import random
import threading
import time
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import httpx
import pytest
from postgrest.exceptions import APIError

from core.embedding_service import EmbeddingService
from core.errors import ConfigurationError, StoreError
from core.ingest import HASH_LOOKUP_CHUNK, IngestProgress, SectionStore, content_hash, section_text
from core.rows import Row, vector_literal
from core.supabase_store import SupabaseStore
from core.tokens import count_tokens

URL = "http://127.0.0.1:54321"
KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIiwidGVzdCI6dHJ1ZX0.ZmFrZS1zaWduYXR1cmU"
MODEL = "text-embedding-3-small"
DIMS = 8
NOW = "2026-02-08T00:00:00+00:00"


# --- fakes ---------------------------------------------------------------------------------


def vector_for(text: str, dims: int = DIMS) -> array.array:
    """The float32 vector FakeEmbeddings answers for `text`: a function of the text alone."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return array.array("f", [(b - 127.5) / 37.0 for b in digest[:dims]])


def parse_literal(literal: str) -> array.array:
    """pgvector text `[x,y,...]` back to float32, as the database would read it."""
    assert literal.startswith("[") and literal.endswith("]"), literal
    return array.array("f", [float(x) for x in literal[1:-1].split(",")])


class FakeEmbeddings:
    """`client.embeddings.create` of an OpenAI client: one text-dependent vector per input."""

    def __init__(self, dims: int = DIMS) -> None:
        self.dims = dims
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()
        self.embeddings = self

    def create(self, *, model: str, input: list[str], **kwargs: Any) -> Any:
        with self.lock:
            self.calls.append(list(input))
        data = [SimpleNamespace(embedding=vector_for(t, self.dims).tolist(), index=i) for i, t in enumerate(input)]
        return SimpleNamespace(data=data, usage=SimpleNamespace(prompt_tokens=sum(count_tokens(t) for t in input)))

    @property
    def inputs(self) -> list[str]:
        return [t for call in self.calls for t in call]


def make_service(model: str = MODEL, **kwargs: Any) -> tuple[EmbeddingService, FakeEmbeddings]:
    fake = FakeEmbeddings()
    kwargs.setdefault("sleep", lambda _s: None)
    return EmbeddingService(client=fake, model=model, **kwargs), fake


class _Result:
    def __init__(self, data: Any = None) -> None:
        self.data = data


class _Call:
    """A built request: `.execute()` runs it against the fake."""

    def __init__(self, run: Any) -> None:
        self._run = run

    def execute(self) -> _Result:
        return self._run()


class _Select:
    def __init__(self, fake: FakeSupabase, table: str, columns: str) -> None:
        self.fake, self.table, self.columns = fake, table, columns

    def in_(self, column: str, values: list[Any]) -> _Call:
        return _Call(lambda: self.fake._select(self.table, self.columns, column, list(values)))


class _Table:
    def __init__(self, fake: FakeSupabase, name: str) -> None:
        self.fake, self.name = fake, name

    def select(self, columns: str) -> _Select:
        return _Select(self.fake, self.name, columns)

    def upsert(self, body: Any, **kwargs: Any) -> _Call:
        return _Call(lambda: self.fake._upsert(self.name, body, kwargs))


class FakeSupabase:
    """Just enough of supabase-py's sync client for SupabaseStore.

    Args:
        fail: ``fail(body, attempt) -> Exception | None``: the error an upsert answers
            (`attempt` counts earlier upserts of that same body's ids, from 0).
        select_fail: ``select_fail(ids) -> Exception | None`` for hash lookups.
        delay: Seconds each upsert takes (to observe concurrency).
    """

    def __init__(self, fail: Any = None, select_fail: Any = None, delay: float = 0.0) -> None:
        self.fail = fail
        self.select_fail = select_fail
        self.delay = delay
        self.rows: dict[int, dict[str, Any]] = {}
        self.upserts: list[tuple[str, Any, dict[str, Any]]] = []  # (table, body, kwargs), every attempt
        self.selects: list[tuple[str, str, str, list[Any]]] = []
        self.rpcs: list[tuple[str, dict[str, Any]]] = []
        self.rpc_data: list[dict[str, Any]] = []
        self.attempts: dict[Any, int] = {}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def table(self, name: str) -> _Table:
        return _Table(self, name)

    def rpc(self, fn: str, params: dict[str, Any]) -> _Call:
        def run() -> _Result:
            self.rpcs.append((fn, params))
            return _Result(self.rpc_data)

        return _Call(run)

    def _select(self, table: str, columns: str, column: str, ids: list[Any]) -> _Result:
        self.selects.append((table, columns, column, ids))
        if self.select_fail is not None and (exc := self.select_fail(ids)) is not None:
            raise exc
        return _Result(
            [
                {"section_id": i, "content_hash": self.rows[i]["content_hash"], "model": self.rows[i]["model"]}
                for i in ids
                if i in self.rows
            ]
        )

    def _upsert(self, table: str, body: Any, kwargs: dict[str, Any]) -> _Result:
        key = tuple(r["section_id"] for r in body) if isinstance(body, list) else body["section_id"]
        with self.lock:
            self.upserts.append((table, body, kwargs))
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.fail is not None and (exc := self.fail(body, attempt)) is not None:
                raise exc
            with self.lock:
                for row in body if isinstance(body, list) else [body]:
                    self.rows[row["section_id"]] = dict(row)
            return _Result([])
        finally:
            with self.lock:
                self.in_flight -= 1

    def row_bodies(self) -> list[dict[str, Any]]:
        """Every row object sent (bulk bodies flattened), retries included."""
        out: list[dict[str, Any]] = []
        for _table, body, _kw in self.upserts:
            out.extend(body if isinstance(body, list) else [body])
        return out


def api_error(code: str, message: str = "boom") -> APIError:
    return APIError({"code": code, "message": message, "details": None, "hint": None})


def make_store(fake: FakeSupabase | None = None, **kwargs: Any) -> SupabaseStore:
    kwargs.setdefault("sleep", lambda _s: None)
    store = SupabaseStore(url=URL, key=KEY, client=fake if fake is not None else FakeSupabase(), **kwargs)
    store._timestamp = lambda: NOW  # type: ignore[method-assign]
    return store


def sections(ids: Any, prefix: str = "Section") -> list[dict[str, Any]]:
    return [{"id": i, "title": f"{prefix} {i}", "content": f"Content of {prefix.lower()} {i}."} for i in ids]


def assert_accounted(result: dict[str, Any], total: int) -> None:
    assert result["success_count"] + result["failed_count"] + result["skipped_count"] == total
    assert len(result["failed_ids"]) == len(result["failures"]) == result["failed_count"]
    assert len(result["skipped_ids"]) == result["skipped_count"]


def assert_stored_faithfully(fake: FakeSupabase, secs: list[dict[str, Any]], model: str = MODEL) -> None:
    """Every section in `secs` is in the fake table with its own row and its own vector."""
    for s in secs:
        row = fake.rows[s["id"]]
        text = section_text(s["title"], s["content"])
        assert row["section_id"] == s["id"]
        assert row["title"] == s["title"]
        assert row["embedding"] == vector_literal(vector_for(text))
        assert parse_literal(row["embedding"]) == vector_for(text)
        assert row["content_hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
        assert row["model"] == model


# --- construction --------------------------------------------------------------------------


@pytest.fixture
def no_supabase_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class TestConstruction:
    def test_url_and_key_from_arguments_go_to_create_client(self, no_supabase_env, mocker):
        create = mocker.patch("core.supabase_store.create_client")
        store = SupabaseStore(url=URL, key=KEY)
        create.assert_called_once_with(URL, KEY)
        assert store.client is create.return_value
        assert store.url == URL
        assert store.table == "section_embeddings"

    def test_service_role_key_from_environment(self, no_supabase_env, mocker):
        no_supabase_env.setenv("SUPABASE_URL", URL)
        no_supabase_env.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
        no_supabase_env.setenv("SUPABASE_KEY", "the-anon-key-not-this-one")
        create = mocker.patch("core.supabase_store.create_client")
        SupabaseStore()
        create.assert_called_once_with(URL, KEY)

    def test_supabase_key_is_the_fallback(self, no_supabase_env, mocker):
        no_supabase_env.setenv("SUPABASE_URL", URL)
        no_supabase_env.setenv("SUPABASE_KEY", KEY)
        create = mocker.patch("core.supabase_store.create_client")
        SupabaseStore()
        create.assert_called_once_with(URL, KEY)

    def test_arguments_win_over_environment(self, no_supabase_env, mocker):
        no_supabase_env.setenv("SUPABASE_URL", "http://elsewhere.invalid")
        no_supabase_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "env-key")
        create = mocker.patch("core.supabase_store.create_client")
        SupabaseStore(url=URL, key=KEY)
        create.assert_called_once_with(URL, KEY)

    @pytest.mark.parametrize(
        "env",
        [{}, {"SUPABASE_URL": URL}, {"SUPABASE_SERVICE_ROLE_KEY": KEY}, {"SUPABASE_KEY": KEY}],
        ids=["nothing", "url-only", "service-key-only", "key-only"],
    )
    def test_missing_url_or_key_names_the_variables(self, no_supabase_env, mocker, env):
        for name, value in env.items():
            no_supabase_env.setenv(name, value)
        create = mocker.patch("core.supabase_store.create_client")
        with pytest.raises(ConfigurationError) as info:
            SupabaseStore()
        message = str(info.value)
        for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_KEY"):
            assert name in message
        assert KEY not in message
        create.assert_not_called()

    @pytest.mark.parametrize(
        "table",
        ["x; drop table y", "Sections", "", "select", "1abc", "a" * 64, "sch.tbl", 'x"y', None, 5],
    )
    def test_table_name_must_be_a_plain_identifier(self, no_supabase_env, mocker, table):
        create = mocker.patch("core.supabase_store.create_client")
        with pytest.raises(ConfigurationError, match="table"):
            SupabaseStore(url=URL, key=KEY, table=table)
        create.assert_not_called()

    def test_plain_table_and_function_names_are_accepted(self):
        store = SupabaseStore(client=FakeSupabase(), table="docs_v2", match_function="match_docs_v2")
        assert (store.table, store.match_function) == ("docs_v2", "match_docs_v2")

    def test_match_function_must_be_a_plain_identifier(self):
        with pytest.raises(ConfigurationError, match="match_function"):
            SupabaseStore(client=FakeSupabase(), match_function="f(); drop table x")

    @pytest.mark.parametrize(
        "kwargs", [{"max_concurrency": 0}, {"rows_per_request": 0}, {"row_retries": -1}]
    )
    def test_limits_out_of_range_are_refused(self, kwargs):
        with pytest.raises(ConfigurationError):
            SupabaseStore(client=FakeSupabase(), **kwargs)

    def test_bad_url_is_a_configuration_error_without_the_key(self, no_supabase_env):
        with pytest.raises(ConfigurationError) as info:
            SupabaseStore(url="127.0.0.1:54321", key=KEY)  # no scheme: supabase-py refuses it
        assert KEY not in str(info.value)
        assert "127.0.0.1:54321" in str(info.value)

    def test_repr_hides_the_key(self, no_supabase_env, mocker):
        mocker.patch("core.supabase_store.create_client")
        store = SupabaseStore(url=URL, key=KEY)
        assert KEY not in repr(store) and KEY not in str(store)
        assert URL in repr(store) and "***" in repr(store)

    def test_key_never_in_failure_reasons_or_logs(self, caplog):
        """A failure whose text quotes the key (a proxy echoing headers, say) is reported masked."""
        caplog.set_level(logging.DEBUG)
        fake = FakeSupabase(
            fail=lambda body, attempt: (
                api_error("42501", f"permission denied for Bearer {KEY}") if body["section_id"] == 2
                else RuntimeError(f"apikey={KEY} rejected") if body["section_id"] == 3
                else None
            )
        )
        store = make_store(fake)
        service, _ = make_service()
        result = store.batch_ingest_embeddings(sections(range(1, 5)), service)
        assert result["failed_ids"] == [2, 3]
        reasons = [f["reason"] for f in result["failures"]]
        assert reasons[0].startswith("store failed: 42501: permission denied for Bearer ***")
        assert reasons[1].startswith("store failed: RuntimeError: apikey=*** rejected")
        assert all(KEY not in r for r in reasons)
        assert KEY not in caplog.text
        assert KEY not in repr(result)

    def test_client_without_a_usable_postgrest_still_works(self):
        """Status watching needs supabase-py's session; any other client is used as is."""

        class Odd(FakeSupabase):
            @property
            def postgrest(self):
                raise RuntimeError("not a supabase client")

        fake = Odd()
        result = make_store(fake).batch_ingest_embeddings(sections([1, 2]), make_service()[0])
        assert result["success_count"] == 2 and sorted(fake.rows) == [1, 2]

    def test_default_clock_is_utc_iso(self):
        store = SupabaseStore(client=FakeSupabase())
        stamp = store._timestamp()
        assert stamp.endswith("+00:00") and "T" in stamp


# --- rows on the wire ----------------------------------------------------------------------


class TestRowContent:
    def test_each_section_stored_under_its_own_id_with_its_own_vector(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        secs = sections(range(1, 31))
        result = store.batch_ingest_embeddings(secs, service)

        assert result["success_count"] == 30 and result["failed_count"] == 0
        assert_accounted(result, 30)
        assert len(fake.upserts) == 30  # one request per row
        for table, body, kwargs in fake.upserts:
            assert table == "section_embeddings"
            assert isinstance(body, dict)
            assert kwargs == {"on_conflict": "section_id", "returning": "minimal"}
            section = secs[body["section_id"] - 1]
            text = section_text(section["title"], section["content"])
            assert body == {
                "section_id": section["id"],
                "title": section["title"],
                "embedding": vector_literal(vector_for(text)),
                "model": MODEL,
                "content_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "token_count": count_tokens(text),
                "updated_at": NOW,
            }
        assert_stored_faithfully(fake, secs)
        assert result["total_tokens"] == sum(count_tokens(t) for t in api.inputs)

    def test_text_joins_title_and_content_and_drops_an_empty_title(self):
        fake = FakeSupabase()
        service, api = make_service()
        secs = [
            {"id": 1, "title": "Intro", "content": "Hello."},
            {"id": 2, "title": "", "content": "Only content."},
            {"id": 3, "title": "Only title", "content": ""},
        ]
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 3
        assert sorted(api.inputs) == sorted(["Intro\n\nHello.", "Only content.", "Only title\n\n"])
        assert fake.rows[1]["content_hash"] == content_hash("Intro\n\nHello.")
        assert fake.rows[2]["content_hash"] == hashlib.sha256(b"Only content.").hexdigest()
        assert fake.rows[2]["embedding"] == vector_literal(vector_for("Only content."))
        assert section_text("", "x") == "x" and section_text("t", "x") == "t\n\nx"

    def test_vector_literal_round_trips_float32_exactly(self):
        rng = random.Random(7)
        values = [rng.uniform(-1, 1) for _ in range(3000)]
        values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-40, 38) for _ in range(3000)]
        values += [0.0, -0.0, 1.0, -1.0, 1e-45, 1.17549435e-38, 3.4028234e38, 0.1, 1 / 3]
        vector = array.array("f", values)
        literal = vector_literal(vector)
        assert "e+" in literal or "e-" in literal  # exponents kept, not flattened
        back = parse_literal(literal)
        assert back.tobytes() == vector.tobytes()  # bit for bit, -0.0 included
        assert vector_literal([]) == "[]"

    def test_row_payload_is_the_json_object_sent(self):
        row = Row(7, "T", array.array("f", [0.5, -0.25]), "m", "h" * 64, 3, NOW)
        assert SupabaseStore.row_payload(row) == {
            "section_id": 7,
            "title": "T",
            "embedding": "[0.5,-0.25]",
            "model": "m",
            "content_hash": "h" * 64,
            "token_count": 3,
            "updated_at": NOW,
        }

    def test_model_recorded_is_the_services(self):
        fake = FakeSupabase()
        service, _ = make_service(model="text-embedding-3-large")
        make_store(fake).batch_ingest_embeddings(sections([1]), service)
        assert fake.rows[1]["model"] == "text-embedding-3-large"

    def test_updated_at_comes_from_the_store_clock(self, mocker):
        clock = mocker.patch("core.supabase_store.datetime")
        clock.now.return_value.isoformat.return_value = "2030-01-01T00:00:00+00:00"
        fake = FakeSupabase()
        store = SupabaseStore(client=fake, sleep=lambda _s: None)
        service, _ = make_service()
        store.batch_ingest_embeddings(sections([1, 2]), service)
        assert {r["updated_at"] for r in fake.rows.values()} == {"2030-01-01T00:00:00+00:00"}


# --- bad sections --------------------------------------------------------------------------

BAD_SECTIONS = [
    ({"title": "t", "content": "c"}, "missing 'id'"),
    ({"id": 90, "content": "c"}, "missing 'title'"),
    ({"id": 90, "title": "t"}, "missing 'content'"),
    ({"id": "90", "title": "t", "content": "c"}, "'id' must be an integer, not str"),
    ({"id": 90.0, "title": "t", "content": "c"}, "'id' must be an integer, not float"),
    ({"id": True, "title": "t", "content": "c"}, "'id' must be an integer, not bool"),
    ({"id": None, "title": "t", "content": "c"}, "'id' must be an integer, not NoneType"),
    ({"id": 2**63, "title": "t", "content": "c"}, "outside the bigint range"),
    ({"id": -(2**63) - 1, "title": "t", "content": "c"}, "outside the bigint range"),
    ({"id": 90, "title": 5, "content": "c"}, "'title' must be a string, not int"),
    ({"id": 90, "title": "t", "content": b"bytes"}, "'content' must be a string, not bytes"),
    ({"id": 90, "title": "t", "content": None}, "'content' must be a string, not NoneType"),
    ({"id": 90, "title": "t\x00", "content": "c"}, "'title' contains a NUL byte"),
    ({"id": 90, "title": "t", "content": "a\x00b"}, "'content' contains a NUL byte"),
    ({"id": 90, "title": "t", "content": "x\ud800y"}, "'content' is not valid Unicode (lone surrogate at position 1)"),
    ({"id": 90, "title": "\udfff", "content": "c"}, "'title' is not valid Unicode"),
    ({"id": 90, "title": "", "content": ""}, "title and content are both empty"),
    ({"id": 90, "title": "  ", "content": "\n\t"}, "title and content are both empty"),
    (["id", 90], "section must be a dict with id, title, content, not list"),
    (None, "section must be a dict with id, title, content, not NoneType"),
    ("a section", "section must be a dict with id, title, content, not str"),
]


class TestBadSections:
    @pytest.mark.parametrize("bad,reason", BAD_SECTIONS, ids=[r for _, r in BAD_SECTIONS])
    def test_bad_section_fails_alone_with_its_reason(self, bad, reason):
        fake = FakeSupabase()
        service, api = make_service()
        good = sections([1, 2, 3, 4])
        batch = good[:2] + [bad] + good[2:]
        result = make_store(fake).batch_ingest_embeddings(batch, service)

        assert result["success_count"] == 4
        assert result["failed_count"] == 1
        assert_accounted(result, 5)
        failure = result["failures"][0]
        assert failure["index"] == 2
        assert reason in failure["reason"]
        expected_id = bad.get("id") if isinstance(bad, dict) else None
        assert failure["id"] == expected_id and result["failed_ids"] == [expected_id]
        assert sorted(fake.rows) == [1, 2, 3, 4]
        assert_stored_faithfully(fake, good)
        assert len(api.inputs) == 4  # the bad one never reached the API

    def test_bigint_bounds_themselves_are_valid(self):
        fake = FakeSupabase()
        service, _ = make_service()
        secs = [{"id": 2**63 - 1, "title": "max", "content": "c"}, {"id": -(2**63), "title": "min", "content": "c"}]
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 2 and sorted(fake.rows) == [-(2**63), 2**63 - 1]

    def test_unhashable_id_is_reported_as_none(self):
        service, _ = make_service()
        result = make_store().batch_ingest_embeddings([{"id": [1], "title": "t", "content": "c"}], service)
        assert result["failed_ids"] == [None]
        assert "'id' must be an integer, not list" in result["failures"][0]["reason"]

    def test_duplicate_id_first_stored_later_ones_failed(self):
        fake = FakeSupabase()
        service, api = make_service()
        batch = [
            {"id": 1, "title": "first", "content": "one"},
            {"id": 2, "title": "two", "content": "two"},
            {"id": 1, "title": "second", "content": "other"},
            {"id": 1, "title": "third", "content": "again"},
        ]
        result = make_store(fake).batch_ingest_embeddings(batch, service)
        assert result["success_count"] == 2
        assert result["failed_ids"] == [1, 1]
        assert [f["index"] for f in result["failures"]] == [2, 3]
        assert all("duplicate id (first seen at index 0)" in f["reason"] for f in result["failures"])
        assert fake.rows[1]["title"] == "first"
        assert fake.rows[1]["embedding"] == vector_literal(vector_for("first\n\none"))
        assert "second\n\nother" not in api.inputs
        assert len(fake.upserts) == 2

    def test_duplicate_across_windows_is_caught(self):
        fake = FakeSupabase()
        service, _ = make_service()
        batch = sections([1, 2, 3]) + [{"id": 2, "title": "late", "content": "dup"}]
        result = make_store(fake).batch_ingest_embeddings(batch, service, window=2)
        assert result["failed_ids"] == [2] and result["failures"][0]["index"] == 3
        assert fake.rows[2]["title"] == "Section 2"

    def test_an_invalid_first_occurrence_does_not_block_a_valid_one(self):
        fake = FakeSupabase()
        service, _ = make_service()
        batch = [{"id": 1, "title": 5, "content": "c"}, {"id": 1, "title": "ok", "content": "c"}]
        result = make_store(fake).batch_ingest_embeddings(batch, service)
        assert result["success_count"] == 1 and result["failed_ids"] == [1]
        assert fake.rows[1]["title"] == "ok"

    def test_input_the_api_cannot_take_fails_alone(self):
        """An over-long section (per-input token limit) fails with the embedder's reason."""
        fake = FakeSupabase()
        service, _ = make_service(max_tokens_per_input=20)
        batch = sections([1, 2]) + [{"id": 3, "title": "long", "content": "word " * 100}]
        result = make_store(fake).batch_ingest_embeddings(batch, service)
        assert result["success_count"] == 2 and result["failed_ids"] == [3]
        assert result["failures"][0]["reason"].startswith("embedding failed: ")
        assert "token input limit" in result["failures"][0]["reason"]
        assert 3 not in fake.rows

    def test_everything_at_once_is_accounted_exactly(self):
        """Bad sections, duplicates, unchanged rows and failing writes in one call."""
        fake = FakeSupabase(fail=lambda body, attempt: api_error("22P02") if body["section_id"] % 7 == 0 else None)
        service, _ = make_service()
        store = make_store(fake)
        store.batch_ingest_embeddings(sections(range(100, 110)), service)  # stored before
        batch: list[Any] = sections(range(1, 40)) + sections(range(100, 110))
        batch += [bad for bad, _ in BAD_SECTIONS] + sections([5, 6])
        random.Random(3).shuffle(batch)
        result = store.batch_ingest_embeddings(batch, service, window=9)
        assert_accounted(result, len(batch))
        assert result["skipped_count"] == 9  # 100..109 minus 105 (never stored: 105 % 7 == 0)
        assert set(result["skipped_ids"]) == set(range(100, 110)) - {105}
        valid_new = set(range(1, 40)) | {105}
        multiples = {i for i in valid_new if i % 7 == 0}
        assert result["success_count"] == len(valid_new - multiples)
        assert result["failed_count"] == len(BAD_SECTIONS) + 2 + len(multiples)
        assert [f["index"] for f in result["failures"]] == sorted(f["index"] for f in result["failures"])


# --- incremental ---------------------------------------------------------------------------


class TestIncremental:
    def test_unchanged_rows_are_skipped_without_calling_the_api(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        secs = sections(range(1, 21))
        first = store.batch_ingest_embeddings(secs, service)
        assert first["success_count"] == 20
        api.calls.clear()
        fake.upserts.clear()

        second = store.batch_ingest_embeddings(secs, service)
        assert second["skipped_count"] == 20 and second["success_count"] == 0
        assert second["skipped_ids"] == list(range(1, 21))
        assert second["total_tokens"] == 0
        assert api.calls == [] and fake.upserts == []
        assert_accounted(second, 20)

    def test_changed_content_or_model_is_re_embedded(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, _ = make_service()
        secs = sections(range(1, 6))
        store.batch_ingest_embeddings(secs, service)

        secs[1] = {"id": 2, "title": "Section 2", "content": "Rewritten."}
        service2, api2 = make_service()
        result = store.batch_ingest_embeddings(secs, service2)
        assert result["success_count"] == 1 and result["skipped_ids"] == [1, 3, 4, 5]
        assert api2.inputs == ["Section 2\n\nRewritten."]
        assert fake.rows[2]["embedding"] == vector_literal(vector_for("Section 2\n\nRewritten."))

        other_model, api3 = make_service(model="text-embedding-3-large")
        result = store.batch_ingest_embeddings(secs, other_model)
        assert result["success_count"] == 5 and result["skipped_count"] == 0
        assert len(api3.inputs) == 5
        assert {r["model"] for r in fake.rows.values()} == {"text-embedding-3-large"}

    def test_skip_unchanged_false_re_embeds_and_never_looks_up(self):
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        store.batch_ingest_embeddings(sections([1, 2]), service)
        fake.selects.clear()
        result = store.batch_ingest_embeddings(sections([1, 2]), service, skip_unchanged=False)
        assert result["success_count"] == 2 and fake.selects == []

    def test_hash_lookup_is_chunked(self):
        fake = FakeSupabase()
        n = 2 * HASH_LOOKUP_CHUNK + 203
        secs = sections(range(1, n + 1))
        service, api = make_service()
        for s in secs:  # pre-stored, unchanged
            text = section_text(s["title"], s["content"])
            fake.rows[s["id"]] = {"content_hash": content_hash(text), "model": MODEL}
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["skipped_count"] == n and api.calls == []
        sizes = [len(ids) for _t, _c, _col, ids in fake.selects]
        assert sizes == [500, 500, 203]
        assert all(size <= 500 for size in sizes)
        assert [i for *_rest, ids in fake.selects for i in ids] == list(range(1, n + 1))
        assert {(t, c, col) for t, c, col, _ in fake.selects} == {
            ("section_embeddings", "section_id,content_hash,model", "section_id")
        }

    @pytest.mark.parametrize("failing_chunk", [0, 1], ids=["first-chunk", "second-chunk"])
    def test_failing_lookup_stops_the_run_with_what_was_stored(self, failing_chunk):
        """Issue #8 (5): a lookup failure is no longer swallowed (that re-embedded, i.e. paid
        for, sections the store may hold and then failed to store them): the run stops with a
        `StoreError` whose report counts exactly what was stored before it."""
        fake = FakeSupabase()
        store = make_store(fake)
        service, api = make_service()
        secs = sections(range(1, 601))
        store.batch_ingest_embeddings(secs, service)
        api.calls.clear()
        seen = itertools.count()
        fake.select_fail = lambda ids: (
            httpx.ConnectError("connection refused") if next(seen) == failing_chunk else None
        )
        with pytest.raises(StoreError, match="connection refused") as info:
            store.batch_ingest_embeddings(secs, service)
        assert api.calls == []  # nothing paid for
        assert info.value.report["success_count"] == 0 and info.value.report["skipped_count"] == 0

    def test_fetch_hashes_ignores_malformed_records(self):
        client = MagicMock()
        client.table.return_value.select.return_value.in_.return_value.execute.return_value = _Result(
            [{"section_id": "4", "content_hash": "h", "model": "m"}, "junk", {"content_hash": "x"}]
        )
        store = SupabaseStore(client=client)
        assert store.fetch_hashes([4, 5]) == {4: ("h", "m")}
        client.table.return_value.select.return_value.in_.return_value.execute.return_value = _Result(None)
        assert store.fetch_hashes([4]) == {}


# --- concurrency ---------------------------------------------------------------------------


class TestConcurrency:
    def test_row_upserts_overlap_up_to_max_concurrency(self):
        fake = FakeSupabase(delay=0.01)
        service, _ = make_service()
        result = make_store(fake, max_concurrency=4).batch_ingest_embeddings(sections(range(1, 41)), service)
        assert result["success_count"] == 40
        assert 1 < fake.max_in_flight <= 4

    def test_max_concurrency_one_is_serial(self):
        fake = FakeSupabase(delay=0.002)
        service, _ = make_service()
        result = make_store(fake, max_concurrency=1).batch_ingest_embeddings(sections(range(1, 11)), service)
        assert result["success_count"] == 10 and fake.max_in_flight == 1

    def test_bulk_chunks_overlap_too(self):
        fake = FakeSupabase(delay=0.01)
        service, _ = make_service()
        store = make_store(fake, max_concurrency=3, rows_per_request=5)
        result = store.batch_ingest_embeddings(sections(range(1, 51)), service)
        assert result["success_count"] == 50
        assert 1 < fake.max_in_flight <= 3


# --- transient retries ---------------------------------------------------------------------

TRANSIENT = [
    lambda: api_error("503", "Service Unavailable"),
    lambda: api_error("57014", "canceling statement due to statement timeout"),
    lambda: api_error("PGRST001", "Database client error"),
    lambda: api_error("08006", "connection failure"),
    lambda: api_error("40P01", "deadlock detected"),
    lambda: api_error("429", "Too Many Requests"),
    lambda: httpx.ConnectError("connection refused"),
    lambda: httpx.ReadTimeout("timed out"),
]


class TestRetries:
    @pytest.mark.parametrize("make_error", TRANSIENT, ids=["503", "57014", "PGRST001", "08006", "40P01", "429", "connect", "timeout"])
    def test_transient_error_retried_then_stored(self, make_error):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: make_error() if body["section_id"] == 2 and attempt < 2 else None)
        service, _ = make_service()
        result = make_store(fake, row_retries=2, sleep=sleeps.append).batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["success_count"] == 3 and result["failed_count"] == 0
        assert fake.attempts[2] == 3 and fake.attempts[1] == fake.attempts[3] == 1
        assert sleeps == [0.5, 1.0]
        assert_stored_faithfully(fake, sections([1, 2, 3]))

    @pytest.mark.parametrize(
        "make_error,expected",
        [
            (TRANSIENT[0], "store failed: 503: Service Unavailable"),
            (TRANSIENT[1], "store failed: 57014: canceling statement due to statement timeout"),
            (TRANSIENT[6], "store failed: ConnectError: connection refused"),
        ],
        ids=["503", "57014", "connect"],
    )
    def test_transient_error_reported_with_its_code_after_row_retries(self, make_error, expected):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: make_error() if body["section_id"] == 2 else None)
        service, _ = make_service()
        store = make_store(fake, row_retries=3, sleep=sleeps.append)
        result = store.batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["success_count"] == 2 and result["failed_ids"] == [2]
        assert result["failures"][0]["reason"] == expected
        assert fake.attempts[2] == 4
        assert sleeps == [0.5, 1.0, 2.0]

    @pytest.mark.parametrize(
        "error",
        [api_error("22P02", "invalid input syntax for type vector"), api_error("23505", "duplicate key"),
         api_error("42501", "permission denied"), api_error("400", "Bad Request"), ValueError("bad")],
        ids=["22P02", "23505", "42501", "400", "ValueError"],
    )
    def test_permanent_error_is_not_retried(self, error):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: error if body["section_id"] == 1 else None)
        service, _ = make_service()
        result = make_store(fake, row_retries=5, sleep=sleeps.append).batch_ingest_embeddings(sections([1, 2]), service)
        assert result["failed_ids"] == [1] and result["success_count"] == 1
        assert fake.attempts[1] == 1 and sleeps == []
        code = getattr(error, "code", None) or "ValueError"
        assert result["failures"][0]["reason"].startswith(f"store failed: {code}: ")

    def test_row_retries_zero_means_one_attempt(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503"))
        service, _ = make_service()
        result = make_store(fake, row_retries=0).batch_ingest_embeddings(sections([1]), service)
        assert result["failed_ids"] == [1] and fake.attempts[1] == 1

    def test_backoff_is_capped(self):
        sleeps: list[float] = []
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503"))
        service, _ = make_service()
        make_store(fake, row_retries=8, sleep=sleeps.append).batch_ingest_embeddings(sections([1]), service)
        assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]

    def test_error_without_message_falls_back_to_its_type(self):
        class Silent(Exception):
            pass

        fake = FakeSupabase(fail=lambda body, attempt: Silent())
        service, _ = make_service()
        result = make_store(fake).batch_ingest_embeddings(sections([1]), service)
        assert result["failures"][0]["reason"] == "store failed: Silent: Silent"


# --- bulk mode -----------------------------------------------------------------------------


def bulk_sizes(fake: FakeSupabase) -> list[int]:
    return [len(body) if isinstance(body, list) else 1 for _t, body, _k in fake.upserts]


class TestBulk:
    def test_rows_go_in_lists_of_at_most_n(self):
        fake = FakeSupabase()
        service, _ = make_service()
        secs = sections(range(1, 11))
        result = make_store(fake, rows_per_request=4).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 10
        assert all(isinstance(body, list) for _t, body, _k in fake.upserts)
        assert sorted(bulk_sizes(fake)) == [2, 4, 4]
        assert all(k == {"on_conflict": "section_id", "returning": "minimal"} for *_x, k in fake.upserts)
        assert sorted(r["section_id"] for r in fake.row_bodies()) == list(range(1, 11))
        assert_stored_faithfully(fake, secs)

    @pytest.mark.parametrize("code", ["413", "57014"])
    def test_chunk_too_large_is_halved_until_it_fits(self, code):
        fake = FakeSupabase(fail=lambda body, attempt: api_error(code, "too big") if isinstance(body, list) and len(body) > 2 else None)
        service, _ = make_service()
        secs = sections(range(1, 9))
        result = make_store(fake, rows_per_request=8).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 8 and result["failed_count"] == 0
        assert bulk_sizes(fake) == [8, 4, 2, 2, 4, 2, 2]  # 8 -> 4+4 -> 2+2 each, none row by row
        assert_stored_faithfully(fake, secs)

    def test_timeout_on_a_single_row_is_retried_then_reported(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("57014", "statement timeout") if any(r["section_id"] == 3 for r in body) else None)
        sleeps: list[float] = []
        service, _ = make_service()
        store = make_store(fake, rows_per_request=4, row_retries=2, sleep=sleeps.append)
        result = store.batch_ingest_embeddings(sections(range(1, 5)), service)
        assert result["failed_ids"] == [3] and result["success_count"] == 3
        assert result["failures"][0]["reason"] == "store failed: 57014: statement timeout"
        assert fake.attempts[(3,)] == 3 and sleeps == [0.5, 1.0]

    def test_bad_row_in_a_chunk_falls_back_to_row_by_row(self):
        def fail(body, attempt):
            rows = body if isinstance(body, list) else [body]
            if any(r["section_id"] == 6 for r in rows):
                return api_error("22P02", "invalid input syntax for type vector")
            return None

        fake = FakeSupabase(fail=fail)
        service, _ = make_service()
        secs = sections(range(1, 11))
        result = make_store(fake, rows_per_request=5).batch_ingest_embeddings(secs, service)
        assert result["failed_ids"] == [6] and result["success_count"] == 9
        assert result["failures"][0]["reason"] == "store failed: 22P02: invalid input syntax for type vector"
        singles = sorted(body["section_id"] for _t, body, _k in fake.upserts if isinstance(body, dict))
        assert singles == [6, 7, 8, 9, 10]  # only the failed chunk went row by row
        assert_stored_faithfully(fake, [s for s in secs if s["id"] != 6])
        assert 6 not in fake.rows

    def test_transient_chunk_error_is_retried_as_a_chunk(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503") if attempt == 0 else None)
        sleeps: list[float] = []
        service, _ = make_service()
        result = make_store(fake, rows_per_request=5, sleep=sleeps.append).batch_ingest_embeddings(sections(range(1, 6)), service)
        assert result["success_count"] == 5
        assert bulk_sizes(fake) == [5, 5] and sleeps == [0.5]

    def test_chunk_transient_forever_ends_row_by_row_with_each_id(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("503", "Service Unavailable"))
        service, _ = make_service()
        result = make_store(fake, rows_per_request=3, row_retries=1).batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["failed_ids"] == [1, 2, 3]
        assert all(f["reason"] == "store failed: 503: Service Unavailable" for f in result["failures"])
        assert fake.attempts[(1, 2, 3)] == 2 and all(fake.attempts[i] == 2 for i in (1, 2, 3))

    def test_single_row_chunk_failing_reports_its_id(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("23502", "null value"))
        service, _ = make_service()
        result = make_store(fake, rows_per_request=2).batch_ingest_embeddings(sections([1, 2, 3]), service)
        assert result["failed_ids"] == [1, 2, 3]
        assert all(f["reason"] == "store failed: 23502: null value" for f in result["failures"])


# --- windows and progress ------------------------------------------------------------------


class TestWindows:
    def test_generator_in_windows_matches_a_list(self):
        secs = sections(range(1, 24)) + [{"id": 5, "title": "dup", "content": "x"}, {"id": "bad"}]
        fail = lambda body, attempt: api_error("22P02") if body["section_id"] == 11 else None  # noqa: E731

        list_fake = FakeSupabase(fail=fail)
        service, _ = make_service()
        from_list = make_store(list_fake).batch_ingest_embeddings(list(secs), service)

        consumed: list[int] = []

        def generate():
            for s in secs:
                consumed.append(1)
                yield s

        gen_fake = FakeSupabase(fail=fail)
        service2, api2 = make_service()
        windows: list[int] = []
        store = make_store(gen_fake)
        original = store.write_rows

        def write_rows(rows):
            windows.append(len(consumed))  # how much of the generator was read at each write
            return original(rows)

        store.write_rows = write_rows  # type: ignore[method-assign]
        from_gen = store.batch_ingest_embeddings(generate(), service2, window=5)

        assert from_gen == from_list
        assert_accounted(from_gen, len(secs))
        assert gen_fake.rows == list_fake.rows
        assert windows == [5, 10, 15, 20, 25]  # read a window at a time, not all up front
        assert len(api2.calls) == 5

    def test_progress_totals_increase_to_the_final_counts(self):
        fake = FakeSupabase(fail=lambda body, attempt: api_error("22P02") if body["section_id"] == 4 else None)
        store = make_store(fake)
        store.batch_ingest_embeddings(sections([1, 2]), make_service()[0])
        snapshots: list[tuple[int, ...]] = []

        def progress(p: IngestProgress) -> None:
            snapshots.append((p.seen, p.stored, p.skipped, p.failed, p.tokens, p.embedded_inputs, p.embed_requests, p.done))

        batch = sections(range(1, 13)) + [{"id": 99}]
        result = store.batch_ingest_embeddings(batch, make_service()[0], window=4, progress=progress)
        assert len(snapshots) > 3
        for before, after in zip(snapshots, snapshots[1:]):
            assert all(later >= earlier for earlier, later in zip(before, after)), (before, after)
        seen, stored, skipped, failed, tokens, embedded, requests, done = snapshots[-1]
        assert (seen, stored, skipped, failed, tokens) == (
            13, result["success_count"], result["skipped_count"], result["failed_count"], result["total_tokens"],
        )
        assert done == 13 and (stored, skipped, failed) == (9, 2, 2)
        assert embedded == 10 and requests == 3  # 3..12 embedded; 4 then fails at the store

    @pytest.mark.parametrize("window", [0, -1])
    def test_window_must_be_positive(self, window):
        with pytest.raises(ConfigurationError, match="window"):
            make_store().batch_ingest_embeddings([], make_service()[0], window=window)

    @pytest.mark.parametrize("batch_size", [0, 2049, True, 1.5])
    def test_batch_size_in_range(self, batch_size):
        with pytest.raises(ConfigurationError, match="batch_size"):
            make_store().batch_ingest_embeddings([], make_service()[0], batch_size=batch_size)

    def test_batch_size_bounds_inputs_per_request(self):
        service, api = make_service()
        result = make_store().batch_ingest_embeddings(sections(range(1, 11)), service, batch_size=3)
        assert result["success_count"] == 10
        assert sorted(len(c) for c in api.calls) == [1, 3, 3, 3]


# --- search --------------------------------------------------------------------------------


class TestSearch:
    def test_search_embeds_the_query_and_calls_the_rpc(self):
        fake = FakeSupabase()
        fake.rpc_data = [{"section_id": 3, "title": "Three", "similarity": 0.9}]
        service, api = make_service()
        store = make_store(fake, embedding_service=service)
        hits = store.search("where is three", k=3, threshold=0.5)
        assert hits == [{"section_id": 3, "title": "Three", "similarity": 0.9}]
        assert api.inputs == ["where is three"]
        assert fake.rpcs == [
            ("match_sections", {
                "query_embedding": vector_literal(vector_for("where is three")),
                "match_count": 3,
                "match_threshold": 0.5,
            })
        ]

    def test_search_defaults_and_a_given_service(self):
        fake = FakeSupabase()
        store_service, store_api = make_service()
        given, given_api = make_service()
        store = make_store(fake, embedding_service=store_service, match_function="match_docs")
        assert store.search("q", embedding_service=given) == []
        assert store_api.calls == [] and given_api.inputs == ["q"]
        assert fake.rpcs[0][0] == "match_docs"
        assert fake.rpcs[0][1]["match_count"] == 5 and fake.rpcs[0][1]["match_threshold"] is None

    def test_search_without_a_service_is_a_configuration_error(self):
        fake = FakeSupabase()
        with pytest.raises(ConfigurationError, match="embedding service"):
            make_store(fake).search("q")
        assert fake.rpcs == []


# --- services with only the seed API -------------------------------------------------------


class SeedOnlyService:
    """An embedder with the seed's `batch_generate_embeddings` and no `embed`."""

    model = "seed-model"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[list[str]] = []

    def batch_generate_embeddings(self, texts: list[str], max_batch_size: int | None = None) -> dict[str, Any]:
        self.calls.append(list(texts))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(texts)


class TestSeedApiService:
    def test_all_vectors_stored_in_order(self):
        fake = FakeSupabase()
        service = SeedOnlyService(lambda texts: {"embeddings": [vector_for(t).tolist() for t in texts], "total_tokens": 42})
        secs = sections([1, 2, 3])
        result = make_store(fake).batch_ingest_embeddings(secs, service)
        assert result["success_count"] == 3 and result["total_tokens"] == 42
        assert_stored_faithfully(fake, secs, model="seed-model")

    def test_failed_indices_fail_their_sections_only(self):
        fake = FakeSupabase()

        def answer(texts):
            keep = [0, 2]
            return {
                "embeddings": [vector_for(texts[i]).tolist() for i in keep],
                "indices": keep,
                "failed_indices": [1],
                "errors": {1: "HTTP 400: bad input"},
                "total_tokens": 9,
            }

        result = make_store(fake).batch_ingest_embeddings(sections([1, 2, 3]), SeedOnlyService(answer))
        assert result["success_count"] == 2 and result["failed_ids"] == [2]
        assert result["failures"][0]["reason"] == "embedding failed: HTTP 400: bad input"
        assert_stored_faithfully(fake, [sections([1, 2, 3])[i] for i in (0, 2)], model="seed-model")

    def test_failed_indices_without_indices(self):
        fake = FakeSupabase()
        answer = lambda texts: {"embeddings": [vector_for(texts[1]).tolist()], "failed_indices": [0]}  # noqa: E731
        result = make_store(fake).batch_ingest_embeddings(sections([1, 2]), SeedOnlyService(answer))
        assert result["failed_ids"] == [1] and result["failures"][0]["reason"] == "embedding failed: failed"
        assert_stored_faithfully(fake, sections([2]), model="seed-model")

    def test_raising_service_fails_every_section(self):
        result = make_store().batch_ingest_embeddings(sections([1, 2]), SeedOnlyService(RuntimeError("quota")))
        assert result["failed_ids"] == [1, 2] and result["success_count"] == 0
        assert all(f["reason"] == "embedding failed: RuntimeError: quota" for f in result["failures"])

    def test_fewer_vectors_than_inputs_stores_nothing(self):
        """8 vectors for 10 texts and no indices: nothing says which text each vector is."""
        fake = FakeSupabase()
        answer = lambda texts: {"embeddings": [vector_for(t).tolist() for t in texts[2:]], "failed_indices": []}  # noqa: E731
        result = make_store(fake).batch_ingest_embeddings(sections(range(1, 11)), SeedOnlyService(answer))
        assert result["success_count"] == 0 and result["failed_ids"] == list(range(1, 11))
        assert all("8 vectors for 10" in f["reason"] for f in result["failures"])
        assert fake.rows == {}

    def test_indices_and_embeddings_of_different_lengths_store_nothing(self):
        fake = FakeSupabase()
        answer = lambda texts: {"embeddings": [vector_for(texts[0]).tolist()], "indices": [0, 1]}  # noqa: E731
        result = make_store(fake).batch_ingest_embeddings(sections([1, 2]), SeedOnlyService(answer))
        assert result["success_count"] == 0 and result["failed_ids"] == [1, 2]
        assert fake.rows == {}


# --- the pipeline is the store's base class ------------------------------------------------


class DictStore(SectionStore):
    """The smallest store: the pipeline over a dict, with SectionStore's own clock."""

    table = "mem"

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}

    def fetch_hashes(self, section_ids):
        return {i: (self.rows[i].content_hash, self.rows[i].model) for i in section_ids if i in self.rows}

    def write_rows(self, rows):
        self.rows.update({row.section_id: row for row in rows})
        return {}

    def search_vector(self, vector, k=5, threshold=None):
        return []


def test_pipeline_on_another_store_uses_the_base_clock_and_float32_rows():
    store = DictStore()
    service, _ = make_service()
    secs = sections([1, 2])
    result = store.batch_ingest_embeddings(secs, service)
    assert result["success_count"] == 2
    for s in secs:
        row = store.rows[s["id"]]
        assert row.embedding == vector_for(section_text(s["title"], s["content"]))
        assert row.embedding.typecode == "f"
        assert row.updated_at.endswith("+00:00")
    assert store.batch_ingest_embeddings(secs, service)["skipped_ids"] == [1, 2]
