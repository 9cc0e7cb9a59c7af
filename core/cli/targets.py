"""Where sections go: Supabase, a PostgreSQL (DATABASE_URL / --database-url) or the embedded one.

`select_target` picks one from the options and the environment (first match:
--database-url, --data-dir, Supabase when SUPABASE_URL is set, DATABASE_URL,
else the embedded PostgreSQL; --target forces one). The rest opens it: starts
the embedded server for the duration of a command, and gives a store whose
table is ready for a load or a search. No SQL here: the stores own it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, MissingDependencyError, StoreError
from ..secrets import redact_dsn
from ..stores.postgres_sql import index_strategy
from .console import SECRETS, Note, one_line
from .status import UsageError

__all__ = ["Target", "database", "embedded_problem", "open_supabase", "postgres_store", "prepare_load", "select_target"]


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
            return f"PostgreSQL {redact_dsn(self.dsn or '')}"
        return f"embedded PostgreSQL in {self.folder}"


def select_target(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Target:
    """The target `args` and the environment ask for (see the module docstring)."""
    env = os.environ if environ is None else environ
    supabase_url = env.get("SUPABASE_URL") or None
    supabase_key = env.get("SUPABASE_SERVICE_ROLE_KEY") or env.get("SUPABASE_KEY") or None
    SECRETS.add(supabase_key)
    SECRETS.add_dsn(args.database_url)
    SECRETS.add_dsn(env.get("DATABASE_URL"))
    if args.database_url and args.data_dir:
        raise UsageError("--database-url and --data-dir name two different databases: pass one")
    kind = args.target
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
        else:
            kind = "postgres" if env.get("DATABASE_URL") else "embedded"
    if kind == "supabase":
        if not supabase_url or not supabase_key:
            raise UsageError("--target supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_KEY)")
        return Target("supabase", url=supabase_url, key=supabase_key)
    if kind == "postgres":
        dsn = args.database_url or env.get("DATABASE_URL")
        if not dsn:
            raise UsageError("--target postgres needs --database-url or DATABASE_URL")
        return Target("postgres", dsn=dsn)
    from ..embedded.server import data_dir

    return Target("embedded", folder=data_dir(args.data_dir))


def embedded_problem(target: Target) -> str | None:
    """Why the embedded pgvector cannot use HNSW / `vector` distances here (None for other targets)."""
    if target.kind != "embedded":
        return None
    from ..embedded.server import vector_math_problem

    return vector_math_problem()


@contextlib.contextmanager
def database(target: Target, note: Note, *, must_exist: bool = False) -> Iterator[str]:
    """The DSN of a PostgreSQL target; starts (and afterwards lets go of) the embedded one."""
    if target.kind == "postgres":
        assert target.dsn is not None
        yield target.dsn
        return
    from ..embedded.server import EmbeddedPostgres, import_pgserver, opened_as_root

    server = EmbeddedPostgres(target.folder)
    if must_exist and not server.initialised:
        raise UsageError(
            f"no embedded database in {server.folder} yet: run ingest first (or pass --data-dir / --database-url)"
        )
    try:
        server.check_folder()
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
        server.stop()
        raise UsageError(str(exc)) from None
    SECRETS.add_dsn(dsn)
    note(f"embedded PostgreSQL {'created' if created else 'ready'} in {time.monotonic() - started:.1f} s")
    try:
        yield dsn
    finally:
        server.stop()


def postgres_store(
    dsn: str, table: str, dimensions: int, *, halfvec_scan: bool = False, id_type: str | None = None,
    match_function: str | None = None,
) -> Any:
    """A `PostgresStore` that creates nothing on its own (the CLI prepares the table itself).

    Args:
        id_type: A new table's id type (--id-type); None: decided from the first ids.
        match_function: The search function (--match-function); None: the table's own.
    """
    from ..stores.postgres import PostgresStore

    SECRETS.add_dsn(dsn)
    try:
        return PostgresStore(dsn, table=table, dimensions=dimensions, create_schema=False, halfvec_scan=halfvec_scan,
                             id_type=id_type, match_function=match_function)
    except (ConfigurationError, MissingDependencyError) as exc:
        raise UsageError(str(exc)) from None


def prepare_load(
    store: Any, model: str, *, index: bool, drop_index: bool, first_ids: Sequence[Any] = (),
    rebuild: str = "auto", incoming: int | None = None, written_share: Callable[[], float] | None = None,
) -> tuple[bool, str | None]:
    """Make `store`'s table ready for a load: (whether the HNSW index is to be built after it, and
    what was decided about an existing index, in words: None when there was none or it stays).

    Args:
        index: Have an HNSW index at the end (False: --no-index, or pgvector cannot build one here).
        drop_index: Drop an existing index (inserts into it would crash this pgvector).
        rebuild: ``--rebuild-index``: auto (drop an existing index when the load is large
            against the table: `index_strategy`), always, never.
        incoming: How many sections the load holds (None: unknown, e.g. standard input).
        written_share: The share of them the load is expected to write (asked only when an
            existing index might be dropped): a re-run of an unchanged corpus writes none, and
            dropping the index of a million rows to rebuild it for nothing took 20 minutes.
        first_ids: The ids of the first sections to load: a new table's id column follows them
            (integers: bigint, else text) unless the store was given an id type; an existing
            table keeps its own.

    Raises:
        UsageError: The table holds vectors of another size.
        StoreError: The database is unreachable or refuses, or --id-type differs from the table's.
    """
    state = store.table_state()
    if not state.exists and first_ids:
        store.claim_ids(list(first_ids))  # the library's own rule, before the table is created below
    if state.dimensions is not None and state.dimensions != store.dimensions:
        raise UsageError(
            f"table {store.table!r} holds {state.dimensions}-dimensional vectors, not {store.dimensions} "
            f"({model}): pass --dimensions {state.dimensions} or another --table"
        )
    build_after, why = index and not state.index_exists, None
    if state.index_exists and drop_index:
        store.drop_index()
        build_after = index
    elif state.index_exists and index:
        rows = state.rows_estimate if state.rows_estimate is not None else (0 if state.empty else store.count())
        writes = incoming
        if incoming is not None and rows and rebuild == "auto" and written_share is not None:
            writes = round(incoming * written_share())
        drop, why = index_strategy(rebuild, table_rows=rows, incoming=writes, index_exists=True)
        if drop:
            store.drop_index()
            build_after = True
        else:
            why = None  # kept: nothing to say
    store.ensure_schema(with_index=False)
    return build_after, why


def written_share(store: Any, model: str, sections: Sequence[Any], *, store_content: bool,
                  metadata_fields: Sequence[str] | None) -> float:
    """The share of `sections` (a load's first window) that `store` does not hold as they are:
    new, changed, or with other metadata, as the ingest itself will decide (1.0 when none is valid).

    Raises:
        StoreError: The table cannot be read.
    """
    from ..engine.ingest_run import IngestRun
    from ..stores.ingest import stored_hashes

    run = IngestRun(model, store_content=store_content, metadata_fields=metadata_fields)
    window = run.take_window(sections)
    valid = len(window.items)
    if not valid:
        return 1.0
    run.skip_stored(window, stored_hashes(store, window), refresh=True)
    return (len(window.items) + len(window.refresh)) / valid


def open_supabase(target: Target, table: str, dimensions: int | None, *, match_function: str | None = None) -> Any:
    """A `SupabaseStore`, after its preflight read (reachable, table there, vector size): before anything is paid for.

    Raises:
        UsageError: The URL or key cannot even make a client.
        StoreError: The preflight failed (one line naming URL and table, never the key).
    """
    from ..stores.supabase import SupabaseStore

    try:
        store = SupabaseStore(target.url, target.key, table=table, match_function=match_function)
    except Exception as exc:  # supabase's own errors (bad URL...) have no common base
        raise UsageError(f"cannot use Supabase at {target.url}: {one_line(exc)}") from None
    store.preflight(dimensions)
    return store
