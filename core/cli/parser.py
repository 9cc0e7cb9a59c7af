"""Options of every command, the errors a user can fix, and the exit statuses.

Commands are named, not imported, here (``run=``): `core.cli.main` imports the
one module asked for, so ``--help`` and a bad option cost no SDK import.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from typing import NoReturn

from .. import pricing
from ..engine.sync_plan import parse_max_delete
from ..errors import ConfigurationError
from ..limits import DEFAULT_MAX_CONCURRENCY, DEFAULT_MODEL, DEFAULT_TABLE, MAX_INPUTS_PER_REQUEST
from ..readers import FORMATS
from ..stores.schema import ID_TYPES
from .status import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError, UsageError

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "JOB_SUFFIX", "CliError", "UsageError",
           "build_parser"]

JOB_SUFFIX = ".batch-job"
"""``<FILE stem>.batch-job``: the default job folder of ``ingest --batch-api``, next to FILE."""

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


def _database_url(text: str) -> str:
    if not text.strip():  # `--database-url "$DATABASE_URL"` with the variable unset
        raise argparse.ArgumentTypeError("empty (an unset variable?): pass a PostgreSQL URL, or leave the option out")
    return text


def _similarity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a similarity between -1 and 1, got {text}")
    return value


def _filter(text: str) -> tuple[str, object]:
    """``key=value`` of ``--filter``: the value as JSON when it parses (``page=3`` is 3), else the text."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        parsed: object = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def _max_delete(text: str) -> str:
    try:
        parse_max_delete(text)
    except ConfigurationError:
        raise argparse.ArgumentTypeError(f"expected a percentage (10%) or a count of rows (50), got {text!r}") from None
    return text


def _field_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected field names separated by commas, got {text!r}")
    return names


def _add_match_function(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--match-function", metavar="NAME", default=None,
        help="the table's search function (default: the table's own: match_sections for section_embeddings, "
        "else match_<table>)",
    )


def _add_id_type(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--id-type", choices=ID_TYPES, default=None,
                        help=f"id column type of a new table (default: {default}; an existing table keeps its own)")


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
    group.add_argument("--database-url", metavar="DSN", type=_database_url, help="any PostgreSQL with pgvector (default: $DATABASE_URL)")
    group.add_argument(
        "--data-dir", metavar="DIR",
        help="data folder of the embedded PostgreSQL (default: $CORE_DATA_DIR, else a per-user data folder; "
        "/var/lib/core-embeddings/pgdata as root)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    """The Batch API options of ``ingest`` (run by `core.cli.batch`)."""
    group = parser.add_argument_group("Batch API (half the price, results within 24 hours)")
    group.add_argument(
        "--batch-api", action="store_true",
        help="embed through OpenAI's Batch API instead of online requests: uploads batch files, waits for them "
        "and stores the results; run the same command again to continue after a crash (nothing is submitted twice)",
    )
    group.add_argument(
        "--finish-online", action="store_true",
        help="with --batch-api: embed online the requests that failed inside a batch",
    )
    group.add_argument("--job-dir", metavar="DIR",
                       help=f"with --batch-api: the job folder (default: <FILE stem>{JOB_SUFFIX} next to FILE)")
    group.add_argument("--batch-queue-tokens", type=_positive_int, default=None, metavar="N",
                       help="with --batch-api: your account's enqueued-token limit for the model (the Batch API's "
                       "queue; see your limits page): batches are built to fit it and go as it frees (default: "
                       "what the job learned, else 3,000,000, the tier-1 figure, halved on each refusal)")
    group.add_argument("--poll-interval", type=_seconds, default=10.0, metavar="SECONDS",
                       help="with --batch-api: first wait between looks at the batches; it grows to 5 minutes "
                       "while nothing moves (default: %(default)s)")


def _add_sync_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("keeping the table equal to FILE")
    group.add_argument(
        "--sync", action="store_true",
        help="after storing FILE's sections, delete the rows of its source whose ids FILE no longer has "
        "(never when a record was unreadable or FILE was not read to its end)",
    )
    group.add_argument(
        "--source", metavar="NAME",
        help="with --sync: the source's name recorded on its rows (default: FILE as given, normalised; "
        "required for standard input)",
    )
    group.add_argument(
        "--max-delete", type=_max_delete, default="10%", metavar="PCT|COUNT",
        help="with --sync: delete nothing when more than this share (10%%) or count (50) of the source's rows "
        "would go (default: %(default)s; 100%% allows anything)",
    )


def _add_ingest(commands: argparse._SubParsersAction[_Parser]) -> None:
    ingest = commands.add_parser(
        "ingest", help="embed and store the sections of a file",
        description="Embed the sections (id, title, content) of a JSONL, JSON or CSV file, or of standard "
        "input, and store them. Unchanged sections are skipped; failed ones are written to "
        "<FILE stem>.failed.jsonl, which you can fix and ingest again.",
    )
    ingest.add_argument(
        "file", metavar="FILE",
        help="sections file (.jsonl, .json or .csv), or - for standard input (JSONL unless --format)",
    )
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
    _add_id_type(ingest, "bigint when the ids are integers, else text")
    _add_match_function(ingest)
    ingest.add_argument("--no-content", action="store_true",
                        help="do not keep the sections' text in the table (search then returns no content)")
    ingest.add_argument(
        "--metadata-fields", type=_field_names, metavar="A,B",
        help="keep only these fields as metadata (default: every field other than id, title, content)",
    )
    ingest.add_argument(
        "--no-index", action="store_true",
        help="PostgreSQL targets: do not create the HNSW index (by default it is built after the load)",
    )
    ingest.add_argument(
        "--rebuild-index", choices=("auto", "always", "never"), default="auto",
        help="PostgreSQL targets, a table that has its HNSW index: drop it before the load and build it again "
        "after (auto: when the load is at least a fifth of the table; searches scan the table meanwhile) "
        "(default: %(default)s)",
    )
    ingest.add_argument(
        "--failed-out", metavar="PATH",
        help="where failed sections go (default: <FILE stem>.failed.jsonl next to FILE; "
        "stdin.failed.jsonl for standard input)",
    )
    ingest.add_argument(
        "--dry-run", action="store_true",
        help="count tokens, requests and cost; embed and store nothing (exit 1 if some sections would fail)",
    )
    ingest.add_argument("--price-per-million", type=_price, metavar="USD", help="price per 1M tokens for the cost figure")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON (every reason whole)")
    ingest.add_argument(
        "--wide", action="store_true",
        help="print failure reasons whole, on their own lines (default: cut to fit 80 columns)",
    )
    bar = ingest.add_mutually_exclusive_group()
    bar.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notes, just the summary")
    bar.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    _add_sync_options(ingest)
    _add_target_options(ingest)
    _add_batch_options(ingest)
    ingest.set_defaults(run="ingest")


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The parser of every command; ``args.run`` names the `core.cli` module that runs it."""
    parser = _Parser(
        prog=prog,
        description="Embed document sections with OpenAI and store them in Supabase, any PostgreSQL "
        "with pgvector, or an embedded PostgreSQL.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _add_ingest(commands)

    search = commands.add_parser(
        "search", help="the stored sections nearest to a query",
        description="Embed QUERY with the model the sections were stored with and print the nearest stored "
        "sections, best first: cosine similarity, section id, title, and the start of the content.",
    )
    search.add_argument("query", metavar="QUERY", help="the text to look for (quote it: one argument)")
    search.add_argument("-k", type=_positive_int, default=5, help="how many results (default: %(default)s)")
    search.add_argument("--threshold", type=_similarity, default=None, help="minimum cosine similarity (-1 to 1)")
    search.add_argument(
        "--filter", type=_filter, action="append", default=[], metavar="KEY=VALUE",
        help="only sections whose metadata has KEY equal to VALUE (VALUE read as JSON when it is: "
        "page=3 is a number, lang=de a string); repeat for several",
    )
    search.add_argument("--hybrid", action="store_true",
                        help="rank by full-text match (title and content) and vector similarity together")
    _add_model_options(search)
    _add_match_function(search)
    search.add_argument("--json", action="store_true",
                        help="print the results as JSON (id, title, content, metadata, similarity)")
    _add_target_options(search)
    search.set_defaults(run="search")

    schema = commands.add_parser(
        "schema", help="print the SQL schema (for Supabase's SQL editor) or apply it",
        description="Print the SQL that creates the table, HNSW index, search function and row level "
        "security (paste it into Supabase's SQL editor), or apply it to a database.",
    )
    _add_model_options(schema)
    _add_match_function(schema)
    _add_id_type(schema, "bigint")
    schema.add_argument("--no-index", action="store_true", help="leave the HNSW index out")
    schema.add_argument(
        "--apply", nargs="?", const="", metavar="DSN",
        help="apply the schema to this database instead of printing it (no DSN: $DATABASE_URL)",
    )
    schema.set_defaults(run="schema")

    delete = commands.add_parser(
        "delete", help="delete stored sections by id or by source",
        description="Delete rows of the table: the ids given, or every row of a source (the name a sync "
        "recorded on them). Prints how many were deleted; --dry-run counts them and deletes nothing.",
    )
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", nargs="+", metavar="ID", help="section ids (an id of digits is a number "
                       "in a table of bigint ids)")
    which.add_argument("--source", metavar="NAME", help="every row of this source")
    delete.add_argument("--dry-run", action="store_true", help="count the rows that would be deleted; delete nothing")
    delete.add_argument("--table", default=DEFAULT_TABLE, help="table name (default: %(default)s)")
    delete.add_argument("--json", action="store_true", help="print the counts as JSON")
    _add_target_options(delete)
    delete.set_defaults(run="delete", dimensions=None)  # check_table reads it

    db = commands.add_parser(
        "db", help="the embedded PostgreSQL: connection string, running or not, --serve, --stop, --size",
        description="Print the embedded PostgreSQL's data folder, whether its server runs and, while it runs, "
        "its connection string (for DATABASE_URL). The folder: --data-dir, else $CORE_DATA_DIR, else the "
        "per-user default (the one ingest and search use).",
    )
    db.add_argument("--data-dir", metavar="DIR", help="data folder of the embedded PostgreSQL (default: as ingest's)")
    action = db.add_mutually_exclusive_group()
    action.add_argument("--serve", action="store_true",
                        help="start the server (creating the database if new) and keep it running until Ctrl-C")
    action.add_argument("--stop", action="store_true", help="stop the server running on the folder")
    action.add_argument("--size", action="store_true", help="also print rows per table and bytes on disk")
    db.set_defaults(run="db")
    return parser
