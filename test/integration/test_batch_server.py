"""The local server's /v1/files and /v1/batches, driven by the real openai SDK; time moved, not waited for."""

from __future__ import annotations

import base64
import json

import numpy as np
import openai
import pytest

from core.testing import FakeOpenAIServer, expected_embedding
from core.testing.openai_server.batches import BatchControl

SMALL = "text-embedding-3-small"
DAY = 86_400


@pytest.fixture
def control(fake_openai: FakeOpenAIServer):
    control = BatchControl(fake_openai)
    control.reset()
    yield control
    control.reset()


@pytest.fixture
def client(fake_openai: FakeOpenAIServer):
    with openai.OpenAI(api_key="test-key", base_url=fake_openai.base_url, max_retries=0) as c:
        yield c


def _line(custom_id: str, texts: list[str], **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings",
            "body": {"model": SMALL, "input": texts, "encoding_format": "base64", **body}}


def _upload(client, lines: list[dict], name: str = "in.jsonl") -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.files.create(file=(name, data), purpose="batch").id


def _create(client, file_id: str, **kwargs):
    return client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", **kwargs)


def _jsonl(client, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_files_upload_retrieve_list_content_delete(client, control):
    content = b'{"a": 1}\n'
    uploaded = client.files.create(file=("x.jsonl", content), purpose="batch")
    assert (uploaded.purpose, uploaded.filename, uploaded.bytes, uploaded.object) == ("batch", "x.jsonl", 9, "file")
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content == content
    assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_batch_uploads_follow_the_batch_apis_file_rules(client, control):
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        client.files.create(file=("x.csv", b"a\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("x.jsonl", b"a\n"), purpose="nope")  # type: ignore[arg-type]
    control.configure(max_file_bytes=10)
    with pytest.raises(openai.BadRequestError, match="File is too large"):
        client.files.create(file=("x.jsonl", b"0123456789a\n"), purpose="batch")


def test_create_checks_window_endpoint_and_file(client, control):
    file_id = _upload(client, [_line("a", ["x"])])
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(input_file_id=file_id, endpoint="/v1/nope", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        _create(client, "file-missing")
    other = client.files.create(file=("x.jsonl", b"{}\n"), purpose="user_data").id
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        _create(client, other)
    with pytest.raises(openai.BadRequestError, match="metadata"):
        _create(client, file_id, metadata={f"k{i}": "v" for i in range(17)})


def test_a_batch_walks_the_real_statuses_on_the_servers_clock(client, control):
    control.configure(validating_seconds=10, in_progress_seconds=100, finalizing_seconds=10)
    texts = [[f"text {k} {j}" for j in range(3)] for k in range(4)]
    file_id = _upload(client, [_line(f"req-{k}", t) for k, t in enumerate(texts)])
    batch = _create(client, file_id, metadata={"job": "j1"})
    assert (batch.status, batch.completion_window, batch.metadata) == ("validating", "24h", {"job": "j1"})
    assert batch.expires_at - batch.created_at == DAY
    assert client.batches.retrieve(batch.id).status == "validating"
    control.advance(10)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "in_progress" and batch.request_counts.total == 4
    control.advance(50)
    assert client.batches.retrieve(batch.id).request_counts.completed == 2
    control.advance(50)
    assert client.batches.retrieve(batch.id).status == "finalizing"
    control.advance(10)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.error_file_id is None
    assert batch.created_at < batch.in_progress_at < batch.finalizing_at < batch.completed_at
    assert (batch.request_counts.completed, batch.request_counts.failed) == (4, 0)
    lines = sorted(_jsonl(client, batch.output_file_id), key=lambda line: line["custom_id"])
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2", "req-3"]
    for line, want in zip(lines, texts):
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert [item["index"] for item in body["data"]] == [0, 1, 2]
        got = np.frombuffer(base64.b64decode(body["data"][1]["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(got, expected_embedding(want[1]))


def test_cancel_keeps_what_was_done_and_reports_the_rest(client, control):
    control.configure(in_progress_seconds=100, cancelling_seconds=5)
    batch = _create(client, _upload(client, [_line(f"r{k}", [f"t{k}"]) for k in range(10)]))
    control.advance(30)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    control.advance(5)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    done = {line["custom_id"] for line in _jsonl(client, batch.output_file_id)}
    errors = _jsonl(client, batch.error_file_id)
    assert len(done) == 3 and done | {e["custom_id"] for e in errors} == {f"r{k}" for k in range(10)}
    assert {e["custom_id"] for e in errors}.isdisjoint(done) and len(errors) == 7
    assert errors[0]["response"] is None and errors[0]["error"]["code"] == "batch_cancelled"
    with pytest.raises(openai.ConflictError, match="status 'cancelled'"):
        client.batches.cancel(batch.id)


def test_a_batch_stalled_half_way_expires_after_24_hours_with_half_its_lines(client, control):
    control.configure(in_progress_seconds=10, script=[{"stop_at": 0.5}])
    batch = _create(client, _upload(client, [_line(f"r{k}", [f"t{k}"]) for k in range(8)]))
    control.advance(DAY - 1)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    control.advance(1)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "expired" and batch.expired_at == batch.expires_at
    assert (batch.request_counts.completed, batch.request_counts.failed) == (4, 4)
    assert len(_jsonl(client, batch.output_file_id)) == 4
    assert {e["error"]["code"] for e in _jsonl(client, batch.error_file_id)} == {"batch_expired"}


def test_validation_failures_name_their_lines(client, control):
    lines = [_line("a", ["x"]), _line("a", ["y"]), {**_line("c", ["z"]), "url": "/v1/chat/completions"}]
    batch = client.batches.retrieve(_create(client, _upload(client, lines)).id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [("duplicate_custom_id", 2), ("url_mismatch", 3)]
    other_model = [_line("a", ["x"]), {**_line("b", ["y"]), "body": {"model": "text-embedding-3-large", "input": ["y"]}},
                   "not json"]
    data = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in other_model).encode()
    batch = client.batches.retrieve(_create(client, client.files.create(file=("m.jsonl", data), purpose="batch").id).id)
    assert [(e.code, e.line) for e in batch.errors.data] == [("model_mismatch", 2), ("invalid_json_line", 3)]
    empty = client.files.create(file=("e.jsonl", b"\n"), purpose="batch").id
    batch = client.batches.retrieve(_create(client, empty).id)
    assert [(e.code, e.line) for e in batch.errors.data] == [("empty_file", None)]
    assert batch.output_file_id is None and batch.error_file_id is None


def test_the_request_and_input_caps_of_a_batch(client, control):
    control.configure(max_requests_per_batch=2, max_inputs_per_batch=3)
    batch = client.batches.retrieve(_create(client, _upload(client, [_line(f"r{k}", ["a", "b"]) for k in range(3)])).id)
    assert batch.status == "failed"
    assert [e.code for e in batch.errors.data] == ["too_many_tasks", "too_many_tasks"]


def test_the_enqueued_token_limit_fails_a_batch_until_the_queue_drains(client, control):
    control.configure(in_progress_seconds=100, enqueued_token_limit=10)
    first = _create(client, _upload(client, [_line("a", ["one two three four five six"])]))
    second = _create(client, _upload(client, [_line("b", ["seven eight nine ten eleven"])]))
    assert client.batches.retrieve(first.id).status == "in_progress"
    failed = client.batches.retrieve(second.id)
    assert failed.status == "failed" and failed.errors.data[0].code == "token_limit_exceeded"
    assert "Enqueued token limit reached" in failed.errors.data[0].message
    control.advance(100)
    assert client.batches.retrieve(first.id).status == "completed"
    third = _create(client, _upload(client, [_line("c", ["seven eight nine ten eleven"])]))
    assert client.batches.retrieve(third.id).status == "in_progress"


def test_lines_answer_as_the_online_endpoint_would_or_as_scripted(client, control):
    control.configure(script=[{"line_errors": {"1": {"status": 500, "message": "boom"}}, "misaligned": [2]}])
    lines = [_line("ok", ["a", "b"]), _line("boom", ["c"]), _line("short", ["d", "e"]), _line("bad", ["f"], dimensions=99_999)]
    batch = client.batches.retrieve(_create(client, _upload(client, lines)).id)
    assert batch.status == "completed" and (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    output = {line["custom_id"]: line for line in _jsonl(client, batch.output_file_id)}
    assert len(output["short"]["response"]["body"]["data"]) == 1  # one vector short
    errors = {line["custom_id"]: line["response"] for line in _jsonl(client, batch.error_file_id)}
    assert errors["boom"]["status_code"] == 500 and errors["boom"]["body"]["error"]["message"] == "boom"
    assert errors["bad"]["status_code"] == 400 and errors["bad"]["body"]["error"]["code"] == "integer_above_max_value"


def test_list_pages_newest_first(client, control):
    file_id = _upload(client, [_line("a", ["x"])])
    ids = [_create(client, file_id).id for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:0:-1] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK pages on
    state = control.state()
    assert [b["id"] for b in state["batches"]] == ids and state["files"] >= 1


def test_output_lines_come_shuffled_and_a_batch_where_nothing_succeeded_has_no_output_file(client, control):
    batch = client.batches.retrieve(_create(client, _upload(client, [_line(f"r{k:02d}", [f"t{k}"]) for k in range(40)])).id)
    order = [line["custom_id"] for line in _jsonl(client, batch.output_file_id)]
    assert sorted(order) == [f"r{k:02d}" for k in range(40)] and order != sorted(order)
    assert batch.error_file_id is None  # nothing failed: no error file
    control.configure(script=[{"line_errors": {"0": {"status": 500}, "1": {"status": 400, "code": "invalid_value"}}}])
    failed = client.batches.retrieve(_create(client, _upload(client, [_line("a", ["x"]), _line("b", ["y"])])).id)
    assert failed.status == "completed" and failed.output_file_id is None
    assert (failed.request_counts.completed, failed.request_counts.failed) == (0, 2)
    assert {line["response"]["status_code"] for line in _jsonl(client, failed.error_file_id)} == {500, 400}


def test_the_queue_counts_unfinished_batches_and_frees_an_ended_one_after_the_release_lag(client, control):
    control.configure(in_progress_seconds=100, enqueued_token_limit=10, release_lag_seconds=20)
    first = _create(client, _upload(client, [_line("a", ["one two three four five six"])]))
    assert client.batches.retrieve(first.id).status == "in_progress"
    control.advance(100)
    assert client.batches.retrieve(first.id).status == "completed"
    early = _create(client, _upload(client, [_line("b", ["seven eight nine ten eleven"])]))
    refused = client.batches.retrieve(early.id)
    assert refused.status == "failed" and refused.errors.data[0].code == "token_limit_exceeded"
    control.advance(20)  # the lag has passed: the first batch's tokens are free
    later = _create(client, _upload(client, [_line("c", ["seven eight nine ten eleven"])]))
    assert client.batches.retrieve(later.id).status == "in_progress"
    state = control.state()
    assert [b["tokens"] for b in state["batches"]] == [6, 5, 5]


def test_a_script_entry_goes_to_the_next_batch_the_queue_accepts(client, control):
    control.configure(in_progress_seconds=100, enqueued_token_limit=10, script=[{}, {"stop_at": 0.0}])
    first = _create(client, _upload(client, [_line("a", ["one two three four five six"])]))
    client.batches.retrieve(first.id)
    refused = client.batches.retrieve(_create(client, _upload(client, [_line("b", ["seven eight nine ten eleven"])])).id)
    assert refused.status == "failed"
    control.advance(100)
    stalled = _create(client, _upload(client, [_line("c", ["seven eight nine ten eleven"])]))
    control.advance(200)
    assert client.batches.retrieve(stalled.id).status == "in_progress"  # scripted to stall: it got the entry
    control.advance(DAY)
    assert client.batches.retrieve(stalled.id).status == "expired"


def test_transient_line_errors_fail_a_share_of_bodies_once(client, control):
    control.configure(transient_line_error_rate=0.3)
    lines = [_line(f"r{k}", [f"text {k}"]) for k in range(200)]
    first = client.batches.retrieve(_create(client, _upload(client, lines)).id)
    failed = {line["custom_id"] for line in _jsonl(client, first.error_file_id)}
    assert 30 <= len(failed) <= 90  # ~30% of 200
    again = client.batches.retrieve(_create(client, _upload(client, [l for l in lines if l["custom_id"] in failed])).id)
    assert again.error_file_id is None and again.request_counts.completed == len(failed)


def test_a_time_scale_runs_the_batch_clock_faster_without_jumps(client, control):
    import time as real_time

    before = control.state()["now"]
    control.configure(time_scale=3600, in_progress_seconds=1800)  # an hour a second
    batch = _create(client, _upload(client, [_line("a", ["x"])]))
    real_time.sleep(0.6)
    after = control.state()["now"]
    assert 1800 < after - before < 3600 * 5
    assert client.batches.retrieve(batch.id).status == "completed"
