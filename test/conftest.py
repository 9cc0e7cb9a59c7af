"""Test-suite fixtures and layout.

- ``test_embedding_service.py``, ``test_supabase_store.py``: the seed's tests, at
  the seed's paths so its verify commands run as written.
- ``unit/``: fast, in-process tests (fakes, respx); no server is started.
- ``integration/``: tests that start PostgreSQL or local HTTP servers on
  127.0.0.1; every test there is marked ``integration`` (``-m "not integration"``
  runs the unit tests alone).
- ``support/``: fixtures and the one fake per external service, imported as
  top-level modules (this file puts ``support/`` on sys.path).
- ``servers/``: test-only servers run in their own processes (``servers.postgrest_server``).

Each fixture family lives in its own module; imported here so pytest sees them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_INTEGRATION = _HERE / "integration"
if str(_HERE / "support") not in sys.path:
    sys.path.insert(0, str(_HERE / "support"))

from fixtures_openai import *  # noqa: E402,F401,F403  (local OpenAI-compatible server)
from fixtures_pg import *  # noqa: E402,F401,F403  (real PostgreSQL 18 + pgvector from PyPI)
from fixtures_postgrest import *  # noqa: E402,F401,F403  (PostgREST stand-in over that PostgreSQL)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under integration/ with ``integration``."""
    for item in items:
        if _INTEGRATION in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Timed tests (the seed's performance tests) start on a collected heap.

    They time a ~15 ms batch against ~300 ms of single calls; a full garbage
    collection of what hundreds of earlier tests left behind, landing inside that
    batch, was measured to turn a 19x ratio into 0.8x once in a full-suite run.
    """
    if "performance" in item.name or "benchmark" in item.name:
        import gc

        gc.collect()
