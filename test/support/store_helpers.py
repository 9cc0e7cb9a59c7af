"""What the store tests share: sections, a service over the fake OpenAI client, a store over the
fake Supabase, and the checks that every section is accounted for and stored faithfully."""

from __future__ import annotations

import array
import hashlib
from typing import Any

from fake_openai_client import FakeOpenAIClient
from fake_supabase import KEY, URL, FakeSupabase

from core.embedding_service import EmbeddingService
from core.stores.ingest import section_text
from core.engine.rows import vector_literal
from core.supabase_store import SupabaseStore
from core.engine.tokens import count_tokens

__all__ = [
    "DIMS",
    "MODEL",
    "NOW",
    "assert_accounted",
    "assert_stored_faithfully",
    "make_service",
    "make_store",
    "parse_literal",
    "sections",
    "vector_for",
]

MODEL = "text-embedding-3-small"
DIMS = 8
NOW = "2026-02-08T00:00:00+00:00"


def vector_for(text: str, dims: int = DIMS) -> array.array:
    """The float32 vector the store tests' fake API answers for `text`: a function of the text alone."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return array.array("f", [(b - 127.5) / 37.0 for b in digest[:dims]])


def parse_literal(literal: str) -> array.array:
    """pgvector text `[x,y,...]` back to float32, as the database would read it."""
    assert literal.startswith("[") and literal.endswith("]"), literal
    return array.array("f", [float(x) for x in literal[1:-1].split(",")])


def make_service(model: str = MODEL, **kwargs: Any) -> tuple[EmbeddingService, FakeOpenAIClient]:
    """A real EmbeddingService over a FakeOpenAIClient answering `vector_for` and exact token counts."""
    api = FakeOpenAIClient(vector=vector_for, dims=DIMS, usage=lambda texts: sum(count_tokens(t) for t in texts))
    kwargs.setdefault("sleep", lambda _s: None)
    kwargs.setdefault("dimensions", DIMS)  # what the fake answers (the store's preflight checks the width)
    return EmbeddingService(client=api, model=model, **kwargs), api


def make_store(fake: FakeSupabase | None = None, **kwargs: Any) -> SupabaseStore:
    """A SupabaseStore over `fake` (client face), with no real sleeps and a fixed clock (`NOW`)."""
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
