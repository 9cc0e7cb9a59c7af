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
    from .embed.async_service import AsyncEmbeddingService
    from .stores.postgres_async import AsyncPostgresStore
    from .stores.supabase_async import AsyncSupabaseStore
    from .embedded.server import EmbeddedPostgres
    from .embed.service import EmbeddingBatch, EmbeddingService
    from .stores.ingest import IngestInterrupted, IngestProgress, SectionStore, section_text
    from .stores.postgres import PostgresStore
    from .engine.rows import Row
    from .stores.schema import render_schema
    from .stores.supabase import SupabaseStore

_LAZY = {
    "EmbeddingService": "embed.service",
    "EmbeddingBatch": "embed.service",
    "AsyncEmbeddingService": "embed.async_service",
    "AsyncPostgresStore": "stores.postgres_async",
    "AsyncSupabaseStore": "stores.supabase_async",
    "IngestInterrupted": "stores.ingest",
    "SupabaseStore": "stores.supabase",
    "PostgresStore": "stores.postgres",
    "EmbeddedPostgres": "embedded",
    "SectionStore": "stores.ingest",
    "IngestProgress": "stores.ingest",
    "section_text": "stores.ingest",
    "Row": "engine.rows",
    "render_schema": "stores.schema",
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
