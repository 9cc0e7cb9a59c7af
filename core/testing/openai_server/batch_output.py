"""A batch's end: its lines run through ``/v1/embeddings``, written to the output and error files.

As the real API: the output file holds the requests that succeeded, in no
particular order (`shuffled`: a seeded order per batch, so a client that
relies on input order fails here too); the error file holds the requests that
failed (an HTTP error answer, or ``batch_expired`` / ``batch_cancelled`` for those not
run) and exists only when one did; ``output_file_id`` stays null when none succeeded.
Which lines a batch that expired or was cancelled had done is a prefix of that order.

Each line runs through the very endpoint the online API uses
(`embeddings.create_embeddings`) on the world's private engine state, or answers
as scripted: ``line_errors`` (``{line: {"status", "code", "message"}}``),
``misaligned`` (lines answered one vector short), and the config's
``transient_line_error_rate`` (that share of request bodies, chosen by a digest of
the body, answers 500 the first time it runs and normally after).
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
import uuid
from typing import Any

from .api import ApiError, ApiRequest
from .embeddings import create_embeddings

__all__ = ["finish"]

_EXPIRED = ("batch_expired", "This request could not be executed before the completion window expired.")
_CANCELLED = ("batch_cancelled", "This request was not executed because the batch was cancelled.")


def shuffled(batch: Any, count: int) -> list[int]:
    """The order `batch`'s `count` lines are run and written in (seeded by the batch id)."""
    order = list(range(count))
    random.Random(batch.id).shuffle(order)
    return order


def finish(world: Any, batch: Any, status: str, at: float) -> None:
    """Run the lines done, write the output and error files, and end `batch` in `status` at `at`."""
    unrun = _EXPIRED if status == "expired" else _CANCELLED
    raws = [raw for raw in world.files.get(batch.input_file_id).lines() if raw.strip()]
    output, failed = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - handed to the store
    ok = bad = 0
    for n, k in enumerate(shuffled(batch, len(raws))):
        line = json.loads(raws[k])
        head = (b'{"id":"batch_req_' + uuid.uuid4().hex.encode() + b'","custom_id":'
                + json.dumps(line["custom_id"]).encode())
        if n < batch.done:
            status_code, body = run_line(world, batch, k, line["body"])
            request_id = b'"req_' + uuid.uuid4().hex.encode() + b'"'
            (output if status_code == 200 else failed).write(
                head + b',"response":{"status_code":' + str(status_code).encode() + b',"request_id":'
                + request_id + b',"body":' + body + b'},"error":null}\n'
            )
            ok, bad = (ok + 1, bad) if status_code == 200 else (ok, bad + 1)
            if status_code == 200:
                texts = line["body"].get("input")
                batch.ok_inputs += 1 if isinstance(texts, str) else len(texts)
        else:
            failed.write(head + b',"response":null,"error":' + json.dumps(
                {"code": unrun[0], "message": unrun[1]}).encode() + b"}\n")
            bad += 1
    if ok:
        batch.output_file_id = world.files.add_handle(f"{batch.id}_output.jsonl", "batch_output", output).id
    else:
        output.close()
    if bad:
        batch.error_file_id = world.files.add_handle(f"{batch.id}_error.jsonl", "batch_output", failed).id
    else:
        failed.close()
    batch.counts = {"total": batch.lines, "completed": ok, "failed": bad}
    batch.status, batch.times[f"{status}_at"] = status, at


def _transient(world: Any, body: Any) -> bool:
    """Whether this request body answers 500 now (the first time it runs, for a share of bodies)."""
    rate = float(world.config["transient_line_error_rate"])
    if rate <= 0:
        return False
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    if int.from_bytes(digest[:8], "big") / 2**64 >= rate or digest in world.failed_once:
        return False
    world.failed_once.add(digest)
    return True


def run_line(world: Any, batch: Any, k: int, body: Any) -> tuple[int, bytes]:
    """(status, response body) of line `k`, as the online endpoint answers it (or as scripted)."""
    scripted = (batch.script.get("line_errors") or {}).get(str(k))
    if scripted is None and _transient(world, body):
        scripted = {"status": 500, "message": "The server had an error processing your request."}
    if scripted is not None:
        code = int(scripted.get("status", 500))
        error = ApiError(code, scripted.get("message", "scripted line error"),
                         "server_error" if code >= 500 else "invalid_request_error", scripted.get("code"))
        return error.status, error.body()
    if k in (batch.script.get("misaligned") or ()):
        world.engine.script.append("short")
    request = ApiRequest("POST", batch.endpoint, {}, {"Authorization": "Bearer batch"},  # type: ignore[arg-type]
                         json.dumps(body).encode(), world.engine, time.monotonic(), "req_batch")
    try:
        reply = create_embeddings(request)
    except ApiError as exc:
        return exc.status, exc.body()
    finally:
        world.engine.script.clear()
    return 200, b"".join(reply.parts or [])
