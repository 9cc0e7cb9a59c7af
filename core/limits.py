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
ENDPOINT_DOWN_REFUSALS = 4
ENDPOINT_DOWN_SECONDS = 5.0
"""An endpoint that has answered before and then refuses this many connections in a row
(no answer in between) for at least this many seconds is down: the run stops (`EndpointError`,
CLI exit 2) instead of failing every remaining section. Both, so a restart blip of a second
(8 requests in flight are refused at once) is ridden out, while a dead server is given up on
after ~5-8 s (backoff 0.5+1+2+4 s) instead of the 126 s its retries took (issue #15)."""
MAX_OUTAGE_SECONDS = 60.0
"""Seconds of nothing but failed attempts (5xx, timeouts, refused or broken connections; 429s
do not count, they are waited out) after which the run stops with `EndpointError`. One
request's own retries span 31.5 s of backoff (0.5+1+...+16); twice that without a single
success is an endpoint that is down, not flaky. Constructor argument `max_outage`."""
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

PROBE_POLL_SECONDS = 0.005
"""While the probe request is out, how often a driver looks whether its rate-limit headers arrived
(the HTTP response hook sees them before the body is read): 5 ms, against a probe's ~0.2 s."""
MAX_VECTOR_DIMENSIONS = 16000
"""pgvector's limit for a `vector` column, and so for `dimensions`."""

# --- Stores and ingest -----------------------------------------------------------------
DEFAULT_TABLE = "section_embeddings"
"""The table every store writes to and the schema creates, unless told otherwise."""
DEFAULT_MATCH_FUNCTION = "match_sections"
"""The search function the schema creates for the default table (`match_<table>` for others)."""
SEARCH_EF_SEARCH = 400
"""`hnsw.ef_search` of the schema's search functions unless a caller gives one: candidates an
HNSW scan keeps. On 100,000 clustered 1536-dim rows (bench/bench_search.py), pgvector's own 40
reached recall@10 0.91-0.94 and 200 0.958-0.986 depending on the build (some queries found none of
their 10 neighbours: the greedy descent ended in another cluster); 300-400 found them all on the
builds probed. See the README's search table for its latency."""
SEARCH_EF_SEARCH_FILTERED = 800
"""`hnsw.ef_search` with a metadata filter: each round of pgvector's iterative scan keeps this
many candidates, most of which the filter drops (a 1-in-10 filter on the same table: recall@10
0.95 at 200, 0.96-0.99 at 400, 0.998 at 800)."""
SEARCH_EXACT_BELOW_MATCHES = 1_000
"""A filter matching fewer rows is answered exactly, through its GIN index: a 1-in-200 filter on
100,000 rows took 5 ms and found every true neighbour, against 50-65 ms through HNSW's iterative
scan. Counting up to this many matches is what every filtered search pays first (~1 ms)."""
SEARCH_EXACT_BELOW_ROWS = 10_000
"""A table of fewer rows is searched exactly (every distance computed) rather than through its
HNSW index: exact costs a few ms there, and HNSW's graph can miss rows (on 90 rows of the try-out
server's sparse vectors it missed a section's own text)."""
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
REBUILD_INDEX_MIN_SHARE = 0.2
"""A load of at least this share of a table's rows drops its HNSW index first and builds it again
after (`--rebuild-index auto`). Measured on this machine: 20,000 rows went into an empty table at
601 rows/s (load, then one build) but into the same table, indexed, at 125 rows/s (every row one by
one into the graph), about 5x the cost per row of a build; rebuilding N + n rows costs about what
inserting n rows does when n is N/4 to N/5, so from a fifth of the table on, rebuilding wins."""
POSTGRES_MAX_ROWS_PER_CHUNK = 9000
"""A statement takes at most 65,535 parameters: 9,000 rows x 7 columns stays under it."""

# --- The Batch API ---------------------------------------------------------------------
BATCH_MAX_REQUESTS = 50_000
"""Requests (lines) in one batch input file: the Batch API's documented cap."""
BATCH_MAX_INPUTS = 50_000
"""Embedding inputs across all requests of one batch: the cap the API applies to embeddings batches."""
BATCH_MAX_FILE_BYTES = 200_000_000
"""Size of one batch input file: 200 MB, counted in the smaller (decimal) megabytes."""
BATCH_QUEUE_TOKENS = 3_000_000
"""Default budget of the Batch API's enqueued-token queue: the tokens of an account's batches
not yet finished, per model. 3,000,000 is the usage-tier-1 figure for text-embedding-3-small
(higher tiers raise it); a batch that would pass it is accepted
and then fails with ``token_limit_exceeded``. Starting from the lowest tier's figure costs a
tier-5 account only more, smaller batches; starting higher costs a tier-1 account refusals.
Set it (``max_enqueued_tokens``, ``--batch-queue-tokens``) to your account's figure."""
BATCH_QUEUE_SHARES = 2
"""Batches are built to 1/2 of the queue budget: one runs while the next is validated (and
the one before is collected), so the queue never stands empty between two batches."""
BATCH_QUEUE_MIN_TOKENS = 20_000
"""A learned budget is never halved below this (a few requests' worth): below it, a refusal
means the account's other work holds the queue, and the job waits for it instead."""
BATCH_REQUEST_SHARE = 4
"""A request line carries at most 1/4 of a batch's tokens (and never more than the API's
300,000), so a queue of 500,000 tokens still holds two batches of two lines each."""
BATCH_REFUSAL_BACKOFF = 60.0
"""Seconds before a batch refused for the queue is submitted again; doubles with each
refusal in a row (a batch takes minutes to validate and run: polling faster buys nothing)."""
BATCH_MAX_REFUSAL_BACKOFF = 1800.0
"""Cap on that wait: 30 minutes, so a queue that frees is used within half an hour."""
BATCH_RELEASE_LAG_START = 30.0
"""First guess of the release lag (time after a batch ends before the API frees its tokens),
taken when a batch is refused right after one of the job's ended; doubles while refusals
still follow ends (users report a lag of seconds to a minute)."""
BATCH_MAX_RELEASE_LAG = 3600.0
"""Cap on the learned release lag (time after a batch ends before the API frees its tokens;
users report seconds to minutes)."""
BATCH_STALL_SECONDS = 86_400.0
"""A run whose batches are refused for this long with nothing accepted or collected stops
(the job stays resumable): every batch in the queue ends within its 24-hour completion
window, so a queue still full after one window is not freeing for this job."""

# --- The embedded PostgreSQL from the command line ----------------------------------------
DB_STOP_SECONDS = 30.0
"""How long ``python -m core db --stop`` waits for the embedded server to finish its fast shutdown
(it rolls back open transactions and writes a checkpoint: well under a second on an idle server)."""
