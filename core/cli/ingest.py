"""``ingest FILE``: embed the sections of a file (or standard input) and store them.

Validation, skipping unchanged sections, embedding and writing are the
library's (`SectionStore.batch_ingest_embeddings`, or `sync_sections` with
``--sync``: `core.cli.sync`); this module picks the target, shows progress,
builds the HNSW index after a load into PostgreSQL, and ends with the summary
and the failed-sections file (`core.cli.summary`).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

from ..errors import CoreError
from ..limits import INGEST_WINDOW, MAX_INPUTS_PER_REQUEST, MAX_TOKENS_PER_INPUT
from . import batch, dry_run, sync
from .console import Note, printable, warn
from .failures import failed_path
from .progress import Metered, ProgressBar
from .settings import check_table, dimensions, make_service, model
from .sources import Source, open_records, resolve_source, total_records
from .status import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RUN_STOPPING, CliError, UsageError, stopped_message
from .summary import Run, finish, interrupted
from .targets import (
    Target,
    database,
    embedded_problem,
    open_supabase,
    postgres_store,
    prepare_load,
    select_target,
    written_share,
)

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    check_table(args)
    if args.batch_size > MAX_INPUTS_PER_REQUEST:
        raise UsageError(f"--batch-size must be at most {MAX_INPUTS_PER_REQUEST}, not {args.batch_size}")
    source = resolve_source(args.file, args.format)
    batch.check(args, source)
    sync_source = sync.check(args, source)
    tpm = None if args.batch_api else args.tpm  # batches are outside the per-minute limits
    if args.dry_run and args.batch_api:
        return batch.dry_run(args, source, model(args))
    if args.dry_run and sync_source is not None:
        return _sync_dry_run(args, source, sync_source, tpm)
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
        first = list(itertools.islice(records, INGEST_WINDOW))  # a new table's id type follows these ids
        first_ids, records = _ids(first), itertools.chain(first, records)
        first_sections = [record.section for record in first if record.section is not None]
        del first  # the chain lets go of the records as it hands them on
        with contextlib.ExitStack() as stack:
            note(f"target: {target.describe()}, table {args.table}")
            build_index, index_plan = False, None
            if target.kind == "supabase":
                store = _supabase(args, target, size)
            else:
                problem = embedded_problem(target)
                dsn = stack.enter_context(database(target, note))
                store = postgres_store(dsn, args.table, size, id_type=args.id_type, match_function=args.match_function)
                stack.callback(store.close)
                build_index, index_plan = prepare_load(
                    store, model(args), index=not (args.no_index or problem), drop_index=bool(problem),
                    first_ids=first_ids, rebuild=args.rebuild_index, incoming=total_records(source),
                    written_share=lambda: written_share(
                        store, model(args), first_sections, store_content=not args.no_content,
                        metadata_fields=args.metadata_fields,
                    ),
                )
                if index_plan:
                    note(f"index: {index_plan}")
                if problem and not args.no_index:
                    note(f"note: {problem}")
            del first_sections
            note.release()
            try:
                if args.batch_api:  # through OpenAI's Batch API: core.cli.batch
                    outcome = batch.ingest(args, store, service, records, source, note)
                else:
                    outcome = _ingest(args, store, service, records, source, sync_source)
            except BaseException:
                if index_plan:  # this run dropped the table's index
                    _index_left(args)
                raise
            if outcome.interrupted is not None:
                if index_plan:
                    _index_left(args)
                return interrupted(args, outcome, model(args), time.monotonic() - started)
            if build_index:
                _build_index(store, note, embedded=target.kind == "embedded")
        return finish(args, outcome, source, failed_out, model(args), time.monotonic() - started)


def _ids(records: list[Any]) -> list[Any]:
    """The usable ids of these records (what the library would choose a new table's id type from)."""
    ids = [record.section.get("id") for record in records if record.section is not None]
    return [i for i in ids if isinstance(i, (int, str)) and not isinstance(i, bool)]


def _supabase(args: argparse.Namespace, target: Target, size: int | None) -> Any:
    if args.id_type is not None:
        raise UsageError("--id-type applies to tables the CLI creates (PostgreSQL targets); on Supabase, "
                         "create the table with: schema --id-type ... (its SQL, run in the SQL editor)")
    return open_supabase(target, args.table, size, match_function=args.match_function)


def _sync_dry_run(args: argparse.Namespace, source: Source, name: str, tpm: float | None) -> int:
    """``--dry-run --sync``: the library's dry run against the table (reads it; embeds, writes, deletes nothing)."""
    target = select_target(args)
    size = dimensions(args)
    note = Note(args.quiet or args.json)
    with contextlib.ExitStack() as stack:
        if target.kind == "supabase":
            store = _supabase(args, target, size)
        else:
            dsn = stack.enter_context(database(target, note, must_exist=True))
            store = postgres_store(dsn, args.table, size, id_type=args.id_type, match_function=args.match_function)
            stack.callback(store.close)
            if not store.table_state().exists:
                note.release()
                note(f"note: table {args.table!r} does not exist yet: every section would be embedded, nothing deleted")
                stack.close()
                return dry_run.dry_run(args, source, model(args), tpm=tpm)
        note.release()
        service = sync.PlanOnly(model(args), args.dimensions)
        outcome = _ingest(args, store, service, open_records(source), source, name)
    if outcome.interrupted is not None:
        raise outcome.interrupted
    return _report_sync_dry_run(args, outcome, source)


def _report_sync_dry_run(args: argparse.Namespace, outcome: Run, source: Source) -> int:
    result = outcome.result
    failed = int(result.get("failed_count", 0)) + outcome.unreadable
    counts = {
        "dry_run": True, "sync": True, "file": source.label, "table": args.table, "sections": outcome.records,
        "would_embed": int(result.get("would_embed", 0)), "would_embed_tokens": int(result.get("would_embed_tokens", 0)),
        "would_update": int(result.get("would_update", 0)), "unchanged": int(result.get("skipped_count", 0)),
        "failed": failed,
    }
    status = EXIT_FAILED if failed or sync.refused(result) else EXIT_OK
    if args.json:
        print(json.dumps({**counts, **sync.json_fields(result)}))
        return status
    lines = [
        f"dry run --sync: {source.label} into table {args.table}; nothing embedded, stored or deleted",
        f"  sections: {counts['sections']:,} ({counts['would_embed']:,} to embed, {counts['would_update']:,} to update "
        f"without embedding, {counts['unchanged']:,} unchanged, {failed:,} would fail)",
        f"  tokens to embed: {counts['would_embed_tokens']:,}",
        *("  " + line for line in sync.summary_lines(result, dry_run=True)),
    ]
    print("\n".join(printable(line) for line in lines))
    return status


def _ingest(
    args: argparse.Namespace, store: Any, service: Any, records: Iterator[Any], source: Source, sync_source: str | None
) -> Run:
    outcome = Run()
    bar = ProgressBar(
        None if args.quiet else total_records(source),
        disable=True if args.quiet else (False if args.progress else None),
    )

    read_all = False

    def sections() -> Iterator[dict[str, Any]]:
        nonlocal read_all
        for record in records:
            outcome.records += 1
            if record.error is not None:
                outcome.unreadable += 1
                bar.on_unreadable()
                continue
            yield record.section
        read_all = True

    options: dict[str, Any] = {
        "batch_size": args.batch_size, "window": INGEST_WINDOW, "progress": bar.on_ingest,
        "store_content": not args.no_content, "metadata_fields": args.metadata_fields,
    }
    try:
        if sync_source is not None:
            outcome.result = store.sync_sections(
                sections(), Metered(service, bar.on_request), source=sync_source, max_delete=args.max_delete,
                dry_run=args.dry_run,
                check_complete=lambda: sync.incomplete(outcome.records, outcome.unreadable, read_all, source),
                **options,
            )
        else:
            outcome.result = store.batch_ingest_embeddings(
                sections(), Metered(service, bar.on_request), skip_unchanged=not args.no_skip, **options
            )
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP under stop_on_signals
        outcome.interrupted = exc
        outcome.result = dict(getattr(exc, "report", None) or {})
    except RUN_STOPPING as exc:
        if sync_source is not None and not isinstance(getattr(exc, "report", None), dict):
            # Before the sync read anything (its lock is taken: the message names the holder), or after
            # every section was stored (reading or deleting the source's rows): the message alone.
            raise CliError(str(exc), EXIT_USAGE) from None
        raise CliError(stopped_message(exc), EXIT_USAGE) from None
    except (CoreError, OSError) as exc:  # e.g. the database went away half way
        raise CliError(stopped_message(exc), EXIT_FAILED) from None
    finally:
        bar.close()
    return outcome


def _index_left(args: argparse.Namespace) -> None:
    """Say that the table has no HNSW index now (never left silently) and who builds it."""
    warn(f"table {args.table} has no HNSW index now (the load stopped before building it): searches scan the "
         "table until the next ingest into it builds the index (or run schema --apply)")


def _build_index(store: Any, note: Note, *, embedded: bool) -> None:
    """The HNSW index, built once after the load (not for an empty table: the next load builds it).

    On the embedded server the build may take a share of this machine's memory
    (`index_memory_cap`); on a user's database, the store's own cap."""
    try:
        rows = store.count()
        if not rows:
            return
        from ..embedded.spawn import index_memory_cap  # here: the CLI's start imports no server code

        cap = index_memory_cap() if embedded else None
        memory = f", up to {cap / (1 << 30):.1f} GB of memory" if cap else ""
        note(f"building the HNSW index on {rows:,} rows{memory}...")
        started = time.monotonic()
        store.create_index(**({"memory_cap": cap} if cap else {}))
        note(f"index built in {time.monotonic() - started:.1f} s")
    except CoreError as exc:
        warn(f"the HNSW index was not built ({exc}); searches work without it, and the next ingest builds it")
