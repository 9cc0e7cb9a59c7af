"""Document sections -> OpenAI embeddings -> Supabase / Postgres + pgvector.

Public API re-exported here; see README.md for a quickstart. The classes are
imported on first use (PEP 562), so ``import core`` and ``python -m core --help``
do not pay for loading the openai and supabase SDKs (~1.2 s) until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AllRequestsFailedError,
    ConfigurationError,
    CoreError,
    EmbeddingAPIError,
    EmptyInputError,
    EndpointError,
    InputTooLongError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidSectionError,
    MissingDependencyError,
    StoreError,
)

if TYPE_CHECKING:
    from .async_embedding_service import AsyncEmbeddingService
    from .async_postgres_store import AsyncPostgresStore
    from .async_supabase_store import AsyncSupabaseStore
    from .embedded import EmbeddedPostgres
    from .embedding_service import EmbeddingBatch, EmbeddingService
    from .ingest import IngestInterrupted, IngestProgress, SectionStore, section_text
    from .postgres_store import PostgresStore
    from .rows import Row
    from .schema import render_schema
    from .supabase_store import SupabaseStore

_LAZY = {
    "EmbeddingService": "embedding_service",
    "EmbeddingBatch": "embedding_service",
    "AsyncEmbeddingService": "async_embedding_service",
    "AsyncPostgresStore": "async_postgres_store",
    "AsyncSupabaseStore": "async_supabase_store",
    "IngestInterrupted": "ingest",
    "SupabaseStore": "supabase_store",
    "PostgresStore": "postgres_store",
    "EmbeddedPostgres": "embedded",
    "SectionStore": "ingest",
    "IngestProgress": "ingest",
    "section_text": "ingest",
    "Row": "rows",
    "render_schema": "schema",
}

__all__ = [
    "EmbeddingService",
    "AsyncEmbeddingService",
    "AsyncPostgresStore",
    "AsyncSupabaseStore",
    "EmbeddingBatch",
    "IngestInterrupted",
    "SupabaseStore",
    "PostgresStore",
    "EmbeddedPostgres",
    "SectionStore",
    "IngestProgress",
    "Row",
    "render_schema",
    "section_text",
    "AllRequestsFailedError",
    "ConfigurationError",
    "CoreError",
    "EmbeddingAPIError",
    "EmptyInputError",
    "EndpointError",
    "InputTooLongError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "InvalidSectionError",
    "MissingDependencyError",
    "StoreError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
