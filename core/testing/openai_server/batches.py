"""``/v1/batches`` (create, retrieve, cancel, list) and the Batch API's control plane.

The endpoints check what the real API checks when a batch is created (an uploaded
``purpose=batch`` file, a supported endpoint, ``completion_window="24h"``, metadata
of at most 16 short pairs); the lifecycle lives in `batch_state`. The server runs
only ``/v1/embeddings`` batches.

Control plane (JSON), for tests and benchmarks — `BatchControl` wraps it:

- ``GET /_control/batches``: the config, the server clock, every batch (status,
  lines, inputs, tokens, lines done, metadata, inputs answered 200);
- ``POST /_control/batches``: merge config keys (`batch_state.BATCH_DEFAULTS`);
- ``POST /_control/batches/advance`` ``{"seconds": n}``: move the clock forward;
- ``POST /_control/batches/reset``: forget every batch and file, default config,
  clock back to real time.
"""

from __future__ import annotations

import json
from typing import Any

from .api import ApiError, ApiRequest, Reply, parse_json_object, require_bearer
from .batch_state import BATCH_DEFAULTS, BatchWorld, world_of
from .files import page, query_of

__all__ = ["BATCH_DEFAULTS", "BATCH_ROUTES", "BatchControl", "control"]

SDK_ENDPOINTS = (
    "/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
    "/v1/images/generations", "/v1/images/edits", "/v1/videos",
)
SERVED_ENDPOINTS = ("/v1/embeddings",)


def _json(obj: Any) -> Reply:
    return Reply(200, [json.dumps(obj).encode()])


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in value.items()
    ):
        raise ApiError(400, "Invalid 'metadata': at most 16 pairs of strings, keys up to 64 and values up to "
                       "512 characters.", param="metadata", code="invalid_value")
    return dict(value)


def create_batch(request: ApiRequest) -> Reply:
    """``POST /v1/batches``."""
    require_bearer(request.headers)
    req = parse_json_object(request.body)
    for name in ("input_file_id", "endpoint", "completion_window"):
        if name not in req:
            raise ApiError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if req["completion_window"] != "24h":
        raise ApiError(400, f"Invalid value for 'completion_window': {req['completion_window']!r}. Supported values "
                       "are: '24h'.", param="completion_window", code="invalid_value")
    endpoint = req["endpoint"]
    if endpoint not in SDK_ENDPOINTS:
        raise ApiError(400, f"Invalid value for 'endpoint': {endpoint!r}. Supported values are: "
                       f"{', '.join(SDK_ENDPOINTS)}.", param="endpoint", code="invalid_value")
    if endpoint not in SERVED_ENDPOINTS:
        raise ApiError(400, f"This local server runs only {', '.join(SERVED_ENDPOINTS)} batches.", param="endpoint")
    world = world_of(request.state)
    stored = world.files.get(str(req["input_file_id"]))
    if stored.purpose != "batch":
        raise ApiError(400, f"The input file {stored.id} was not uploaded with purpose 'batch'.",
                       param="input_file_id")
    batch = world.create(stored.id, endpoint, _metadata(req.get("metadata")))
    return _json(batch.as_json(world.clock()))


def retrieve_batch(request: ApiRequest) -> Reply:
    """``GET /v1/batches/{batch_id}``."""
    require_bearer(request.headers)
    world = world_of(request.state)
    return _json(world.get(request.params["batch_id"]).as_json(world.clock()))


def cancel_batch(request: ApiRequest) -> Reply:
    """``POST /v1/batches/{batch_id}/cancel``: ``cancelling``, then ``cancelled`` with what was done."""
    require_bearer(request.headers)
    world = world_of(request.state)
    return _json(world.cancel(request.params["batch_id"]).as_json(world.clock()))


def list_batches(request: ApiRequest) -> Reply:
    """``GET /v1/batches``: newest first, ``after`` and ``limit`` (default 20) as the real API pages."""
    require_bearer(request.headers)
    world = world_of(request.state)
    with world.lock:
        now = world.clock()
        world.advance_all(now)
        items = [batch.as_json(now) for batch in reversed(list(world.batches.values()))]
    return _json(page(items, query_of(request)))


BATCH_ROUTES = {
    ("POST", "/v1/batches"): create_batch,
    ("GET", "/v1/batches"): list_batches,
    ("GET", "/v1/batches/{batch_id}"): retrieve_batch,
    ("POST", "/v1/batches/{batch_id}/cancel"): cancel_batch,
}
"""(method, path) -> endpoint, merged into the server's `API_ROUTES`."""


def control(state: Any, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """(status, JSON answer) of a ``/_control/batches...`` request."""
    world: BatchWorld = world_of(state)
    try:
        payload = json.loads(body or b"{}")
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
        if path == "/_control/batches" and method == "GET":
            return 200, world.summary()
        if path == "/_control/batches" and method == "POST":
            return 200, world.configure(payload)
        if path == "/_control/batches/advance" and method == "POST":
            seconds = payload.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise ValueError(f"'seconds' must be a number, got {seconds!r}")
            return 200, {"now": world.clock.advance(float(seconds))}
        if path == "/_control/batches/reset" and method == "POST":
            world.reset()
            return 200, {"ok": True}
    except ValueError as exc:
        return 400, {"error": str(exc)}
    return 404, {"error": f"unknown control endpoint {method} {path}"}


class BatchControl:
    """A test's handle on a running server's Batch API control plane.

    ``BatchControl(fake).configure(in_progress_seconds=5, script=[{"stop_at": 0.5}])``,
    ``.advance(86_400)`` (the 24-hour window passes at once), ``.state()``, ``.reset()``.
    """

    def __init__(self, server: Any) -> None:
        self.server = server

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self.server._call("POST", "/_control/batches", changes)

    def advance(self, seconds: float) -> float:
        return float(self.server._call("POST", "/_control/batches/advance", {"seconds": seconds})["now"])

    def state(self) -> dict[str, Any]:
        return self.server._call("GET", "/_control/batches")

    def reset(self) -> None:
        self.server._call("POST", "/_control/batches/reset", {})
