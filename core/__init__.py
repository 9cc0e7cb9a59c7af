"""Document sections -> OpenAI embeddings -> Supabase / Postgres + pgvector.

Public API re-exported here; see README.md for a quickstart.
"""

from __future__ import annotations

from .embedding_service import EmbeddingBatch, EmbeddingService
from .errors import (
    AllRequestsFailedError,
    ConfigurationError,
    CoreError,
    EmbeddingAPIError,
    EmptyInputError,
    InputTooLongError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidSectionError,
    MissingDependencyError,
    StoreError,
)
from .ingest import IngestProgress, SectionStore, section_text
from .postgres_store import PostgresStore
from .rows import Row
from .schema import render_schema
from .supabase_store import SupabaseStore

__all__ = [
    "EmbeddingService",
    "EmbeddingBatch",
    "SupabaseStore",
    "PostgresStore",
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
    "InputTooLongError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "InvalidSectionError",
    "MissingDependencyError",
    "StoreError",
]
