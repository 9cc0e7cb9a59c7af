"""The bad-input table: what every kind of bad input does, at each layer, among good neighbours.

One row per kind of input (None, non-str, bytes, "", whitespace, > 8191 tokens, NUL,
lone surrogates, duplicate ids, str vs int ids, non-dict sections...), checked at:

- ``EmbeddingService.embed`` (the engine: never raises, a code per index);
- ``EmbeddingService.batch_generate_embeddings`` (the seed contract: raises for a
  non-string or empty text naming its index, else reports per index);
- ``batch_ingest_embeddings`` (sections: each bad one fails alone with index, id,
  code and reason; its good neighbours are stored, each with its own vector).

Everywhere: a bad input never reaches the API (the fake client refuses to see one),
and every good neighbour gets exactly its own vector.
"""

from __future__ import annotations

import array
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest

from core import EmbeddingService
from core.errors import EmptyInputError, InvalidInputTypeError
from core.stores.ingest import SectionStore, content_hash, section_text
from core.engine.rows import Row

LONG = "token " * 9000  # 9,000 tokens: over the 8191-token input limit
WHITESPACE = " \n\t "


def vector_of(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [b / 255.0 for b in digest[:8]]


class FakeEmbeddings:
    """``client.embeddings``: a vector per input derived from its text; refuses anything the API would."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def create(self, *, model: str, input: list[Any], encoding_format: str, **_: Any) -> dict[str, Any]:
        for text in input:
            assert isinstance(text, str) and text, f"a bad input reached the API: {text!r}"
            text.encode("utf-8")  # a lone surrogate would make the SDK's JSON fail for the whole request
        self.seen.extend(input)
        return {"data": [{"index": i, "embedding": vector_of(t)} for i, t in enumerate(input)],
                "usage": {"prompt_tokens": len(input)}}


class FakeClient:
    def __init__(self) -> None:
        self.embeddings = FakeEmbeddings()


def make_service(**options: Any) -> EmbeddingService:
    return EmbeddingService(client=FakeClient(), max_concurrency=1, max_retries=0, sleep=lambda s: None, **options)


# --- the engine and the seed contract ---------------------------------------------------------

# input, embed()'s code (None: embedded), what batch_generate_embeddings does (None: embedded,
# "failed": in failed_indices, an exception class: raised naming the index)
TEXT_TABLE: list[tuple[str, Any, str | None, Any]] = [
    ("None", None, "invalid_type", InvalidInputTypeError),
    ("int", 42, "invalid_type", InvalidInputTypeError),
    ("float", 1.5, "invalid_type", InvalidInputTypeError),
    ("bytes", b"bytes are not text", "invalid_type", InvalidInputTypeError),
    ("list", ["a", "list"], "invalid_type", InvalidInputTypeError),
    ("empty", "", "empty", EmptyInputError),
    ("whitespace", WHITESPACE, None, None),  # the API embeds whitespace: so do we
    ("over 8191 tokens", LONG, "too_long", "failed"),
    ("NUL", "before\x00after", None, None),  # fine for the API (only PostgreSQL text refuses it)
    ("lone high surrogate", "lone \ud800 surrogate", "invalid_unicode", "failed"),
    ("lone low surrogate at the end", "ends with \udfff", "invalid_unicode", "failed"),
    ("surrogate pair, valid", "emoji \U0001f642 ok", None, None),
]


@pytest.mark.parametrize(("value", "code"), [(row[1], row[2]) for row in TEXT_TABLE], ids=[r[0] for r in TEXT_TABLE])
def test_embed_fails_the_bad_input_alone(value: Any, code: str | None) -> None:
    service = make_service()
    texts = ["good one", value, "good two"]
    batch = service.embed(texts)
    for i in (0, 2):
        assert list(batch.vectors[i]) == list(array.array("f", vector_of(texts[i])))
    if code is None:
        assert list(batch.vectors[1]) == list(array.array("f", vector_of(value)))
        assert not batch.errors
    else:
        assert 1 not in batch.vectors and batch.codes == {1: code}, batch.errors
    assert all(isinstance(t, str) for t in service.client.embeddings.seen)


@pytest.mark.parametrize(("value", "outcome"), [(row[1], row[3]) for row in TEXT_TABLE], ids=[r[0] for r in TEXT_TABLE])
def test_batch_generate_embeddings_contract(value: Any, outcome: Any) -> None:
    service = make_service(output="list")
    texts = ["good one", value, "good two"]
    if isinstance(outcome, type):
        with pytest.raises(outcome) as caught:
            service.batch_generate_embeddings(texts)
        assert caught.value.index == 1 and "index 1" in str(caught.value)
        assert not service.client.embeddings.seen  # refused before any request
        return
    result = service.batch_generate_embeddings(texts)
    if outcome == "failed":
        assert result["failed_indices"] == [1] and result["indices"] == [0, 2] and 1 in result["errors"]
    else:
        assert result["failed_indices"] == [] and result["indices"] == [0, 1, 2]
    for vector, index in zip(result["embeddings"], result["indices"]):
        assert vector == pytest.approx(vector_of(texts[index]), abs=1e-7)


def test_duplicate_texts_are_sent_once_and_each_copy_gets_the_vector() -> None:
    service = make_service()
    batch = service.embed(["same", "other", "same"])
    assert service.client.embeddings.seen == ["same", "other"]
    assert batch.vectors[0] == batch.vectors[2] and not batch.errors


# --- sections ----------------------------------------------------------------------------------


class MemoryStore(SectionStore):
    """A store in a dict: what `write_rows` got, by id (a second write of an id is an error here)."""

    table = "memory"

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}

    def fetch_hashes(self, section_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        return {i: (self.rows[i].content_hash, self.rows[i].model) for i in section_ids if i in self.rows}

    def write_rows(self, rows: Sequence[Row]) -> dict[int, str]:
        for row in rows:
            assert row.section_id not in self.rows, f"section {row.section_id} written twice"
            self.rows[row.section_id] = row
        return {}

    def search_vector(self, vector: Sequence[float], k: int = 5, threshold: float | None = None) -> list[dict[str, Any]]:
        return []


def good(section_id: int) -> dict[str, Any]:
    return {"id": section_id, "title": f"Title {section_id}", "content": f"content of section {section_id}"}


# (name, the bad section, failure code, words its reason must contain)
SECTION_TABLE: list[tuple[str, Any, str, str]] = [
    ("None", None, "invalid_section", "must be a dict"),
    ("a string", "id,title,content", "invalid_section", "must be a dict"),
    ("a list", [7, "t", "c"], "invalid_section", "must be a dict"),
    ("missing id", {"title": "t", "content": "c"}, "invalid_section", "missing 'id'"),
    ("empty str id", {"id": " ", "title": "t", "content": "c"}, "invalid_section", "'id' is an empty string"),
    ("float id", {"id": 7.0, "title": "t", "content": "c"}, "invalid_section", "'id' must be an integer"),
    ("bool id", {"id": True, "title": "t", "content": "c"}, "invalid_section", "'id' must be an integer"),
    ("id beyond bigint", {"id": 2**63, "title": "t", "content": "c"}, "invalid_section", "bigint"),
    ("unhashable id", {"id": [7], "title": "t", "content": "c"}, "invalid_section", "'id' must be an integer"),
    ("missing content", {"id": 7, "title": "t"}, "invalid_section", "missing 'content'"),
    ("None title", {"id": 7, "title": None, "content": "c"}, "invalid_section", "'title' must be a string"),
    ("bytes content", {"id": 7, "title": "t", "content": b"c"}, "invalid_section", "'content' must be a string"),
    ("int content", {"id": 7, "title": "t", "content": 5}, "invalid_section", "'content' must be a string"),
    ("empty title and content", {"id": 7, "title": "", "content": ""}, "invalid_section", "both empty"),
    ("whitespace only", {"id": 7, "title": " ", "content": WHITESPACE}, "invalid_section", "both empty"),
    ("NUL in content", {"id": 7, "title": "t", "content": "a\x00b"}, "invalid_section", "NUL"),
    ("NUL in title", {"id": 7, "title": "t\x00", "content": "c"}, "invalid_section", "NUL"),
    ("lone surrogate in title", {"id": 7, "title": "t\ud800", "content": "c"}, "invalid_section", "lone surrogate"),
    ("lone surrogate in content", {"id": 7, "title": "t", "content": "c\udc00"}, "invalid_section", "lone surrogate"),
    ("over 8191 tokens", {"id": 7, "title": "t", "content": LONG}, "embedding_failed", "8191"),
    ("duplicate id", good(1), "duplicate_id", "duplicate id"),  # id 1 is the first good neighbour's
]


@pytest.mark.parametrize(("bad", "code", "words"), [r[1:] for r in SECTION_TABLE], ids=[r[0] for r in SECTION_TABLE])
@pytest.mark.parametrize("window", [8192, 2])  # all in one window, or the bad one in a window of its own
def test_a_bad_section_fails_alone(bad: Any, code: str, words: str, window: int) -> None:
    store, service = MemoryStore(), make_service()
    sections = [good(1), good(2), bad, good(3), good(4)]
    report = store.batch_ingest_embeddings(sections, service, window=window)
    assert report["success_count"] == 4 and report["failed_count"] == 1 and report["skipped_count"] == 0
    (failure,) = report["failures"]
    assert failure["index"] == 2 and failure["code"] == code and words in failure["reason"], failure
    expected_id = bad.get("id") if isinstance(bad, dict) and isinstance(bad.get("id"), (int, str, float)) else None
    assert failure["id"] == expected_id and report["failed_ids"] == [expected_id]
    assert sorted(store.rows) == [1, 2, 3, 4]
    for section in (good(1), good(2), good(3), good(4)):
        row = store.rows[section["id"]]
        text = section_text(section["title"], section["content"])
        assert list(row.embedding) == list(array.array("f", vector_of(text)))  # its own vector
        assert row.content_hash == content_hash(text)
    for text in service.client.embeddings.seen:
        assert "\x00" not in text and text != LONG and text.encode("utf-8")


def test_str_and_int_ids_are_different_ids_and_the_readers_normalise_them() -> None:
    """String ids are valid since the corpus store (issue #17), but a table keyed by bigint refuses
    ``"7"`` alone (it does not fit); a text table stores ``7`` and ``"7"`` as the same row, so the
    second is a duplicate. The file readers turn ``"7"`` into 7 first, so in a file ``7`` and ``"7"``
    are the same section: the second is a duplicate."""
    from core.readers import to_section

    store, service = MemoryStore(), make_service()
    store.table_id_type = "bigint"
    report = store.batch_ingest_embeddings([good(7), {**good(7), "id": "7"}], service)
    assert [f["code"] for f in report["failures"]] == ["invalid_section"]
    assert "this table's ids are bigint" in report["failures"][0]["reason"]
    store, service = MemoryStore(), make_service()
    store.table_id_type = "text"
    report = store.batch_ingest_embeddings([good(7), {**good(7), "id": "7"}], service)
    assert [(f["index"], f["code"]) for f in report["failures"]] == [(1, "duplicate_id")]
    from_file = [to_section({**good(7), "id": "7"}), to_section({**good(7), "id": 7.0}), to_section(good(7))]
    assert [s["id"] for s in from_file] == [7, 7, 7]
    store, service = MemoryStore(), make_service()
    report = store.batch_ingest_embeddings(from_file, service)
    assert report["success_count"] == 1
    assert [(f["index"], f["code"]) for f in report["failures"]] == [(1, "duplicate_id"), (2, "duplicate_id")]


def test_every_bad_section_at_once() -> None:
    """The whole table in one call, interleaved with good sections: each bad one fails alone, in order."""
    store, service = MemoryStore(), make_service()
    sections: list[Any] = []
    expected: list[tuple[int, str]] = []
    for n, (_, bad, code, _words) in enumerate(SECTION_TABLE):
        sections.append(good(100 + n))
        if isinstance(bad, dict) and type(bad.get("id")) is int and bad["id"] in (1, 7):
            bad = {**bad, "id": 1000 + n} if code != "duplicate_id" else {**bad, "id": 100 + n}
        expected.append((len(sections), code))
        sections.append(bad)
    report = store.batch_ingest_embeddings(sections, service, window=5)
    assert [(f["index"], f["code"]) for f in report["failures"]] == expected
    assert report["success_count"] == len(SECTION_TABLE) == len(store.rows)
    assert report["success_count"] + report["failed_count"] == len(sections)
