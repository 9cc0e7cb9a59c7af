"""Document sections -> OpenAI embeddings -> Supabase / Postgres + pgvector.

Public API re-exported here; see README.md for a quickstart.
"""

from __future__ import annotations

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

__all__ = [
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
