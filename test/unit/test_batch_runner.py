"""The runner's decisions: submitting under the queue's room, adopting a batch a dead run created,
resubmitting with an attempt cap, backoff; and the batch price."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from fakes import FakeClock
from fakes_batch import MemoryStore

from core import pricing
from core.batch_api import Polling
from core.batch_api.collect import Collector
from core.batch_api.files import BatchLimits, BatchWriter, encode_body
from core.batch_api.job import JobStore
from core.batch_api.runner import Runner

MODEL = "text-embedding-3-small"


class StubRemote:
    """The `Remote` interface over a dict of batches (statuses set by the test)."""

    def __init__(self) -> None:
        self.batches: dict[str, SimpleNamespace] = {}
        self.created: list[dict[str, str]] = []
        self.uploads = 0
        self.calls = 0

    def upload(self, path):
        self.uploads += 1
        return f"file-{self.uploads}"

    def create(self, input_file_id, metadata):
        batch = SimpleNamespace(id=f"batch_{len(self.batches) + 1}", status="validating", input_file_id=input_file_id,
                                metadata=metadata, request_counts=None, output_file_id=None, error_file_id=None,
                                errors=None)
        self.batches[batch.id] = batch
        self.created.append(metadata)
        return batch

    def find(self, input_file_id, metadata, since):
        return next((b for b in self.batches.values() if b.input_file_id == input_file_id
                     and b.metadata == metadata), None)

    def retrieve(self, batch_id):
        return self.batches[batch_id]

    def delete_file(self, file_id):
        pass


def _job(tmp_path, batches=3, lines=2, tokens=100):
    job = JobStore(tmp_path, {"model": MODEL})
    writer = BatchWriter(tmp_path, BatchLimits(requests=lines), job.new_key,
                         lambda f: job.add_batch(f.as_entry(), f.origins))
    for n in range(batches * lines):
        writer.add(encode_body({"input": [f"t{n}"]}), inputs=1, tokens=tokens, sections=[[n, "a" * 64, 1, "t", 0]])
    writer.finish()
    return job


def _runner(job, remote, **options):
    clock = FakeClock()
    collector = Collector(job, MemoryStore(), remote, model=MODEL, dimensions=None, timestamp=lambda: "")
    runner = Runner(job, remote, collector, limits=BatchLimits(), sleep=clock.sleep, clock=clock, **options)
    return runner, clock


def test_everything_prepared_is_submitted_keyed_by_job_and_batch(tmp_path):
    with _job(tmp_path) as job:
        remote = StubRemote()
        runner, _ = _runner(job, remote)
        runner.run(wait=False)
        assert [b["state"] for b in job.batches] == ["submitted"] * 3
        assert remote.created == [{"core_job": job.job_id, "core_batch": f"b00000{n}"} for n in (1, 2, 3)]
        assert runner.unfinished()


def test_a_cap_on_enqueued_tokens_holds_batches_back_until_one_ends(tmp_path):
    with _job(tmp_path, tokens=100) as job:  # 200 tokens per batch
        remote = StubRemote()
        runner, _ = _runner(job, remote, max_enqueued_tokens=450)
        runner.submit()
        assert [b["state"] for b in job.batches] == ["submitted", "submitted", "prepared"]
        remote.batches["batch_1"].status = "cancelled"  # ended: room again
        runner.poll()
        runner.submit()
        assert job.batches[2]["state"] == "submitted"


def test_a_batch_the_dead_run_created_is_found_not_created_again(tmp_path):
    with _job(tmp_path, batches=1) as job:
        remote = StubRemote()
        entry = job.batches[0]
        entry.update(state="uploaded", input_file_id="file-9", uploaded_at=0.0, create_attempted=True)
        made = remote.create("file-9", {"core_job": job.job_id, "core_batch": "b000001"})  # before the crash
        runner, _ = _runner(job, remote)
        runner.submit()
        assert entry["batch_id"] == made.id and len(remote.batches) == 1 and remote.uploads == 0
        assert "create_attempted" not in entry


def test_the_attempt_after_a_dead_runs_failed_create_is_a_create(tmp_path):
    with _job(tmp_path, batches=1) as job:
        remote = StubRemote()
        job.batches[0].update(state="uploaded", input_file_id="file-9", uploaded_at=0.0, create_attempted=True)
        runner, _ = _runner(job, remote)
        runner.submit()
        assert len(remote.created) == 1 and job.batches[0]["state"] == "submitted"


def test_retried_lines_are_copied_into_a_new_batch_until_the_attempt_cap(tmp_path):
    with _job(tmp_path, batches=1, lines=2) as job:
        entry = job.batches[0]
        entry["state"] = "collected"
        job.settle(entry, 0, "stored")
        job.settle(entry, 1, "retry", "batch_expired", "expired")
        remote = StubRemote()
        runner, _ = _runner(job, remote, max_attempts=2)
        runner.requeue()
        assert job.lines(entry, "moved") == {1} and [b["key"] for b in job.batches] == ["b000001", "b000002"]
        second = job.batches[1]
        assert second["lines"] == 1 and next(job.manifest("b000002"))["attempt"] == 2
        assert job.requests_path("b000002").read_bytes().startswith(b'{"custom_id":"b000002-00000"')
        assert not job.requests_path("b000001").exists()  # every line stored or moved: not needed any more
        second["state"] = "collected"
        job.settle(second, 0, "retry", "batch_expired", "expired again")
        runner.requeue()
        assert len(job.batches) == 2
        assert job.why(second, "failed", 0)["reason"] == "expired again; gave up after 2 submissions"
        assert not runner.unfinished()


def test_polling_backs_off_while_nothing_moves_and_starts_over_when_something_does(tmp_path):
    with _job(tmp_path, batches=1) as job:
        remote = StubRemote()
        runner, clock = _runner(job, remote, polling=Polling(interval=10, max_interval=40, backoff=2), max_attempts=1)
        script = iter(["in_progress"] * 4 + ["finalizing"] * 3 + ["cancelled"])

        def retrieve(batch_id):
            batch = remote.batches[batch_id]
            batch.status = next(script)
            return batch

        remote.retrieve = retrieve
        runner.run(wait=True)
        assert clock.sleeps == [10, 20, 40, 40, 10, 20, 40]
        assert job.batches[0]["state"] == "collected" and runner.polls == 8


def test_the_batch_price_is_half_the_standard_price():
    assert pricing.batch_cost(1_000_000, MODEL) == Decimal("0.01")
    assert pricing.batch_cost(2_000_000, "unknown-model") is None
    assert pricing.batch_cost(1_000_000, "unknown-model", "0.4") == Decimal("0.2")


def test_a_refusal_lowers_the_budget_and_prepared_batches_too_big_for_it_are_split_before_they_go(tmp_path):
    with _job(tmp_path, batches=3, lines=4, tokens=100_000) as job:  # 3 batches of 400,000 tokens
        remote = StubRemote()
        runner, _ = _runner(job, remote, max_enqueued_tokens=800_000)
        runner.run(wait=False)
        assert [b["state"] for b in job.batches] == ["submitted", "submitted", "prepared"]
        refused = remote.batches["batch_2"]
        refused.status = "failed"
        refused.errors = SimpleNamespace(data=[SimpleNamespace(code="token_limit_exceeded", message="full", line=None)])
        remote.batches["batch_1"].status = "in_progress"
        runner.poll()
        assert runner.queue.budget == 400_000 and runner.refused == 1  # half of the 800,000 refused
        assert job.data["queue"]["budget"] == 400_000 and job.data["queue"]["refusals"] == 1
        runner.queue.slept(3600)  # the refusal's backoff has passed
        runner.requeue()
        runner.submit()
        sizes = {b["key"]: (b["state"], b["tokens"]) for b in job.batches}
        assert sizes["b000003"] == ("collected", 400_000)  # built for 800,000: split into batches of 200,000
        new = [b for b in job.batches if b["key"] > "b000003"]
        assert new and all(b["tokens"] <= 200_000 for b in new)
        assert all(why.get("free") for b in job.batches for why in (b.get("retry") or {}).values())
        assert not job.lines(job.batches[1], "failed")  # a refusal fails no line
