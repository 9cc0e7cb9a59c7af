"""``schema``: print the SQL (for Supabase's SQL editor) or apply it to a database."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ConfigurationError
from ..secrets import redact_dsn
from .console import SECRETS
from .status import EXIT_OK, UsageError
from .settings import dimensions

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    from ..stores.schema import apply_schema, default_match_function, render_schema

    size = dimensions(args)
    options = {"table": args.table, "dimensions": size, "match_function": args.match_function, "with_index": not args.no_index}
    try:
        # Printed for a new table: bigint unless --id-type; applied, an existing table keeps its own.
        sql = render_schema(**options, id_type=args.id_type or "bigint")  # type: ignore[arg-type]
        function = args.match_function or default_match_function(args.table)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    if args.apply is None:
        sys.stdout.write(sql)
        return EXIT_OK
    dsn = args.apply or os.environ.get("DATABASE_URL")
    if not dsn:
        raise UsageError("--apply needs a DSN (or set DATABASE_URL)")
    SECRETS.add_dsn(dsn)
    apply_schema(dsn, **options, id_type=args.id_type)  # type: ignore[arg-type]  # StoreError: main() prints it, exit 2
    print(f"schema applied: table {args.table} (vector({size})), function {function}() on {redact_dsn(dsn)}")
    return EXIT_OK
