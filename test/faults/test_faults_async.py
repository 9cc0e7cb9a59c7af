"""The fault suite through the async API (issue #15 items 1 and 2): one `AsyncPostgresStore` and one
`AsyncEmbeddingService` shared by concurrent ingests and searches while the server injects faults,
and Ctrl-C under ``asyncio.run`` in a real process. Every stored vector is checked against its own
text's (`check_table`); a report's count is what a fresh connection sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fault_helpers import FIGURES, check_table, make_sections, settle

from core import AsyncEmbeddingService, AsyncPostgresStore

DIMS = 256
REPO = Path(__file__).resolve().parents[2]


def test_async_store_shared_by_concurrent_ingests_under_faults(openai_env: Any, pg_conn: Any, pg_dsn: str) -> None:
    """Four ingests of disjoint sections and searches, gathered on one store and one service, with
    10 % 500s, 10 % 503s and 10 % resets: every section stored or reported failed, every stored
    vector its own, and the reports' sum is the table's count."""
    fake = openai_env
    parts = [make_sections(400, seed=31 + n, first_id=1 + 1000 * n) for n in range(4)]
    fake.configure(fault_rates={"500": 0.10, "503": 0.10, "reset": 0.10}, seed=31, fault_script=["ok"])

    async def main() -> list[dict[str, Any]]:
        async with AsyncEmbeddingService(
            api_key="local", base_url=fake.base_url, dimensions=DIMS, max_batch_size=25, max_retries=10, timeout=2.0
        ) as service, AsyncPostgresStore(pg_dsn, table="faults_shared", dimensions=DIMS, embedding_service=service) as store:
            runs = [store.batch_ingest_embeddings(p, service, batch_size=25) for p in parts]
            searches = [store.search(parts[0][i]["content"], k=3) for i in range(8)]
            results = await asyncio.gather(*runs, *searches, return_exceptions=True)
            reports = [r for r in results[: len(runs)] if isinstance(r, dict)]
            assert len(reports) == len(runs), [r for r in results if isinstance(r, BaseException)]
            return reports

    reports = asyncio.run(main())
    stats = settle(fake)
    FIGURES.add_faults(stats)
    sections = [s for p in parts for s in p]
    report = {
        "success_count": sum(r["success_count"] for r in reports), "failed_count": sum(r["failed_count"] for r in reports),
        "skipped_count": 0, "failures": [f for r in reports for f in r["failures"]], "skipped_ids": [],
    }
    check = check_table(pg_dsn, "faults_shared", sections, report, dimensions=DIMS)
    check.assert_clean()
    assert report["success_count"] == len(check.stored)  # what a fresh connection sees
    assert sum(stats["faults"].values()) > 0, stats["faults"]


CHILD = r"""
import asyncio, json, sys
from core import AsyncEmbeddingService, AsyncPostgresStore
from core.errors import IngestInterrupted
dsn, base_url, path = sys.argv[1:4]
sections = json.load(open(path))

async def main():
    async with AsyncEmbeddingService(api_key="local", base_url=base_url, dimensions=256, max_batch_size=20,
                                     max_concurrency=2) as service, AsyncPostgresStore(dsn, table="faults_sigint",
                                                                                       dimensions=256) as store:
        def progress(p):
            if p.stored:
                print("STORED", p.stored, flush=True)
        await store.batch_ingest_embeddings(sections, service, batch_size=20, progress=progress)

try:
    asyncio.run(main())
    print(json.dumps({"finished": True}))
except IngestInterrupted as exc:
    print(json.dumps({"interrupted": True, **exc.report}), flush=True)
    sys.exit(130)
"""


def test_ctrl_c_under_asyncio_run_reports_what_is_stored(openai_env: Any, pg_conn: Any, pg_dsn: str, tmp_path: Path) -> None:
    """SIGINT to a process running an async ingest under ``asyncio.run`` (latency on, so the run is
    mid-flight): it exits with `IngestInterrupted`'s report, whose count is the table's."""
    fake = openai_env
    fake.configure(latency_base=0.05, seed=32)
    sections = make_sections(1500, seed=32)
    path = tmp_path / "sections.json"
    path.write_text(json.dumps(sections))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, pg_dsn, fake.base_url, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("STORED") and int(line.split()[1]) >= 100:
            break
        assert time.monotonic() < deadline, "no rows stored within a minute"
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    FIGURES.add_fault("sigint")
    assert proc.returncode == 130, err[-2000:]
    report = json.loads([line for line in rest.splitlines() if line.startswith("{")][-1])
    assert report["interrupted"] and 100 <= report["success_count"] < 1500
    check = check_table(pg_dsn, "faults_sigint", sections, {**report, "finished": False}, dimensions=DIMS)
    check.assert_clean()
    assert len(check.stored) == report["success_count"]
