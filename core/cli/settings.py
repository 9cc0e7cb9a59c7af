"""Model, vector size, table name and the embeddings service, as the options ask for them."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import ConfigurationError
from ..limits import DEFAULT_MODEL, model_dimensions
from .console import SECRETS
from .status import UsageError

__all__ = ["check_table", "dimensions", "make_service", "model", "require_key"]


def model(args: argparse.Namespace) -> str:
    return str(args.model or DEFAULT_MODEL)


def dimensions(args: argparse.Namespace) -> int:
    """--dimensions, else the model's vector size."""
    if args.dimensions is not None:
        return int(args.dimensions)
    size = model_dimensions(model(args))
    if size is None:
        raise UsageError(f"unknown vector size for model {model(args)!r}: pass --dimensions")
    return size


def check_table(args: argparse.Namespace) -> None:
    """Refuse a bad --table / --dimensions before anything starts."""
    from ..stores.schema import validate_dimensions, validate_identifier

    try:
        validate_identifier(args.table, "table")
        if args.dimensions is not None:
            validate_dimensions(args.dimensions)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def require_key() -> None:
    """The OpenAI key is set (and known to the scrubber), or a UsageError saying how to set it."""
    key = os.environ.get("OPENAI_API_KEY")
    SECRETS.add(key)
    SECRETS.add_dsn(os.environ.get("OPENAI_BASE_URL"))  # a user:password@ in it is a credential too
    if not key:
        raise UsageError(
            "no OpenAI API key: set OPENAI_API_KEY (for a local OpenAI-compatible server, set "
            "OPENAI_BASE_URL and any non-empty key)"
        )


def make_service(model_name: str, **options: Any) -> Any:
    """The `EmbeddingService` for `model_name` with `options`; the key comes from the environment."""
    require_key()
    from ..embed.service import EmbeddingService  # the openai SDK (~1 s): only for commands that embed

    try:
        return EmbeddingService(model=model_name, **options)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
