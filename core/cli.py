"""The command line: ``core-embed`` / ``python -m core``.

Commands:

* ``ingest FILE``: embed the sections of a JSONL, JSON or CSV file and store
  them, with a progress bar, a summary (stored / skipped / failed, tokens,
  cost, time) and the failed sections written to ``<FILE stem>.failed.jsonl``.
  ``--dry-run`` counts tokens, requests and cost without a key or a database.
* ``search QUERY``: the stored sections nearest to a query.
* ``schema``: the SQL to paste into Supabase's SQL editor, or ``--apply DSN``.

Where sections go (the first that applies): ``--database-url``; ``--data-dir``
(embedded); Supabase when ``SUPABASE_URL`` is set (with
``SUPABASE_SERVICE_ROLE_KEY`` or ``SUPABASE_KEY``); ``DATABASE_URL``; else an
embedded PostgreSQL + pgvector in a local folder (`core.embedded`).
``--target`` forces one.

Exit status: 0 when every section was stored or skipped, 1 when some failed,
2 for a usage or configuration problem (one line on stderr, never a secret).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from . import pricing
from .errors import ConfigurationError, CoreError, MissingDependencyError, StoreError
from .limits import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MODEL,
    MAX_INPUTS_PER_REQUEST,
    MAX_TOKENS_PER_INPUT,
    MAX_TOKENS_PER_REQUEST,
    MODEL_DIMENSIONS,
    TOKENIZER_ENCODING,
    model_dimensions,
)
from .readers import FORMATS, InputFileError, SourceRecord, count_records, detect_format, read_records

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_TABLE = "section_embeddings"
INGEST_WINDOW = 8192
"""Sections per embed-then-write window (the ingest's default; the dry run packs the same way)."""
INDEX_MEMORY_CAP = 1 << 30
"""Most `maintenance_work_mem` asked for an HNSW build (a measured 20,000 x 1536-dim build: 67 s with
the 64 MB default, 24 s with 1 GB). Less is asked for smaller tables (see `_build_index`)."""
INDEX_MEMORY_FLOOR = 64 << 20
SHOWN_FAILURES = 5


class UsageError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


# --- secrets ---------------------------------------------------------------------------------


class _Secrets:
    """Every secret this run knows of, to scrub from anything printed or written."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.dsns: set[str] = set()

    def add(self, value: str | None) -> None:
        if value and len(value) >= 4:
            self.values.add(value)

    def add_dsn(self, dsn: str | None) -> None:
        if dsn:
            self.dsns.add(dsn)

    def scrub(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, "***")
        if self.dsns:
            from .postgres_store import scrub_secret

            for dsn in self.dsns:
                text = scrub_secret(text, dsn)
        from .embedding_service import redact

        return redact(text)


SECRETS = _Secrets()


def _one_line(text: str) -> str:
    return " ".join(SECRETS.scrub(str(text)).split())


# --- argument parsing ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _price(text: str) -> Decimal:
    try:
        return pricing.price_per_million("", text)  # type: ignore[return-value]
    except (ValueError, ArithmeticError):
        raise argparse.ArgumentTypeError(f"expected a price in USD >= 0, got {text!r}") from None


def _similarity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a similarity between -1 and 1, got {text}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", default=DEFAULT_TABLE, help="table name (default: %(default)s)")
    parser.add_argument("--model", default=None, help=f"embeddings model (default: {DEFAULT_MODEL})")
    parser.add_argument(
        "--dimensions", type=_positive_int, default=None,
        help="vector size (default: the model's; text-embedding-3-* can shorten vectors)",
    )


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where sections are stored")
    group.add_argument(
        "--target", choices=("auto", "supabase", "postgres", "embedded"), default="auto",
        help="auto (default): --database-url, else --data-dir, else Supabase if SUPABASE_URL is set, "
        "else DATABASE_URL, else the embedded PostgreSQL",
    )
    group.add_argument("--database-url", metavar="DSN", help="any PostgreSQL with pgvector (default: $DATABASE_URL)")
    group.add_argument(
        "--data-dir", metavar="DIR",
        help="data folder of the embedded PostgreSQL (default: $CORE_DATA_DIR, else a per-user data folder; "
        "/var/lib/core-embeddings/pgdata as root)",
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Embed document sections with OpenAI and store them in Supabase, any PostgreSQL "
        "with pgvector, or an embedded PostgreSQL.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    ingest = commands.add_parser(
        "ingest", help="embed and store the sections of a file",
        description="Embed the sections (id, title, content) of a JSONL, JSON or CSV file and store them. "
        "Unchanged sections are skipped; failed ones are written to a JSONL file you can fix and re-run.",
    )
    ingest.add_argument("file", metavar="FILE", help="sections file (.jsonl, .json or .csv)")
    ingest.add_argument("--format", choices=FORMATS, help="file format (default: from the extension)")
    _add_model_options(ingest)
    ingest.add_argument(
        "--concurrency", type=_positive_int, default=DEFAULT_MAX_CONCURRENCY,
        help="embeddings requests in flight at once (default: %(default)s)",
    )
    ingest.add_argument(
        "--batch-size", type=_positive_int, default=MAX_INPUTS_PER_REQUEST,
        help=f"sections per embeddings request, at most {MAX_INPUTS_PER_REQUEST} (default: %(default)s)",
    )
    ingest.add_argument(
        "--tpm", type=_positive_float, default=None, metavar="TOKENS",
        help="your tokens-per-minute limit, if known (else learned from the API's headers)",
    )
    ingest.add_argument("--no-skip", action="store_true", help="re-embed sections even when unchanged")
    ingest.add_argument(
        "--no-index", action="store_true",
        help="PostgreSQL targets: do not create the HNSW index (by default it is built after the load)",
    )
    ingest.add_argument("--failed-out", metavar="PATH", help="where failed sections go (default: <FILE stem>.failed.jsonl)")
    ingest.add_argument("--dry-run", action="store_true", help="count tokens, requests and cost; embed and store nothing")
    ingest.add_argument("--price-per-million", type=_price, metavar="USD", help="price per 1M tokens for the cost figure")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    bar = ingest.add_mutually_exclusive_group()
    bar.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notes, just the summary")
    bar.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    _add_target_options(ingest)
    ingest.set_defaults(handler=cmd_ingest)

    search = commands.add_parser("search", help="the stored sections nearest to a query")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=_positive_int, default=5, help="how many results (default: %(default)s)")
    search.add_argument("--threshold", type=_similarity, default=None, help="minimum cosine similarity")
    _add_model_options(search)
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_target_options(search)
    search.set_defaults(handler=cmd_search)

    schema = commands.add_parser(
        "schema", help="print the SQL schema (for Supabase's SQL editor) or apply it",
        description="Print the SQL that creates the table, HNSW index, search function and row level "
        "security (paste it into Supabase's SQL editor), or apply it to a database.",
    )
    _add_model_options(schema)
    schema.add_argument("--match-function", default="match_sections", help="search function name (default: %(default)s)")
    schema.add_argument("--no-index", action="store_true", help="leave the HNSW index out")
    schema.add_argument(
        "--apply", nargs="?", const="", metavar="DSN",
        help="apply the schema to this database instead of printing it (no DSN: $DATABASE_URL)",
    )
    schema.set_defaults(handler=cmd_schema)
    return parser


# --- model and dimensions ----------------------------------------------------------------------


def _model(args: argparse.Namespace) -> str:
    return args.model or DEFAULT_MODEL


def _dimensions(args: argparse.Namespace) -> int:
    if args.dimensions is not None:
        return int(args.dimensions)
    model = _model(args)
    dimensions = model_dimensions(model)
    if dimensions is None:
        raise UsageError(f"unknown vector size for model {model!r}: pass --dimensions")
    return dimensions


def _check_table(args: argparse.Namespace) -> None:
    from .schema import validate_dimensions, validate_identifier

    try:
        validate_identifier(args.table, "table")
        if args.dimensions is not None:
            validate_dimensions(args.dimensions)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _service(args: argparse.Namespace, **options: Any) -> Any:
    from .embedding_service import EmbeddingService

    SECRETS.add(os.environ.get("OPENAI_API_KEY"))
    if not os.environ.get("OPENAI_API_KEY"):
        raise UsageError(
            "no OpenAI API key: set OPENAI_API_KEY (for a local OpenAI-compatible server, set "
            "OPENAI_BASE_URL and any non-empty key)"
        )
    try:
        return EmbeddingService(model=_model(args), **options)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


# --- targets ---------------------------------------------------------------------------------


@dataclass
class Target:
    """Where sections go, as chosen from options and environment."""

    kind: str  # "supabase" | "postgres" | "embedded"
    dsn: str | None = None
    url: str | None = None
    key: str | None = None
    folder: Path | None = None

    def describe(self) -> str:
        if self.kind == "supabase":
            return f"Supabase {self.url}"
        if self.kind == "postgres":
            from .postgres_store import redact_dsn

            return f"PostgreSQL {redact_dsn(self.dsn or '')}"
        return f"embedded PostgreSQL in {self.folder}"


def select_target(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Target:
    """The target `args` and the environment ask for (see the module docstring)."""
    env = os.environ if environ is None else environ
    supabase_url = env.get("SUPABASE_URL") or None
    supabase_key = env.get("SUPABASE_SERVICE_ROLE_KEY") or env.get("SUPABASE_KEY") or None
    SECRETS.add(supabase_key)
    if args.database_url:
        SECRETS.add_dsn(args.database_url)
    if env.get("DATABASE_URL"):
        SECRETS.add_dsn(env["DATABASE_URL"])
    kind = args.target
    if args.database_url and args.data_dir:
        raise UsageError("--database-url and --data-dir name two different databases: pass one")
    if kind == "auto":
        if args.database_url:
            kind = "postgres"
        elif args.data_dir:
            kind = "embedded"
        elif supabase_url:
            if not supabase_key:
                raise UsageError(
                    "SUPABASE_URL is set but neither SUPABASE_SERVICE_ROLE_KEY nor SUPABASE_KEY is "
                    "(set one, or pass --target embedded / --database-url)"
                )
            kind = "supabase"
        elif env.get("DATABASE_URL"):
            kind = "postgres"
        else:
            kind = "embedded"
    if kind == "supabase":
        if not supabase_url or not supabase_key:
            raise UsageError("--target supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_KEY)")
        return Target("supabase", url=supabase_url, key=supabase_key)
    if kind == "postgres":
        dsn = args.database_url or env.get("DATABASE_URL")
        if not dsn:
            raise UsageError("--target postgres needs --database-url or DATABASE_URL")
        return Target("postgres", dsn=dsn)
    from .embedded import data_dir

    return Target("embedded", folder=data_dir(args.data_dir))


class _Note:
    """Informational lines on stderr (silenced by --quiet).

    While the target is being set up, lines are held back and printed only once
    it is ready (`release`): a setup error is then the only line on stderr.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.held: list[str] | None = []

    def __call__(self, text: str) -> None:
        if self.quiet:
            return
        if self.held is not None:
            self.held.append(text)
        else:
            print(_one_line(text), file=sys.stderr, flush=True)

    def release(self) -> None:
        held, self.held = self.held or [], None
        for text in held:
            self(text)


@contextlib.contextmanager
def _database(target: Target, note: _Note, *, must_exist: bool = False) -> Iterator[str]:
    """The DSN of a PostgreSQL target; starts (and afterwards lets go of) the embedded one."""
    if target.kind == "postgres":
        assert target.dsn is not None
        yield target.dsn
        return
    from .embedded import EmbeddedPostgres, opened_as_root

    server = EmbeddedPostgres(target.folder)
    if must_exist and not server.initialised:
        raise UsageError(
            f"no embedded database in {server.folder} yet: run ingest first (or pass --data-dir / --database-url)"
        )
    try:
        server.check_folder()
        from .embedded import import_pgserver

        import_pgserver()
    except (ConfigurationError, MissingDependencyError) as exc:
        raise UsageError(str(exc)) from None
    opened = opened_as_root(server.folder)
    if opened:
        note(
            "note: running as root, pgserver runs PostgreSQL as OS user 'pgserver' and adds read+execute "
            f"for everyone to: {', '.join(map(str, opened))}"
        )
    created = not server.initialised
    started = time.monotonic()
    try:
        dsn = server.start()
    except (ConfigurationError, StoreError, MissingDependencyError) as exc:
        raise UsageError(str(exc)) from None
    note(f"embedded PostgreSQL {'created' if created else 'ready'} in {time.monotonic() - started:.1f} s")
    try:
        yield dsn
    finally:
        server.stop()


# --- PostgreSQL helpers -------------------------------------------------------------------------


@dataclass
class _TableState:
    exists: bool
    empty: bool
    index_exists: bool
    dimensions: int | None
    model: str | None


def _connect(dsn: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise UsageError(str(MissingDependencyError("psycopg", "postgres", "a PostgreSQL target"))) from None
    from .postgres_store import redact_dsn

    SECRETS.add_dsn(dsn)
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise UsageError(f"cannot connect to {redact_dsn(dsn)}: {_one_line(str(exc))}") from None


def _table_state(conn: Any, table: str) -> _TableState:
    import psycopg

    try:
        return _read_table_state(conn, table)
    except psycopg.Error as exc:
        raise UsageError(f"cannot read table {table!r}: {_one_line(str(exc))}") from None


def _read_table_state(conn: Any, table: str) -> _TableState:
    from .schema import index_name

    exists, index_exists, typmod = conn.execute(
        "select to_regclass(%(t)s) is not null, to_regclass(%(i)s) is not null,"
        " (select a.atttypmod from pg_attribute a where a.attrelid = to_regclass(%(t)s)"
        "   and a.attname = 'embedding' and not a.attisdropped)",
        {"t": table, "i": index_name(table)},
    ).fetchone()
    empty, model = True, None
    if exists:
        row = conn.execute(f"select model from {table} limit 1").fetchone()
        if row is not None:
            empty, model = False, row[0]
    dimensions = int(typmod) if typmod is not None and int(typmod) > 0 else None
    return _TableState(bool(exists), empty, bool(index_exists), dimensions, model)


def _build_index(conn: Any, table: str, dimensions: int, note: _Note) -> None:
    """The HNSW index, built once after the load, with enough `maintenance_work_mem` to stay in memory."""
    from .schema import apply_schema_sql, render_index

    sql = render_index(table=table, dimensions=dimensions)
    if "create index" not in sql:
        return  # above 4,000 dimensions pgvector cannot index: searches scan
    rows = int(conn.execute(f"select count(*) from {table}").fetchone()[0])
    current = int(conn.execute("select setting::bigint * 1024 from pg_settings where name = 'maintenance_work_mem'").fetchone()[0])
    # pgvector keeps the graph in memory while it fits: each element holds its
    # vector plus neighbour lists (m = 16: up to 32 on layer 0) and bookkeeping.
    wanted = min(INDEX_MEMORY_CAP, max(INDEX_MEMORY_FLOOR, int(rows * (dimensions * 4 + 1024) * 1.5)))
    note(f"building the HNSW index on {rows:,} rows...")
    started = time.monotonic()
    with conn.transaction():
        if wanted > current:
            conn.execute(f"set local maintenance_work_mem = '{wanted // (1 << 20)}MB'")
        apply_schema_sql(conn, sql, table=table)
    note(f"index built in {time.monotonic() - started:.1f} s")


def _postgres_store(dsn: str, args: argparse.Namespace, dimensions: int) -> Any:
    from .postgres_store import PostgresStore

    try:
        return PostgresStore(dsn, table=args.table, dimensions=dimensions, create_schema=False)
    except (ConfigurationError, MissingDependencyError) as exc:
        raise UsageError(str(exc)) from None


def _supabase_store(target: Target, args: argparse.Namespace) -> Any:
    from .supabase_store import SupabaseStore

    try:
        store = SupabaseStore(target.url, target.key, table=args.table)
    except Exception as exc:  # supabase's own errors (bad URL...) have no common base
        raise UsageError(f"cannot use Supabase at {target.url}: {_one_line(str(exc))}") from None
    try:
        store.client.table(args.table).select("section_id,content_hash,model").limit(1).execute()
    except Exception as exc:
        import httpx

        reason = _one_line(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TransportError):
            raise UsageError(f"cannot reach Supabase at {target.url}: {reason}") from None
        hint = ""
        if str(getattr(exc, "code", "")) in ("PGRST205", "42P01", "PGRST204", "42703"):
            hint = f" (create it: paste the output of `{_prog()} schema` into Supabase's SQL editor)"
        raise UsageError(f"cannot read table {args.table!r} on Supabase {target.url}: {reason}{hint}") from None
    return store


# --- ingest ------------------------------------------------------------------------------------


class _Metered:
    """The embedding service, with each request's tokens also counted here (for tokens/s)."""

    def __init__(self, service: Any, on_request: Callable[[int, int], None]) -> None:
        self._service = service
        self._on_request = on_request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    def embed(self, texts: Sequence[Any], *, max_batch_size: int | None = None, progress: Any = None) -> Any:
        def both(inputs: int, tokens: int) -> None:
            self._on_request(inputs, tokens)
            if progress is not None:
                progress(inputs, tokens)

        return self._service.embed(texts, max_batch_size=max_batch_size, progress=both)


class _ProgressBar:
    """tqdm on stderr: sections done, tokens/s, failures so far."""

    def __init__(self, total: int | None, *, disable: bool | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, desc="ingest", unit=" sections", file=sys.stderr, disable=disable,
            dynamic_ncols=True, mininterval=0.25, smoothing=0.1,
        )
        self.started = time.monotonic()
        self.tokens_sent = 0
        self.unreadable = 0
        self.shown = 0
        self.failed = 0
        self._seen = -1
        self._base_done = 0
        self._base_embedded = 0

    def on_request(self, inputs: int, tokens: int) -> None:
        self.tokens_sent += tokens

    def on_unreadable(self) -> None:
        self.unreadable += 1
        self._show(self.shown + 1, self.failed + 1)

    def on_ingest(self, counters: Any) -> None:
        if counters.seen != self._seen:  # a new window: validation and skips are in
            self._seen = counters.seen
            self._base_done = counters.done
            self._base_embedded = counters.embedded_inputs
        in_flight = counters.embedded_inputs - self._base_embedded
        done = max(counters.done, min(self._base_done + in_flight, counters.seen))
        self._show(done + self.unreadable, counters.failed + self.unreadable)

    def _show(self, position: int, failed: int) -> None:
        self.failed = failed
        if position > self.shown:
            self.bar.update(position - self.shown)
            self.shown = position
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.bar.set_postfix_str(f"{self.tokens_sent / elapsed:,.0f} tok/s, {failed} failed", refresh=False)

    def close(self) -> None:
        self.bar.close()


@dataclass
class _Run:
    """What one ingest did, for the summary and the failed-sections file."""

    records: int = 0
    unreadable: int = 0
    result: dict[str, Any] = field(default_factory=dict)


def _open_records(path: Path, fmt: str) -> Iterator[SourceRecord]:
    """Records of `path`, the first one read already so file-level errors surface now."""
    try:
        records = read_records(path, fmt)
        first = next(records, None)
    except InputFileError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return itertools.chain([first] if first is not None else [], records)


def _input_file(args: argparse.Namespace) -> tuple[Path, str]:
    path = Path(args.file)
    try:
        fmt = detect_format(path, args.format)
    except InputFileError as exc:
        raise UsageError(str(exc)) from None
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a sections file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: permission denied")
    return path, fmt


def _failed_path(args: argparse.Namespace, source: Path) -> Path:
    if args.failed_out:
        out = Path(args.failed_out)
    else:
        out = source.with_name(source.name[: len(source.name) - len(source.suffix)] + ".failed.jsonl")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise UsageError(f"--failed-out {out} is the input file: choose another path")
    if out.is_dir():
        raise UsageError(f"--failed-out {out} is a folder")
    return out


def cmd_ingest(args: argparse.Namespace) -> int:
    _check_table(args)
    if args.batch_size > MAX_INPUTS_PER_REQUEST:
        raise UsageError(f"--batch-size must be at most {MAX_INPUTS_PER_REQUEST}, not {args.batch_size}")
    model = _model(args)
    source, fmt = _input_file(args)
    failed_out = _failed_path(args, source)
    if args.dry_run:
        return _dry_run(args, source, fmt, model)
    dimensions = _dimensions(args)

    note = _Note(args.quiet)
    service_options: dict[str, Any] = {
        "max_batch_size": args.batch_size,
        "max_concurrency": args.concurrency,
        "tokens_per_minute": args.tpm,
    }
    if args.dimensions is not None:
        service_options["dimensions"] = args.dimensions
    if args.tpm is not None and args.tpm < MAX_TOKENS_PER_INPUT:
        # A section above the whole per-minute budget can never be sent: it fails alone.
        service_options["max_tokens_per_input"] = max(1, int(args.tpm))
    service = _service(args, **service_options)
    target = select_target(args)
    records = _open_records(source, fmt)  # fail on a malformed file before starting anything
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(service.close)
        note(f"target: {target.describe()}, table {args.table}")
        conn = None
        problem = _embedded_problem(target)
        defer_index = False
        if target.kind == "supabase":
            store = _supabase_store(target, args)
        else:
            dsn = stack.enter_context(_database(target, note))
            conn = _connect(dsn)
            stack.callback(conn.close)
            store, defer_index = _prepare_postgres(
                conn, dsn, args, dimensions, model, index=not (args.no_index or problem), drop_index=bool(problem)
            )
            stack.callback(store.close)
            if problem and not args.no_index:
                note(f"note: {problem}")
        note.release()
        run = _ingest(args, store, service, records, source, fmt)
        if defer_index and conn is not None:
            try:
                _build_index(conn, args.table, dimensions, note)
            except Exception as exc:
                print(_one_line(f"{_prog()}: warning: the HNSW index was not built ({exc}); "
                                "searches work without it, and the next ingest builds it"), file=sys.stderr)
    elapsed = time.monotonic() - started
    return _finish(args, run, source, fmt, failed_out, model, elapsed)


def _embedded_problem(target: Target) -> str | None:
    """Why the embedded pgvector cannot use HNSW / `vector` distances here (None for other targets)."""
    if target.kind != "embedded":
        return None
    from .embedded import vector_math_problem

    return vector_math_problem()


def _prepare_postgres(
    conn: Any, dsn: str, args: argparse.Namespace, dimensions: int, model: str, *, index: bool, drop_index: bool
) -> tuple[Any, bool]:
    """The store, schema in place; True when the HNSW index is to be built after the load.

    Args:
        index: Have an HNSW index at the end (False: --no-index, or pgvector cannot build one here).
        drop_index: Drop an existing index (inserts into it would crash this pgvector).
    """
    from .schema import index_name

    state = _table_state(conn, args.table)
    if state.dimensions is not None and state.dimensions != dimensions:
        raise UsageError(
            f"table {args.table!r} holds {state.dimensions}-dimensional vectors, not {dimensions} "
            f"({model}): pass --dimensions {state.dimensions} or another --table"
        )
    build_after = index and not state.index_exists
    if state.index_exists and (drop_index or (index and state.exists and state.empty)):
        # An empty table: building the index once after the load is much faster
        # than maintaining it row by row during it.
        import psycopg

        try:
            conn.execute(f"drop index if exists {index_name(args.table)}")
        except psycopg.Error as exc:
            raise UsageError(f"cannot drop the index of {args.table!r} before the load: {_one_line(str(exc))}") from None
        build_after = index
    store = _postgres_store(dsn, args, dimensions)
    try:
        store.ensure_schema(with_index=False)
    except StoreError as exc:
        store.close()
        raise UsageError(str(exc)) from None
    return store, build_after


def _ingest(
    args: argparse.Namespace, store: Any, service: Any, records: Iterator[SourceRecord], source: Path, fmt: str
) -> _Run:
    run = _Run()
    total = None
    if not args.quiet:
        with contextlib.suppress(OSError):
            total = count_records(source, fmt)
    bar = _ProgressBar(total, disable=True if args.quiet else (False if args.progress else None))

    def sections() -> Iterator[dict[str, Any]]:
        for record in records:
            run.records += 1
            if record.error is not None:
                run.unreadable += 1
                bar.on_unreadable()
                continue
            yield record.section  # type: ignore[misc]

    try:
        run.result = store.batch_ingest_embeddings(
            sections(),
            _Metered(service, bar.on_request),
            batch_size=args.batch_size,
            skip_unchanged=not args.no_skip,
            window=INGEST_WINDOW,
            progress=bar.on_ingest,
        )
    except (CoreError, OSError) as exc:
        raise _Aborted(f"{exc}; sections stored before it stay stored (re-run to continue: they are skipped)") from None
    finally:
        bar.close()
    return run


class _Aborted(Exception):
    """The ingest stopped half way (database lost...): exit status 1."""


def _write_failures(
    path: Path, source: Path, fmt: str, failures: list[dict[str, Any]]
) -> list[tuple[int, Any, str]]:
    """Write every failed record (unreadable ones included) to `path`, in file order.

    Reads the file a second time: records are not kept in memory during the
    ingest. Returns (line, id, reason) of each failure, for the summary.
    """
    reasons = {int(item["index"]): str(item["reason"]) for item in failures}
    duplicate_of: dict[int, int | None] = {}
    for reason in reasons.values():
        match = re.search(r"first seen at index (\d+)", reason)
        if match:
            duplicate_of[int(match.group(1))] = None
    listed: list[tuple[int, Any, str]] = []
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as out:
        index = 0
        for record in read_records(source, fmt):
            if record.error is not None:
                reason = record.error
            else:
                if index in duplicate_of:
                    duplicate_of[index] = record.line
                reason = reasons.get(index)  # type: ignore[assignment]
                index += 1
                if reason is None:
                    continue
                reason = re.sub(
                    r"first seen at index (\d+)\)",
                    lambda m: f"first seen on line {duplicate_of.get(int(m.group(1))) or '?'}; "
                    "re-running this record as is replaces that section)",
                    reason,
                )
            reason = _one_line(reason)
            if isinstance(record.raw, dict):
                entry = {k: v for k, v in record.raw.items() if k not in ("_error", "_line")}
            else:
                entry = {"_raw": record.raw}
            entry["_error"] = reason
            entry["_line"] = record.line
            out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            section_id = record.section.get("id") if record.section else None
            listed.append((record.line, section_id, reason))
    os.replace(tmp, path)
    return listed


def _finish(
    args: argparse.Namespace, run: _Run, source: Path, fmt: str, failed_out: Path, model: str, elapsed: float
) -> int:
    result = run.result
    stored = int(result.get("success_count", 0))
    skipped = int(result.get("skipped_count", 0))
    failed = int(result.get("failed_count", 0)) + run.unreadable
    tokens = int(result.get("total_tokens", 0))
    cost = pricing.estimate_cost(tokens, model, args.price_per_million)
    listed: list[tuple[int, Any, str]] = []
    written: str | None = None
    if failed:
        try:
            listed = _write_failures(failed_out, source, fmt, list(result.get("failures", [])))
            written = str(failed_out)
        except OSError as exc:
            print(_one_line(f"{_prog()}: warning: cannot write {failed_out}: {exc.strerror or exc}"), file=sys.stderr)
    elif failed_out.is_file() and not args.failed_out:
        failed_out.unlink()  # the failures of an earlier run of this file: none are left

    if args.json:
        print(json.dumps({
            "sections": run.records,
            "stored": stored,
            "skipped": skipped,
            "failed": failed,
            "tokens": tokens,
            "cost_usd": pricing.usd_text(cost),
            "elapsed_seconds": round(elapsed, 3),
            "failed_file": written,
            "failures": [{"line": line, "id": sid, "reason": reason} for line, sid, reason in listed],
        }))
    else:
        cost_text = pricing.format_usd(cost) if cost is not None else f"unknown (no price for {model}; pass --price-per-million)"
        print(
            f"stored {stored:,}, skipped {skipped:,}, failed {failed:,} of {run.records:,} sections; "
            f"{tokens:,} tokens; cost {cost_text}; {elapsed:.1f} s"
        )
        if failed:
            for line, sid, reason in listed[:SHOWN_FAILURES]:
                where = f"line {line}" + (f" (id {sid})" if sid is not None else "")
                print(f"  {where}: {reason}")
            if len(listed) > SHOWN_FAILURES:
                common = Counter(reason for _, _, reason in listed).most_common(1)[0]
                print(f"  ... {len(listed) - SHOWN_FAILURES:,} more; most common: {common[0]} ({common[1]:,}x)")
            if written:
                print(f"failed sections written to {written}: fix them, then run: {_prog()} ingest {written}")
    return EXIT_FAILED if failed else EXIT_OK


# --- dry run -------------------------------------------------------------------------------


def _dry_run(args: argparse.Namespace, source: Path, fmt: str, model: str) -> int:
    """Tokens, requests and cost of ingesting `source`, exactly as the ingest would send them."""
    from .ingest import section_text, validate_section
    from .packing import pack_requests
    from .tokens import count_tokens_batch

    max_tokens = MAX_TOKENS_PER_REQUEST
    if args.tpm is not None:  # the service never sends a request above the whole budget
        max_tokens = min(max_tokens, int(args.tpm))
    per_input = min(MAX_TOKENS_PER_INPUT, max_tokens)
    counts: Counter[str] = Counter()
    tokens = requests = 0
    seen: set[int] = set()

    def flush(texts: list[str]) -> None:
        """One ingest window: its valid texts go to the service in one `embed` call."""
        nonlocal tokens, requests
        unique = list(dict.fromkeys(texts))  # the service sends identical texts once per call
        sizes = count_tokens_batch(unique)
        sendable = [i for i, size in enumerate(sizes) if size <= per_input]
        too_long = {unique[i] for i, size in enumerate(sizes) if size > per_input}
        if too_long:
            counts["too_long"] += sum(1 for text in texts if text in too_long)
        tokens += sum(sizes[i] for i in sendable)
        requests += len(pack_requests(sendable, sizes, max_inputs=args.batch_size, max_tokens=max_tokens))

    window: list[str] = []
    slots = 0  # sections handed to the ingest in this window (invalid ones take a slot too)
    for record in _open_records(source, fmt):
        counts["records"] += 1
        if record.error is not None:
            counts["unreadable"] += 1
            continue
        section = record.section
        assert section is not None
        slots += 1
        problem = validate_section(section)
        if problem is None and section["id"] in seen:
            problem = "duplicate id"
        if problem is None:
            seen.add(section["id"])
            window.append(section_text(section["title"], section["content"]))
        else:
            counts["invalid"] += 1
        if slots == INGEST_WINDOW:
            flush(window)
            window, slots = [], 0
    if window:
        flush(window)

    price = pricing.price_per_million(model, args.price_per_million)
    cost = pricing.estimate_cost(tokens, model, args.price_per_million)
    failing = counts["unreadable"] + counts["invalid"] + counts["too_long"]
    if args.json:
        print(json.dumps({
            "dry_run": True,
            "file": str(source),
            "format": fmt,
            "model": model,
            "sections": counts["records"],
            "to_embed": counts["records"] - failing,
            "unreadable": counts["unreadable"],
            "invalid": counts["invalid"],
            "too_long": counts["too_long"],
            "tokens": tokens,
            "requests": requests,
            "price_per_million_usd": pricing.usd_text(price),
            "cost_usd": pricing.usd_text(cost),
        }))
        return EXIT_OK
    print(f"dry run: {source} ({fmt}), model {model}; nothing embedded or stored")
    print(f"  sections: {counts['records']:,} ({counts['records'] - failing:,} to embed, {failing:,} would fail"
          + (f": {counts['unreadable']:,} unreadable, {counts['invalid']:,} invalid, "
             f"{counts['too_long']:,} over {per_input:,} tokens)" if failing else ")"))
    print(f"  tokens: {tokens:,} ({TOKENIZER_ENCODING}, exact)")
    print(f"  requests: {requests:,} (at most {args.batch_size:,} sections and {max_tokens:,} tokens each)")
    if cost is None:
        print(f"  cost: unknown (no price for {model}; pass --price-per-million USD)")
    else:
        print(f"  cost: {pricing.format_usd(cost)} (at ${price} per 1M tokens)")
    if args.tpm:
        print(f"  time: at least {tokens / args.tpm:,.1f} min at {args.tpm:,.0f} tokens/min")
    print("  (sections already stored unchanged would be skipped, at no cost)")
    return EXIT_OK


# --- search ----------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> int:
    _check_table(args)
    if not args.query.strip():
        raise UsageError("the query is empty")
    note = _Note(args.json)
    target = select_target(args)
    SECRETS.add(os.environ.get("OPENAI_API_KEY"))
    if not os.environ.get("OPENAI_API_KEY"):
        _service(args)  # raises the usual no-key message
    with contextlib.ExitStack() as stack:
        if target.kind == "supabase":
            service = _service(args, dimensions=args.dimensions)
            stack.callback(service.close)
            store = _supabase_store(target, args)
        else:
            dsn = stack.enter_context(_database(target, _Note(True), must_exist=True))
            conn = _connect(dsn)
            stack.callback(conn.close)
            state = _table_state(conn, args.table)
            if not state.exists:
                raise UsageError(f"table {args.table!r} does not exist in {target.describe()}: ingest sections first")
            dimensions = state.dimensions or _dimensions(args)
            if args.dimensions is not None and args.dimensions != dimensions:
                raise UsageError(f"table {args.table!r} holds {dimensions}-dimensional vectors, not {args.dimensions}")
            model = args.model or state.model or DEFAULT_MODEL
            if args.model and state.model and args.model != state.model:
                note(f"note: the table's sections were embedded with {state.model}, the query with {args.model}")
            args.model = model
            options: dict[str, Any] = {}
            if args.dimensions is not None or MODEL_DIMENSIONS.get(model) != dimensions:
                options["dimensions"] = dimensions
            service = _service(args, **options)
            stack.callback(service.close)
            if _embedded_problem(target):
                store = _HalfvecScan(conn, args.table, dimensions)
            else:
                store = _postgres_store(dsn, args, dimensions)
                stack.callback(store.close)
        note.release()
        try:
            hits = store.search(args.query, k=args.k, threshold=args.threshold, embedding_service=service)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        except CoreError:
            raise  # the query could not be embedded: main() prints it
        except Exception as exc:  # PostgREST's errors (Supabase) have no common base
            raise UsageError(f"search failed: {exc}") from None
    if args.json:
        print(json.dumps(hits))
        return EXIT_OK
    if not hits:
        print("no sections found" + (f" with similarity >= {args.threshold}" if args.threshold is not None else ""))
    for hit in hits:
        print(f"{float(hit['similarity']):.4f}  {hit['section_id']:>8}  {hit.get('title') or ''}")
    return EXIT_OK


class _HalfvecScan:
    """Search by a full scan with `halfvec` cosine distances.

    For the embedded pgvector on a CPU without AVX-512 (see
    `core.embedded.vector_math_problem`), where `vector` distances crash the
    server but `halfvec` ones work. Similarities are then computed in half
    precision (about three significant digits), which does not change rankings
    in practice.
    """

    def __init__(self, conn: Any, table: str, dimensions: int) -> None:
        self.conn = conn
        self.table = table
        self.dimensions = dimensions

    def search(self, query: str, k: int = 5, threshold: float | None = None, *, embedding_service: Any) -> list[dict[str, Any]]:
        import psycopg

        from .rows import vector_literal

        vector = vector_literal(embedding_service.generate_embedding(query))
        cast = f"halfvec({self.dimensions})"
        sql = (
            f"select section_id, title, 1 - (embedding::{cast} <=> %(q)s::{cast}) as similarity "
            f"from {self.table} "
            f"where %(t)s::float8 is null or 1 - (embedding::{cast} <=> %(q)s::{cast}) >= %(t)s::float8 "
            "order by similarity desc limit %(k)s"
        )
        try:
            rows = self.conn.execute(sql, {"q": vector, "t": threshold, "k": k}).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"search failed: {exc}") from None
        return [{"section_id": int(sid), "title": title, "similarity": float(sim)} for sid, title, sim in rows]


# --- schema ----------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import apply_schema, render_schema

    dimensions = _dimensions(args)
    try:
        sql = render_schema(
            table=args.table, dimensions=dimensions, match_function=args.match_function, with_index=not args.no_index
        )
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    if args.apply is None:
        sys.stdout.write(sql)
        return EXIT_OK
    dsn = args.apply or os.environ.get("DATABASE_URL")
    if not dsn:
        raise UsageError("--apply needs a DSN (or set DATABASE_URL)")
    SECRETS.add_dsn(dsn)
    from .postgres_store import redact_dsn

    try:
        apply_schema(
            dsn, table=args.table, dimensions=dimensions, match_function=args.match_function, with_index=not args.no_index
        )
    except (StoreError, MissingDependencyError) as exc:
        raise UsageError(str(exc)) from None
    print(f"schema applied: table {args.table} (vector({dimensions})), function {args.match_function}() on {redact_dsn(dsn)}")
    return EXIT_OK


# --- entry point -----------------------------------------------------------------------------


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "core-embed" if name.startswith("core-embed") else "python -m core"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some sections failed, 2 usage)."""
    prog = _prog()
    try:
        args = build_parser(prog).parse_args(list(argv) if argv is not None else None)
        return int(args.handler(args))
    except UsageError as exc:
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except _Aborted as exc:
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except (ConfigurationError, MissingDependencyError) as exc:
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except CoreError as exc:  # e.g. the search query could not be embedded
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (sections stored so far stay stored; re-run to continue)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter from complaining at exit
        return EXIT_OK
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except Exception as exc:  # a bug: one line, the traceback on demand
        if os.environ.get("CORE_DEBUG"):
            raise
        print(
            f"{prog}: error: unexpected {type(exc).__name__}: {_one_line(str(exc))} (set CORE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
