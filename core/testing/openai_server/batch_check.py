"""Validating a batch, as the real Batch API does: the input file line by line, then the enqueued-token queue.

The error codes are the API's (``Batch.errors.data[]``: ``code``, ``message``,
``param``, ``line``): ``invalid_json_line``, ``duplicate_custom_id``, ``url_mismatch``,
``model_mismatch`` (lines named), ``empty_file``, ``too_many_tasks`` (more than
50,000 requests, or for embeddings 50,000 inputs across all requests) and
``token_limit_exceeded`` (the batch).

The queue: per model, the tokens of the account's batches not finished (accepted
and not yet ended, plus those that ended less than ``release_lag_seconds`` ago: the
real API is reported to free a batch's tokens some time after it ends). A batch
whose tokens would pass ``enqueued_token_limit`` fails validation.
"""

from __future__ import annotations

import json
from typing import Any

from .api import ApiError
from .vectors import text_digests

__all__ = ["check_lines", "queue_error", "queued_tokens"]

ENDED = ("completed_at", "expired_at", "cancelled_at")


def _error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def check_lines(world: Any, batch: Any) -> list[dict[str, Any]]:
    """Read `batch`'s input file: count its lines, inputs and tokens, and list what is wrong with it."""
    try:
        stored = world.files.get(batch.input_file_id)
    except ApiError as exc:
        return [_error("file_not_found", exc.message, None, "input_file_id")]
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    count_tokens = world.config["enqueued_token_limit"] is not None
    for number, raw in enumerate(stored.lines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            errors.append(_error("invalid_json_line", f"This line is not parseable as valid JSON (line {number}).",
                                 number))
            continue
        body, custom_id = line.get("body"), line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(_error("missing_required_parameter", "Missing required parameter: 'custom_id'.", number,
                                 "custom_id"))
        elif custom_id in seen:
            errors.append(_error("duplicate_custom_id", "The custom_id for this request is a duplicate of another "
                                 "request. The custom_id parameter must be unique for each individual request in "
                                 "a batch.", number, "custom_id"))
        else:
            seen.add(custom_id)
        if line.get("method") != "POST":
            errors.append(_error("invalid_method", "Only the POST method is supported.", number, "method"))
        elif line.get("url") != batch.endpoint:
            errors.append(_error("url_mismatch", f"The provided URL for this request does not match the batch "
                                 f"endpoint {batch.endpoint}.", number, "url"))
        if not isinstance(body, dict):
            errors.append(_error("invalid_body", "Missing required parameter: 'body'.", number, "body"))
            continue
        model = body.get("model")
        if batch.model is None and isinstance(model, str):
            batch.model = model
        elif model != batch.model:
            errors.append(_error("model_mismatch", "The provided model for this request does not match the rest "
                                 "of the batch. Each batch must be comprised of requests to a single model.",
                                 number, "body.model"))
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts if isinstance(texts, list) else []
        if texts and all(isinstance(t, int) for t in texts):
            texts = [texts]
        batch.lines += 1
        batch.inputs += len(texts)
        if count_tokens:
            strings = [t for t in texts if isinstance(t, str)]
            batch.tokens += sum(world.engine.count_tokens(strings, text_digests(strings)))
            batch.tokens += sum(len(t) for t in texts if isinstance(t, list))
    if batch.lines == 0 and not errors:
        errors.append(_error("empty_file", "The batch input file is empty.", None))
    caps = world.config
    if batch.lines > caps["max_requests_per_batch"]:
        errors.append(_error("too_many_tasks", f"The batch input file has {batch.lines:,} requests; a batch holds "
                             f"at most {int(caps['max_requests_per_batch']):,}.", None))
    if batch.endpoint == "/v1/embeddings" and batch.inputs > caps["max_inputs_per_batch"]:
        errors.append(_error("too_many_tasks", f"The batch has {batch.inputs:,} embedding inputs across its "
                             f"requests; an embeddings batch holds at most {int(caps['max_inputs_per_batch']):,}.",
                             None))
    return errors


def queued_tokens(world: Any, batch: Any, at: float) -> int:
    """Tokens of the account's other batches of `batch`'s model that hold the queue at time `at`."""
    lag = float(world.config["release_lag_seconds"])
    held = 0
    for other in world.batches.values():
        start = other.times.get("in_progress_at")
        if other is batch or other.model != batch.model or start is None or start > at:
            continue
        end = next((other.times[name] for name in ENDED if name in other.times), None)
        if end is None or at < end + lag:
            held += other.tokens
    return held


def queue_error(world: Any, batch: Any, at: float) -> dict[str, Any] | None:
    """The ``token_limit_exceeded`` error when `batch` does not fit the queue at `at`, else None."""
    limit = world.config["enqueued_token_limit"]
    if limit is None or queued_tokens(world, batch, at) + batch.tokens <= limit:
        return None
    return _error("token_limit_exceeded", f"Enqueued token limit reached for {batch.model} in organization "
                  f"org-local. Limit: {int(limit):,} enqueued tokens. Please try again once some in_progress "
                  "batches have been completed.", None)
