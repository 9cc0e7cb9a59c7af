"""``ingest FILE``: embed the sections of a file (or standard input) and store them.

Validation, skipping unchanged sections, embedding and writing are the
library's (`SectionStore.batch_ingest_embeddings`); this module picks the
target, shows progress, builds the HNSW index after a load into PostgreSQL,
and ends with the summary and the failed-sections file (`core.cli.summary`).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from ..errors import CoreError
from ..limits import INGEST_WINDOW, MAX_INPUTS_PER_REQUEST, MAX_TOKENS_PER_INPUT
from . import batch, dry_run
from .console import Note, warn
from .failures import failed_path
from .progress import Metered, ProgressBar
from .settings import check_table, dimensions, make_service, model
from .sources import Source, open_records, resolve_source, total_records
from .status import EXIT_FAILED, EXIT_USAGE, RUN_STOPPING, CliError, UsageError, stopped_message
from .summary import Run, finish, interrupted
from .targets import database, embedded_problem, open_supabase, postgres_store, prepare_load, select_target

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    check_table(args)
    if args.batch_size > MAX_INPUTS_PER_REQUEST:
        raise UsageError(f"--batch-size must be at most {MAX_INPUTS_PER_REQUEST}, not {args.batch_size}")
    source = resolve_source(args.file, args.format)
    batch.check(args, source)
    tpm = None if args.batch_api else args.tpm  # batches are outside the per-minute limits
    if args.dry_run and args.batch_api:
        return batch.dry_run(args, source, model(args))
    if args.dry_run:
        return dry_run.dry_run(args, source, model(args), tpm=tpm)
    failed_out = failed_path(args, source)
    size = dimensions(args)
    options: dict[str, Any] = {
        "max_batch_size": args.batch_size,
        "max_concurrency": args.concurrency,
        "tokens_per_minute": tpm,
    }
    if args.dimensions is not None:
        options["dimensions"] = args.dimensions
    if tpm is not None and tpm < MAX_TOKENS_PER_INPUT:
        # A section above the whole per-minute budget can never be sent: it fails alone.
        options["max_tokens_per_input"] = max(1, int(tpm))
    service = make_service(model(args), **options)
    target = select_target(args)
    note = Note(args.quiet)
    started = time.monotonic()
    with contextlib.ExitStack() as keep:  # standard input's copy lives until the failed-sections file is written
        keep.callback(service.close)
        records = open_records(source, keep)  # a malformed file fails now, before anything starts
        with contextlib.ExitStack() as stack:
            note(f"target: {target.describe()}, table {args.table}")
            build_index = False
            if target.kind == "supabase":
                store = open_supabase(target, args.table, size)
            else:
                problem = embedded_problem(target)
                dsn = stack.enter_context(database(target, note))
                store = postgres_store(dsn, args.table, size)
                stack.callback(store.close)
                build_index = prepare_load(
                    store, model(args), index=not (args.no_index or problem), drop_index=bool(problem)
                )
                if problem and not args.no_index:
                    note(f"note: {problem}")
            note.release()
            if args.batch_api:  # through OpenAI's Batch API: core.cli.batch
                outcome = batch.ingest(args, store, service, records, source, note)
            else:
                outcome = _ingest(args, store, service, records, source)
            if outcome.interrupted is not None:
                return interrupted(args, outcome, model(args), time.monotonic() - started)
            if build_index:
                _build_index(store, note)
        return finish(args, outcome, source, failed_out, model(args), time.monotonic() - started)


def _ingest(args: argparse.Namespace, store: Any, service: Any, records: Iterator[Any], source: Source) -> Run:
    outcome = Run()
    bar = ProgressBar(
        None if args.quiet else total_records(source),
        disable=True if args.quiet else (False if args.progress else None),
    )

    def sections() -> Iterator[dict[str, Any]]:
        for record in records:
            outcome.records += 1
            if record.error is not None:
                outcome.unreadable += 1
                bar.on_unreadable()
                continue
            yield record.section

    try:
        outcome.result = store.batch_ingest_embeddings(
            sections(),
            Metered(service, bar.on_request),
            batch_size=args.batch_size,
            skip_unchanged=not args.no_skip,
            window=INGEST_WINDOW,
            progress=bar.on_ingest,
        )
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP under stop_on_signals
        outcome.interrupted = exc
        outcome.result = dict(getattr(exc, "report", None) or {})
    except RUN_STOPPING as exc:
        raise CliError(stopped_message(exc), EXIT_USAGE) from None
    except (CoreError, OSError) as exc:  # e.g. the database went away half way
        raise CliError(stopped_message(exc), EXIT_FAILED) from None
    finally:
        bar.close()
    return outcome


def _build_index(store: Any, note: Note) -> None:
    """The HNSW index, built once after the load (not for an empty table: the next load builds it)."""
    try:
        rows = store.count()
        if not rows:
            return
        note(f"building the HNSW index on {rows:,} rows...")
        started = time.monotonic()
        store.create_index()
        note(f"index built in {time.monotonic() - started:.1f} s")
    except CoreError as exc:
        warn(f"the HNSW index was not built ({exc}); searches work without it, and the next ingest builds it")
