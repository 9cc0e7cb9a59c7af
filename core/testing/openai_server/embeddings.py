"""``POST /v1/embeddings``: the API's validation and error messages, exact token counts, faults, latency."""

from __future__ import annotations

import json
import time
from typing import Any

from core.engine.tokens import get_encoding

from .api import ApiError, ApiRequest, Reply, input_invalid, ms_since, parse_json_object, require_bearer, sleep_until
from .config import MODEL_DIMENSIONS
from .faults import SERVER_ERRORS, misalign
from .state import State
from .vectors import embed, text_digests
from .wire import base64_rows, float_json_rows

__all__ = ["create_embeddings", "parse_input"]


def create_embeddings(request: ApiRequest) -> Reply:
    """One embeddings request: 200 with a vector per input (unless a fault says otherwise), or an ApiError."""
    require_bearer(request.headers)
    req = parse_json_object(request.body)
    state, start, request_id = request.state, request.start, request.request_id
    cfg = state.config
    model = req.get("model")
    if model is None:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise ApiError(400, f"{model!r} is not of type 'string' - 'model'", param="model")
    if "input" not in req:
        raise ApiError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    fmt = req.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise ApiError(
            400, f"Invalid value for 'encoding_format': expected one of 'float' or 'base64', but got {fmt!r} instead.",
            param="encoding_format", code="invalid_value",
        )
    user = req.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, f"{user!r} is not of type 'string' - 'user'", param="user")

    if model not in MODEL_DIMENSIONS:
        raise ApiError(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )
    native = MODEL_DIMENSIONS[model]
    dims = req.get("dimensions")
    if dims is None:
        dims = native
    else:
        if not model.startswith("text-embedding-3"):
            raise ApiError(400, "This model does not support specifying dimensions.", param="dimensions")
        if isinstance(dims, bool) or not isinstance(dims, int):
            raise ApiError(400, f"Invalid type for 'dimensions': expected an integer, but got {dims!r} instead.",
                           param="dimensions", code="invalid_type")
        if dims < 1:
            raise ApiError(400, f"Invalid value for 'dimensions' = {dims}. Must be at least 1.",
                           param="dimensions", code="invalid_value")
        if dims > native:
            raise ApiError(
                400, f"Invalid 'dimensions': integer above maximum value. Expected a value <= {native}, "
                f"but got {dims} instead.", param="dimensions", code="integer_above_max_value",
            )

    texts, counts, digests = parse_input(req["input"], state, cfg)
    n = len(texts)
    limit_input = cfg["max_tokens_per_input"]
    for c in counts:
        if c > limit_input:
            raise ApiError(
                400, f"This model's maximum context length is {limit_input} tokens, however you requested {c} "
                f"tokens ({c} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.",
            )
    total = sum(counts)
    if total > cfg["max_tokens_per_request"]:
        raise ApiError(
            400, f"Requested {total} tokens, max {cfg['max_tokens_per_request']} tokens per request",
            code="max_tokens_per_request",
        )

    fault, rate_headers = state.admit(model, total)
    delay = cfg["latency_base"] + cfg["latency_per_token"] * total
    if fault == "hang":
        time.sleep(cfg["hang_seconds"])
        return Reply(0, None, tokens=total, inputs=n, fault=fault)  # close without answering
    if fault in SERVER_ERRORS:
        sleep_until(start + delay)
        code, message = SERVER_ERRORS[fault]
        raise ApiError(code, message, "server_error", headers=rate_headers, fault=fault)

    mat = embed(texts, dims, native, digests)
    rows, indices = misalign(fault, base64_rows(mat) if fmt == "base64" else float_json_rows(mat), list(range(n)))
    quote = b'"' if fmt == "base64" else b""
    parts: list[bytes | memoryview] = [b'{"object":"list","data":[']
    for k, (i, row) in enumerate(zip(indices, rows)):
        parts += [b',{"object":"embedding","index":' if k else b'{"object":"embedding","index":',
                  str(i).encode(), b',"embedding":', quote, row, quote, b"}"]
    parts.append(
        f'],"model":{json.dumps(model)},"usage":{{"prompt_tokens":{total},"total_tokens":{total}}}}}'.encode()
    )
    sleep_until(start + delay)
    headers = [("x-request-id", request_id), ("openai-processing-ms", str(ms_since(start))),
               ("openai-model", model), *rate_headers]
    return Reply(200, parts, headers, tokens=total, inputs=n, fault=None if fault == "ok" else fault)


def parse_input(value: Any, state: State, cfg: dict[str, Any]) -> tuple[list[str], list[int], list[bytes] | None]:
    """Validate `input`; return the texts (token arrays decoded), their token counts and digests."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise input_invalid()
    if not items:
        raise input_invalid()
    if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        items = [items]  # one token array
    if len(items) > cfg["max_inputs_per_request"]:
        raise input_invalid(
            f"Too many inputs. The max number of inputs is {cfg['max_inputs_per_request']}. We recommend that you "
            "split your request into multiple smaller requests."
        )
    if all(isinstance(x, str) for x in items):
        if any(x == "" for x in items):
            raise input_invalid()
        texts: list[str] = items
        digests = text_digests(texts)
        return texts, state.count_tokens(texts, digests), digests
    if all(isinstance(x, list) for x in items):
        enc = get_encoding()
        vocab = enc.n_vocab
        texts, counts = [], []
        for arr in items:
            if not arr or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in arr):
                raise input_invalid()
            texts.append(enc.decode(arr, errors="replace"))
            counts.append(len(arr))
        return texts, counts, None
    raise input_invalid()
