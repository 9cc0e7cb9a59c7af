"""A local OpenAI-compatible `/v1/embeddings` server for tests and benchmarks.

Nothing here touches the internet. The server runs as its own process on
127.0.0.1 and behaves, as a client sees it, like the real embeddings API:
bearer auth, the documented request limits and their error bodies, exact
cl100k_base token counts (`core.engine.tokens`), `float` / `base64` encodings,
shortened `dimensions`, rate-limit headers and continuously refilling RPM/TPM
buckets, plus configurable latency and injectable faults.

Run it by hand::

    python -m core.testing.openai_server --port 0 --config '{"tpm": 100000}'

It prints ``LISTENING http://127.0.0.1:PORT`` as its first stdout line. From
Python use :class:`FakeOpenAIServer` (a context manager that starts and stops
the process). Each returned vector is :func:`expected_embedding` of its text,
so tests can check that every vector belongs to its input.

Control plane on the same port: ``GET/POST /_control/config`` (POST merges JSON
into the config), ``GET /_control/stats`` and ``POST /_control/reset``.

Modules, one job each: `config` (models, config keys, validation), `vectors`
(deterministic vectors), `wire` (vectors as JSON floats or base64), `faults`,
`ratelimit` (RPM/TPM buckets, their 429s and headers), `state` (what request
threads share), `api` (what an endpoint gets and answers), `embeddings` (the
``/v1/embeddings`` endpoint), `server` (HTTP, route table, control plane,
`main`), `process` (`FakeOpenAIServer`). Needs numpy (the ``server`` extra).
"""

from __future__ import annotations

from .config import DEFAULT_CONFIG, MODEL_DIMENSIONS
from .faults import FAULT_NAMES
from .process import FakeOpenAIServer
from .ratelimit import format_duration
from .server import main
from .vectors import WORD_RE, embed, expected_embedding, expected_embeddings, word_codes
from .wire import base64_rows, float_json_rows

__all__ = [
    "DEFAULT_CONFIG",
    "FAULT_NAMES",
    "MODEL_DIMENSIONS",
    "FakeOpenAIServer",
    "expected_embedding",
    "expected_embeddings",
    "format_duration",
    "main",
]

# Internal names the test suite and benchmarks use under their old, private spelling.
_WORD_RE = WORD_RE
_word_codes = word_codes
_embed = embed
_base64_rows = base64_rows
_float_json_rows = float_json_rows
