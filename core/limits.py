"""Named limits of the OpenAI embeddings API and this library's defaults, in one place.

The API's limits have moved before (the per-request token cap appeared in 2024);
every one of them is a constructor argument of `EmbeddingService` too.
"""

from __future__ import annotations

# --- The embeddings API's documented limits -------------------------------------------
MAX_INPUTS_PER_REQUEST = 2048
"""At most this many inputs in one `/v1/embeddings` request."""

MAX_TOKENS_PER_REQUEST = 300_000
"""At most this many tokens summed over all inputs of one request (HTTP 400 beyond)."""

MAX_TOKENS_PER_INPUT = 8191
"""At most this many tokens in one input for text-embedding-3-* and ada-002."""

# --- Models ----------------------------------------------------------------------------
DEFAULT_MODEL = "text-embedding-3-small"
MODEL_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


def model_dimensions(model: str, dimensions: int | None = None) -> int | None:
    """Output dimensions of `model` (or `dimensions` when set); None if unknown."""
    return dimensions or MODEL_DIMENSIONS.get(model)


TOKENIZER_ENCODING = "cl100k_base"
"""The tokenizer of every model above."""

# --- Retries and pacing ----------------------------------------------------------------
DEFAULT_MAX_RETRIES = 6
INITIAL_RETRY_DELAY = 0.5
"""Seconds before the first retry; doubles each attempt, with jitter."""
MAX_RETRY_DELAY = 20.0
"""Cap on a computed backoff delay, in seconds."""
MAX_RETRY_AFTER = 120.0
"""Cap on a server-sent `retry-after` / `retry-after-ms`, in seconds."""
DEFAULT_REQUEST_TIMEOUT = 60.0
"""Seconds before a hung request is cut (and retried)."""
DEFAULT_MAX_CONCURRENCY = 8
"""Embeddings requests in flight at once."""
PROBE_REQUEST_TOKENS = 8192
"""While the account's limits are unknown, the first request carries at most this many
tokens: its answer's `x-ratelimit-*` headers set the pace for the rest, and a small
request learns them in ~0.2 s instead of a full 300k-token request's ~1.3 s. (2048
short texts of a few tokens still fit, so the seed's call counts hold.)"""
REQUEST_SHARE_OF_BUDGET = 1 / 8
"""Once the tokens-per-minute budget is known, requests are packed to this share of it
(never above the API's cap), so ~8 requests fill the bucket and several stay in flight."""

# --- Stores and ingest -----------------------------------------------------------------
DEFAULT_TABLE = "section_embeddings"
"""The table every store writes to and the schema creates, unless told otherwise."""
DEFAULT_MATCH_FUNCTION = "match_sections"
"""The search function the schema creates (`match_sections(query_embedding, match_count, match_threshold)`)."""
INGEST_WINDOW = 8192
"""Sections validated and looked up per window: bounds memory on any corpus size."""
SUPABASE_MAX_CONCURRENCY = 16
"""PostgREST upserts in flight at once: enough to hide ~20 ms of round trip per row
(supabase-py keeps 20 keep-alive connections; more would reopen connections)."""
SUPABASE_ROW_RETRIES = 2
"""Retries of a Supabase row (or chunk) after a transient error."""
POSTGRES_POOL_SIZE = 8
"""Most connections one `PostgresStore` / `AsyncPostgresStore` opens: each concurrent caller
(thread or task) writes or searches on its own connection, inside its own transactions, so a
store shared by an app's requests never mixes one caller's transaction with another's. 8 is the
embedding drivers' default `max_concurrency` (one writer per request in flight); one stays open
between calls."""
SYNC_MAX_DELETE_FRACTION = 0.10
"""A sync deletes at most this share of its source's rows unless told otherwise: a loader that
returned a subset of the source (LangChain's docs warn of exactly this) must not wipe the rest."""
SYNC_DELETE_CHUNK = 1000
"""Ids deleted per transaction by a sync: a crash loses no more than one chunk's progress."""
SYNC_LOCK_TTL_SECONDS = 600
"""Where a sync's lock is a row (Supabase: no session to hold an advisory lock across requests),
it expires this long after it was last renewed (each window renews it), so a killed run's lock frees."""
POSTGRES_MAX_ROWS_PER_CHUNK = 9000
"""A statement takes at most 65,535 parameters: 9,000 rows x 7 columns stays under it."""

# --- The embedded PostgreSQL from the command line ----------------------------------------
DB_STOP_SECONDS = 30.0
"""How long ``python -m core db --stop`` waits for the embedded server to finish its fast shutdown
(it rolls back open transactions and writes a checkpoint: well under a second on an idle server)."""
