"""Test helpers: a local OpenAI-compatible embeddings server (see `core.testing.openai_server`).

Names are resolved lazily: ``import core.testing`` costs nothing and needs no
numpy; the first name used imports the server package (which needs numpy, the
``server`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_CONFIG",
    "FAULT_NAMES",
    "MODEL_DIMENSIONS",
    "FakeOpenAIServer",
    "expected_embedding",
    "expected_embeddings",
    "format_duration",
]

if TYPE_CHECKING:
    from .openai_server import (
        DEFAULT_CONFIG,
        FAULT_NAMES,
        MODEL_DIMENSIONS,
        FakeOpenAIServer,
        expected_embedding,
        expected_embeddings,
        format_duration,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import openai_server

        return getattr(openai_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
