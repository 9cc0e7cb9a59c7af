"""Document sections -> OpenAI embeddings -> Supabase / Postgres + pgvector.

The public API, importable from here: ``from core import PostgresStore``. Every
name is imported on first use (PEP 562), so ``import core`` and ``python -m core
--help`` do not pay for loading the openai and supabase SDKs (~1.2 s) until they
are needed. `_HOME` is the one list of public names (and the module each comes
from); ``__all__`` and ``dir(core)`` are made from it.
"""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import Any as _Any

_HOME = {
    # the embedding services
    "EmbeddingService": "embed.service",
    "EmbeddingBatch": "embed.service",
    "AsyncEmbeddingService": "embed.async_service",
    # the stores and their ingest
    "SupabaseStore": "stores.supabase",
    "PostgresStore": "stores.postgres",
    "AsyncPostgresStore": "stores.postgres_async",
    "AsyncSupabaseStore": "stores.supabase_async",
    "SectionStore": "stores.ingest",
    "IngestProgress": "stores.ingest",
    "IngestInterrupted": "stores.ingest",
    "section_text": "stores.ingest",
    "Row": "engine.rows",
    "render_schema": "stores.schema",
    # the embedded PostgreSQL
    "EmbeddedPostgres": "embedded",
    # errors
    "CoreError": "errors",
    "ConfigurationError": "errors",
    "MissingDependencyError": "errors",
    "InvalidSectionError": "errors",
    "InvalidInputError": "errors",
    "InvalidInputTypeError": "errors",
    "EmptyInputError": "errors",
    "InputTooLongError": "errors",
    "EmbeddingAPIError": "errors",
    "AllRequestsFailedError": "errors",
    "EndpointError": "errors",
    "StoreError": "errors",
}
"""Public name -> the module (under `core`) it is defined in."""

__all__ = list(_HOME)  # noqa: PLE0605 - made from _HOME, the one list


def __getattr__(name: str) -> _Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
