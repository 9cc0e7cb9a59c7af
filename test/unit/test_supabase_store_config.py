"""SupabaseStore construction (URL, key, names, limits, secrets) and search.

The supabase client is `FakeSupabase` (test/support/fake_supabase.py), the
suite's one Supabase fake, here through its client face: it keeps the rows it
was given, so a test can check what was stored under which id. The embeddings
come from a real `EmbeddingService` over `FakeOpenAIClient`, whose vectors
depend on the text, so a vector stored under the wrong section is caught. No
network, no real sleeps: every retry sleeps through an injected recorder. The
wire format of the same calls (real supabase-py over respx, answered by the
same fake) is in test_supabase_http.py.
"""

from __future__ import annotations

import logging

import pytest

from core.errors import ConfigurationError
from core.engine.rows import vector_literal
from core.supabase_store import SupabaseStore
from fake_supabase import KEY, URL, FakeSupabase, api_error
from store_helpers import (
    make_service,
    make_store,
    sections,
    vector_for,
)


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


# --- search --------------------------------------------------------------------------------


class TestSearch:
    def test_search_embeds_the_query_and_calls_the_rpc(self):
        fake = FakeSupabase()
        fake.rpc_data = [{"section_id": 3, "title": "Three", "similarity": 0.9}]
        service, api = make_service()
        store = make_store(fake, embedding_service=service)
        hits = store.search("where is three", k=3, threshold=0.5)
        assert hits == [{"id": 3, "section_id": 3, "title": "Three", "similarity": 0.9}]  # `id`: issue #17
        assert api.texts == ["where is three"]
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
        assert store_api.calls == [] and given_api.texts == ["q"]
        assert fake.rpcs[0][0] == "match_docs"
        assert fake.rpcs[0][1]["match_count"] == 5 and fake.rpcs[0][1]["match_threshold"] is None

    def test_search_without_a_service_is_a_configuration_error(self):
        fake = FakeSupabase()
        with pytest.raises(ConfigurationError, match="embedding service"):
            make_store(fake).search("q")
        assert fake.rpcs == []
