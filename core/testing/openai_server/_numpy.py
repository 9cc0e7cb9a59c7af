"""numpy for the server's vector maths, or a MissingDependencyError naming the extra to install."""

from __future__ import annotations

from core.errors import MissingDependencyError

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is in the dev extra
    raise MissingDependencyError("numpy", "server", "the local OpenAI-compatible server") from None

__all__ = ["numpy"]
