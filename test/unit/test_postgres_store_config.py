"""PostgresStore without a database: DSNs shown and scrubbed through core.secrets, settings refused,
missing optional dependencies named with their extra. The store on a real PostgreSQL is in
test/integration/test_postgres_store.py.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from core.errors import ConfigurationError, MissingDependencyError
from core.stores.postgres import PostgresStore
from core.secrets import redact_dsn, scrub_dsn


# --- secrets, configuration, dependencies --------------------------------------


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:pa%3Ass@db.example.com:5432/app", "postgresql://app:***@db.example.com:5432/app"),
        ("postgres://app:secret@h/db?sslmode=require", "postgres://app:***@h/db?sslmode=require"),
        ("postgresql://h/db?user=app&password=secret&x=1", "postgresql://h/db?user=app&password=***&x=1"),
        ("host=h user=app password='se cret' dbname=db", "host=h user=app password=*** dbname=db"),
        ("host=h password = secret", "host=h password = ***"),
        ("postgresql://app@h/db", "postgresql://app@h/db"),
    ],
)
def test_redact_dsn(dsn: str, shown: str) -> None:
    """The store names its database through core.secrets (the one secrets module)."""
    assert redact_dsn(dsn) == shown


def test_scrub_dsn_removes_every_spelling() -> None:
    dsn = "postgresql://app:pa%3Ass@h/db"
    assert scrub_dsn('missing "=" after "pa:ss" or pa%3Ass', dsn) == 'missing "=" after "***" or ***'


@pytest.mark.parametrize(
    "kw",
    [
        {"rows_per_chunk": 0},
        {"rows_per_chunk": 10**6},
        {"table": "bad-name"},
        {"match_function": "select"},
        {"dimensions": 0},
        {"connect_timeout": 0},
    ],
)
def test_bad_settings(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://h/db", **kw)


@pytest.mark.parametrize(
    ("module", "package"), [("psycopg", "psycopg"), ("pgvector.psycopg", "pgvector"), ("numpy", "numpy")]
)
def test_missing_dependency(monkeypatch: pytest.MonkeyPatch, module: str, package: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingDependencyError, match=rf"PostgresStore needs the optional package '{package}'") as info:
        PostgresStore("postgresql://h/db")
    assert "supabase-section-embeddings[postgres]" in str(info.value)
    assert info.value.package == package and info.value.extra == "postgres"
