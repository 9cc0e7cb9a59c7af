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

In CI (``CI`` set to anything but empty, 0, false or no) a skipped test or module
fails the run instead: every skip this suite can take is a required component
missing (the embedded PostgreSQL package, pgvector's HNSW on this CPU, the
PostgREST stand-in, psutil/psycopg), and a green run that tested none of it
would be a lie. Locally a skip stays a skip, with its reason in the summary.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
_INTEGRATION = _HERE / "integration"
if str(_HERE / "support") not in sys.path:
    sys.path.insert(0, str(_HERE / "support"))

import signal  # noqa: E402

# A test run started in the background by a non-interactive shell (`bash .ci/run &`, nohup in a
# script) inherits SIGINT ignored, and so would every CLI it spawns: Python then never raises
# KeyboardInterrupt, and every Ctrl-C test fails (exit 0 or 2 instead of 130; measured: the 11
# SIGINT tests of a backgrounded run). The tests are about Ctrl-C, so take SIGINT back: a process
# that handles it (rather than ignoring it) hands it to its children as the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


CI_SKIP_FAILURE = (
    "CI={ci}: a required component was skipped, which fails a CI run: {reason} "
    "(install the dev extra: pip install -e '.[dev]'; unset CI to let it skip locally)"
)


def in_ci() -> bool:
    """True when ``CI`` is set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report: Any) -> None:
    report.outcome = "failed"
    report.longrepr = CI_SKIP_FAILURE.format(ci=os.environ.get("CI"), reason=_skip_reason(report.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, a skipped test (a fixture's or the test's own ``pytest.skip``) is a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """In CI, a module skipped at import (``importorskip``) is a collection error."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if in_ci() and report.skipped:
        _fail_skip(report)
