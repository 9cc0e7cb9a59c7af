"""The resumable job: its JSON file, line states, the lock, and the index of submitted sections."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from core.batch_api.files import BatchLimits, BatchWriter, encode_body
from core.batch_api.job import JobStore, format_lines, parse_lines
from core.errors import ConfigurationError

IDENTITY = {"model": "text-embedding-3-small", "dimensions": None, "endpoint": "/v1/embeddings"}


def _prepare(job: JobStore, specs: list[list[tuple[int, str]]], origins=()) -> None:
    """One batch file whose lines carry (section id, hash) pairs."""
    writer = BatchWriter(job.directory, BatchLimits(), job.new_key, lambda f: job.add_batch(f.as_entry(), list(origins)))
    for sections in specs:
        writer.add(encode_body({"input": ["t"] * len(sections)}), inputs=len(sections), tokens=1,
                   sections=[[sid, digest, 1, "title", k] for k, (sid, digest) in enumerate(sections)])
    writer.finish()


def test_line_ranges_round_trip():
    assert format_lines({0, 1, 2, 3, 7, 9, 10}) == "0-3,7,9-10"
    assert parse_lines("0-3,7,9-10") == {0, 1, 2, 3, 7, 9, 10}
    assert parse_lines("") == parse_lines(None) == set() and format_lines(set()) == ""


def test_a_new_job_is_written_at_once_and_reopened_with_its_state(tmp_path):
    with JobStore(tmp_path / "job", IDENTITY) as job:
        job_id = job.job_id
        _prepare(job, [[(1, "a" * 64)], [(2, "b" * 64)]])
        entry = job.batches[0]
        job.settle(entry, 0, "stored")
        job.settle(entry, 1, "failed", "invalid_request", "HTTP 400: nope")
        job.save()
    data = json.loads((tmp_path / "job" / "job.json").read_text())
    assert data["format"] == 1 and data["job_id"] == job_id and data["next_batch"] == 2
    assert data["batches"][0]["stored"] == "0" and data["batches"][0]["failed"] == {
        "1": {"code": "invalid_request", "reason": "HTTP 400: nope"}}
    with JobStore(tmp_path / "job", IDENTITY) as again:
        assert again.job_id == job_id and again.new_key() == "b000002"
        assert again.open_lines(again.batches[0]) == set()
    assert not list((tmp_path / "job").glob("*.tmp"))


def test_a_job_made_with_other_settings_is_refused(tmp_path):
    JobStore(tmp_path, IDENTITY).close()
    with pytest.raises(ConfigurationError, match="model='text-embedding-3-small', not 'text-embedding-3-large'"):
        JobStore(tmp_path, {**IDENTITY, "model": "text-embedding-3-large"})


def test_a_file_that_is_not_a_job_is_refused(tmp_path):
    (tmp_path / "job.json").write_text('{"hello": 1}')
    with pytest.raises(ConfigurationError, match="not a batch job file"):
        JobStore(tmp_path, IDENTITY)


def _try_open(path, queue):
    try:
        JobStore(path, IDENTITY).close()
        queue.put("opened")
    except ConfigurationError as exc:
        queue.put(str(exc))


def test_one_process_at_a_time(tmp_path):
    with JobStore(tmp_path, IDENTITY):
        queue: multiprocessing.Queue = multiprocessing.Queue()
        child = multiprocessing.get_context("fork").Process(target=_try_open, args=(tmp_path, queue))
        child.start()
        child.join(10)
        assert "in use by another process" in queue.get(timeout=5)
    JobStore(tmp_path, IDENTITY).close()  # released on close (and on process death)


def test_settling_moves_a_line_between_states(tmp_path):
    with JobStore(tmp_path, IDENTITY) as job:
        _prepare(job, [[(n, "a" * 64)] for n in range(5)])
        entry = job.batches[0]
        assert job.open_lines(entry) == {0, 1, 2, 3, 4}
        job.settle(entry, 3, "retry", "batch_expired", "expired")
        job.settle_many(entry, {0, 1}, "stored")
        assert job.why(entry, "retry", 3) == {"code": "batch_expired", "reason": "expired"}
        job.settle(entry, 3, "failed", "gone", "gave up")
        assert job.lines(entry, "retry") == set() and job.lines(entry, "failed") == {3}
        job.settle_many(entry, {3, 4}, "online")
        assert job.states(entry) == {"stored": {0, 1}, "failed": set(), "retry": set(), "moved": set(),
                                     "online": {3, 4}}
        assert job.open_lines(entry) == {2}


def test_a_resubmitted_batch_marks_its_origins_moved_in_the_same_save(tmp_path):
    with JobStore(tmp_path, IDENTITY) as job:
        _prepare(job, [[(1, "a" * 64)], [(2, "b" * 64)]])
        job.settle(job.batches[0], 1, "retry", "batch_expired", "expired")
        _prepare(job, [[(2, "b" * 64)]], origins=[("b000001", 1)])
    data = json.loads((tmp_path / "job.json").read_text())
    assert data["batches"][0]["moved"] == "1" and not data["batches"][0]["retry"]
    assert [b["key"] for b in data["batches"]] == ["b000001", "b000002"]


def test_the_index_knows_each_sections_latest_submission(tmp_path):
    with JobStore(tmp_path, IDENTITY) as job:
        _prepare(job, [[(10, "a" * 64), (11, "b" * 64)], [(12, "c" * 64)]])
        job.settle(job.batches[0], 1, "retry", "batch_expired", "expired")
        _prepare(job, [[(12, "c" * 64)]], origins=[("b000001", 1)])
        _prepare(job, [[(10, "d" * 64)]])  # edited after it was stored
        index = job.index()
        assert len(index) == 3
        assert index.find(10) == (int("d" * 16, 16), 2, 0)
        assert index.find(11) == (int("b" * 16, 16), 0, 0)
        assert index.find(12) == (int("c" * 16, 16), 1, 0)  # the moved line no longer counts
        assert index.find(13) is None


def test_a_url_keeps_its_host_port_and_path_without_its_userinfo():
    from core.secrets import strip_url_userinfo, url_passwords

    assert strip_url_userinfo("http://user:pw@host:8080/v1?x=1") == "http://host:8080/v1?x=1"
    assert strip_url_userinfo("https://u%40x:p%3Aw@api.example.com/v1") == "https://api.example.com/v1"
    assert strip_url_userinfo("http://host/v1") == "http://host/v1"
    assert strip_url_userinfo("http://[::1]:9/v1") == "http://[::1]:9/v1"
    assert url_passwords("http://u:p%3Aw0rd@h/v1") == ["p%3Aw0rd", "p:w0rd"]


def test_the_job_identity_holds_no_credential_and_an_old_job_with_one_continues(tmp_path):
    from types import SimpleNamespace

    from core.batch_api import BatchJob

    service = SimpleNamespace(model="text-embedding-3-small", dimensions=None, encoding_format="base64",
                              base_url="http://user:S3cretPw@127.0.0.1:9/v1")
    identity = BatchJob(tmp_path / "job", service, None).identity()
    assert identity["base_url"] == "http://127.0.0.1:9/v1"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "job.json").write_text(json.dumps({
        "format": 1, "job_id": "j1", **identity, "base_url": "http://user:S3cretPw@127.0.0.1:9/v1", "next_batch": 1,
        "batches": []}))
    with JobStore(tmp_path / "old", identity) as job:
        job.save()
    assert "S3cretPw" not in (tmp_path / "old" / "job.json").read_text()


def test_a_job_folder_that_is_a_file_or_under_a_file_is_a_typed_error_naming_it(tmp_path):
    from core.errors import JobFolderError

    (tmp_path / "f").write_text("x")
    with pytest.raises(JobFolderError, match=r"f is a file, not a folder"):
        JobStore(tmp_path / "f", IDENTITY)
    with pytest.raises(JobFolderError, match=r"cannot be written \(Not a directory\)"):
        JobStore(tmp_path / "f" / "job", IDENTITY)
    assert isinstance(JobFolderError("x"), ConfigurationError)
