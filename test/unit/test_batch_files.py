"""Batch input files: request lines, custom ids, and splitting within the Batch API's limits."""

from __future__ import annotations

import json

import pytest

from core.batch_api.files import (
    ENDPOINT,
    BatchFile,
    BatchLimits,
    BatchWriter,
    body_of,
    custom_id,
    encode_body,
    encode_line,
    parse_custom_id,
)
from core.errors import ConfigurationError


def _writer(tmp_path, limits, files):
    keys = iter(f"b{n:06d}" for n in range(1, 1000))
    return BatchWriter(tmp_path, limits, lambda: next(keys), files.append)


def _add(writer, n_inputs, text="x"):
    body = encode_body({"model": "text-embedding-3-small", "input": [text] * n_inputs, "encoding_format": "base64"})
    writer.add(body, inputs=n_inputs, tokens=n_inputs, sections=[[i, "h" * 64, 1, "t", i] for i in range(n_inputs)])
    return body


def test_a_line_is_the_documented_request_shape_and_round_trips():
    body = encode_body({"model": "m", "input": ["naïve", "b"], "encoding_format": "base64"})
    line = encode_line(custom_id("b000007", 12), body)
    parsed = json.loads(line)
    assert parsed == {"custom_id": "b000007-00012", "method": "POST", "url": ENDPOINT,
                      "body": {"model": "m", "input": ["naïve", "b"], "encoding_format": "base64"}}
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert body_of(line) == body
    assert "naïve".encode() in line  # UTF-8, not \\u escapes: sizes are counted as sent


def test_custom_ids_parse_back_and_foreign_ones_do_not():
    assert parse_custom_id("b000001-00042") == ("b000001", 42)
    assert parse_custom_id("request-1") == ("request", 1)  # parsed, then refused: no such batch key
    for foreign in (None, 17, "", "nodash", "b000001-x"):
        assert parse_custom_id(foreign) is None


def test_files_split_at_the_request_cap(tmp_path):
    files: list[BatchFile] = []
    writer = _writer(tmp_path, BatchLimits(requests=3), files)
    for _ in range(7):
        _add(writer, 2)
    writer.finish()
    assert [f.lines for f in files] == [3, 3, 1]
    assert [f.key for f in files] == ["b000001", "b000002", "b000003"]
    lines = (tmp_path / "b000002.requests.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == ["b000002-00000", "b000002-00001", "b000002-00002"]
    manifest = [json.loads(line) for line in (tmp_path / "b000002.manifest.jsonl").read_bytes().splitlines()]
    assert [m["line"] for m in manifest] == [0, 1, 2]
    assert manifest[0]["sections"][1] == [1, "h" * 64, 1, "t", 1] and manifest[0]["attempt"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_files_split_at_the_input_cap_across_all_requests(tmp_path):
    files: list[BatchFile] = []
    writer = _writer(tmp_path, BatchLimits(inputs=10), files)
    for n in (4, 4, 4, 6, 1):
        _add(writer, n)
    writer.finish()
    assert [f.inputs for f in files] == [8, 10, 1]
    assert all(f.inputs <= 10 for f in files)


def test_files_split_at_the_byte_cap_counted_as_written(tmp_path):
    files: list[BatchFile] = []
    body = encode_body({"model": "m", "input": ["y" * 100]})
    one = len(encode_line(custom_id("b000001", 0), body))
    writer = _writer(tmp_path, BatchLimits(bytes=one * 2 + 1), files)
    for _ in range(5):
        writer.add(body, inputs=1, tokens=1, sections=[[1, "h", 1, "t", 0]])
    writer.finish()
    assert [f.lines for f in files] == [2, 2, 1]
    for f in files:
        assert (tmp_path / f"{f.key}.requests.jsonl").stat().st_size == f.bytes <= one * 2 + 1


def test_a_request_over_a_whole_batch_is_refused(tmp_path):
    writer = _writer(tmp_path, BatchLimits(inputs=3), [])
    with pytest.raises(ConfigurationError, match="over a batch's limits"):
        _add(writer, 4)


def test_without_a_folder_it_only_counts(tmp_path):
    files: list[BatchFile] = []
    writer = BatchWriter(None, BatchLimits(requests=2), iter(["a", "b", "c"]).__next__, files.append)
    for _ in range(3):
        _add(writer, 1)
    writer.finish()
    assert [(f.key, f.lines) for f in files] == [("a", 2), ("b", 1)]
    assert writer.files == 2


def test_limits_are_checked():
    with pytest.raises(ConfigurationError):
        BatchLimits(requests=0)
    with pytest.raises(ConfigurationError):
        BatchLimits(requests=100_000)  # custom ids have 5 digits
    assert BatchLimits() == BatchLimits(50_000, 50_000, 200_000_000)


def test_an_abandoned_file_leaves_only_temporary_files_and_no_record(tmp_path):
    files: list[BatchFile] = []
    writer = _writer(tmp_path, BatchLimits(), files)
    _add(writer, 2)
    writer.abandon()
    assert files == [] and not list(tmp_path.glob("*.jsonl"))
