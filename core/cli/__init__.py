"""The command line: ``core-embed`` / ``python -m core``.

Commands:

* ``ingest FILE``: embed the sections of a JSONL, JSON or CSV file (``-``: standard
  input) and store them, with a progress bar, a summary (stored / skipped /
  failed, tokens, cost, time) and the failed sections written to
  ``<FILE stem>.failed.jsonl``. ``--dry-run`` counts tokens, requests and cost
  without a key or a database.
* ``search QUERY``: the stored sections nearest to a query.
* ``schema``: the SQL to paste into Supabase's SQL editor, or ``--apply DSN``.

Where sections go (the first that applies): ``--database-url``; ``--data-dir``
(embedded); Supabase when ``SUPABASE_URL`` is set (with
``SUPABASE_SERVICE_ROLE_KEY`` or ``SUPABASE_KEY``); ``DATABASE_URL``; else an
embedded PostgreSQL + pgvector in a local folder (`core.embedded.server`).
``--target`` forces one.

Exit status: 0 when every section was stored or skipped, 1 when some failed,
2 for a problem to fix first — options, file, key, embeddings endpoint,
database (one line on stderr, never a secret, no failed-sections file) — and
130 after Ctrl-C (128 + the signal's number after SIGTERM / SIGHUP).

Modules, each importing only those listed before it (a test checks the graph):
`status` (exit statuses, one-line errors) and `console` (what is printed, never
a secret) at the bottom; `parser` (options of every command), `settings`,
`sources`, `targets`, `progress`, `failures`, `summary`; one module per
command: `ingest` (over `dry_run` and `batch`), `search`, `schema`, `db`;
`main` on top, which imports the command asked for by name.
"""

from __future__ import annotations

from .main import main
from .status import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]
