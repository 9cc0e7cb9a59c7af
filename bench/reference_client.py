"""A hand-written asyncio + aiohttp embeddings client: the yardstick for issue #9.

Not a library and not used by `core`: the shortest careful client we could write
by hand, so the benchmark can say how far `EmbeddingService` is from it. It

- counts every text exactly (cl100k, `core.engine.tokens.count_tokens_batch`, offline),
- packs texts in order into requests of <= 2048 inputs and <= 250,000 tokens,
- keeps at most `max_concurrency` requests in flight (workers pulling the next
  request in order),
- on a 429 closes one shared gate for `retry-after-ms` / `retry-after` seconds
  (every worker waits at the gate before its next send) and retries it for up
  to 10 minutes; 408/409/5xx, connection errors/timeouts and misaligned answers
  are retried up to 8 times with capped, jittered backoff,
- asks for ``encoding_format="base64"`` and decodes each response straight into
  one float32 numpy block (one base64 decode per response when rows end on
  base64 group boundaries, e.g. 1536 dimensions),
- returns an (n, dims) float32 array in input order plus counts.

It does no proactive pacing from ``x-ratelimit-*`` headers: it only obeys 429s.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import numpy as np

from core.engine.tokens import count_tokens_batch

__all__ = ["MAX_INPUTS", "MAX_TOKENS", "ReferenceResult", "embed", "pack"]

MAX_INPUTS = 2048
MAX_TOKENS = 250_000
MAX_TOKENS_PER_INPUT = 8191
_RETRY_STATUS = frozenset({408, 409, 429})


@dataclass
class ReferenceResult:
    vectors: np.ndarray  # (n, dims) float32, row i = texts[i]
    requests: int = 0  # HTTP attempts, retries included
    rate_limited: int = 0  # answers with status 429
    server_errors: int = 0  # 5xx answers, connection errors and timeouts
    tokens: int = 0  # usage.prompt_tokens summed over accepted answers
    max_in_flight: int = 0
    gate_wait_s: float = 0.0  # total seconds the 429 gate was closed for


def pack(counts: Sequence[int], max_inputs: int = MAX_INPUTS, max_tokens: int = MAX_TOKENS) -> list[tuple[int, int]]:
    """[start, stop) slices, in order, each as full as both caps allow."""
    slices, start, total = [], 0, 0
    for i, c in enumerate(counts):
        if i > start and (i - start >= max_inputs or total + c > max_tokens):
            slices.append((start, i))
            start, total = i, 0
        total += c
    if start < len(counts):
        slices.append((start, len(counts)))
    return slices


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers.get(name)) * scale)  # type: ignore[union-attr, arg-type]
        except (TypeError, ValueError):
            continue  # absent, or an HTTP date: fall back to backoff
    return None


def _backoff(attempt: int) -> float:
    return min(20.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _decode(body: bytes, n: int) -> tuple[np.ndarray, int]:
    """(the (n, dims) float32 block, usage tokens) of one response; ValueError if it cannot be trusted."""
    answer = json.loads(body)
    data = answer["data"]
    if len(data) != n or sorted(item["index"] for item in data) != list(range(n)):
        raise ValueError(f"misaligned response: {len(data)} items for {n} inputs")
    rows = [None] * n
    for item in data:
        rows[item["index"]] = item["embedding"]
    if not rows[0].endswith("="):  # no padding: rows concatenate into one valid base64 text
        raw = binascii.a2b_base64("".join(rows))
    else:
        raw = b"".join(binascii.a2b_base64(r) for r in rows)
    if len(raw) % (4 * n):
        raise ValueError(f"response of {len(raw)} bytes is not {n} float32 rows")
    return np.frombuffer(raw, dtype="<f4").reshape(n, -1), int(answer["usage"]["prompt_tokens"])


async def _run(texts: Sequence[str], url: str, api_key: str, model: str,
               dimensions: int | None, max_concurrency: int, slices: list[tuple[int, int]],
               max_retries: int, max_rate_limit_wait: float, timeout: float) -> ReferenceResult:
    loop = asyncio.get_running_loop()
    res = ReferenceResult(vectors=np.zeros((0, 0), dtype=np.float32))
    gate_until = 0.0  # shared 429 gate (loop.time())
    in_flight = 0
    out: list[np.ndarray | None] = [None]  # allocated at the first answer (dims known then)
    todo = iter(slices)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def send(session: aiohttp.ClientSession, start: int, stop: int) -> None:
        nonlocal gate_until, in_flight
        payload = {"model": model, "input": list(texts[start:stop]), "encoding_format": "base64"}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        body = json.dumps(payload).encode()
        attempt = 0
        first_sent = loop.time()
        while True:
            while (wait := gate_until - loop.time()) > 0:
                await asyncio.sleep(wait)
            res.requests += 1
            error: BaseException | None = None
            in_flight += 1
            res.max_in_flight = max(res.max_in_flight, in_flight)
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    status, answer, resp_headers = resp.status, await resp.read(), resp.headers
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, answer, resp_headers, error = 0, b"", {}, exc
            finally:
                in_flight -= 1
            if status == 200:
                try:
                    block, used = _decode(answer, stop - start)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    status, error = -1, exc  # misaligned or undecodable: resend
                else:
                    if out[0] is None:
                        out[0] = np.empty((len(texts), block.shape[1]), dtype=np.float32)
                    if block.shape[1] != out[0].shape[1]:
                        raise RuntimeError(f"response of width {block.shape[1]}, expected {out[0].shape[1]}")
                    out[0][start:stop] = block
                    res.tokens += used
                    return
            # A 429 is pacing, not failure: retried until `max_rate_limit_wait` seconds have gone by
            # (unless it can never pass: quota exhausted, or a request above the whole TPM budget).
            # Other retryable failures count against `max_retries`.
            retryable = status in _RETRY_STATUS or status >= 500 or status <= 0
            hopeless = status == 429 and (b"insufficient_quota" in answer or b"Request too large" in answer)
            if status == 429:
                give_up = loop.time() - first_sent > max_rate_limit_wait
            else:
                attempt += 1
                give_up = attempt > max_retries
            if not retryable or hopeless or give_up:
                what = answer[:500].decode(errors="replace") if answer else repr(error)
                raise RuntimeError(f"request [{start}:{stop}) failed for good: HTTP {status}: {what}")
            if status == 429:
                res.rate_limited += 1
                delay = _retry_after(resp_headers)
                delay = _backoff(res.rate_limited) if delay is None else delay
                new_until = loop.time() + delay
                res.gate_wait_s += max(0.0, new_until - max(gate_until, loop.time()))
                gate_until = max(gate_until, new_until)  # every worker waits
            else:
                res.server_errors += status != -1
                await asyncio.sleep(_backoff(attempt))

    async def worker(session: aiohttp.ClientSession) -> None:
        for start, stop in todo:  # one shared iterator: requests leave in input order
            await send(session, start, stop)

    connector = aiohttp.TCPConnector(limit=max_concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(min(max_concurrency, len(slices)))))
    res.vectors = out[0] if out[0] is not None else np.zeros((0, dimensions or 0), dtype=np.float32)
    return res


def embed(texts: Sequence[str], *, base_url: str, api_key: str, model: str = "text-embedding-3-small",
          dimensions: int | None = None, max_concurrency: int = 8, max_inputs: int = MAX_INPUTS,
          max_tokens: int = MAX_TOKENS, max_retries: int = 8, max_rate_limit_wait: float = 600.0,
          timeout: float = 120.0) -> ReferenceResult:
    """Embed `texts` (non-empty strings); raise RuntimeError if any request fails for good."""
    counts = count_tokens_batch(texts)
    bad = next((i for i, (t, c) in enumerate(zip(texts, counts)) if not t or c > MAX_TOKENS_PER_INPUT), None)
    if bad is not None:
        raise ValueError(f"text {bad} is empty or over {MAX_TOKENS_PER_INPUT} tokens")
    slices = pack(counts, max_inputs, max_tokens)
    url = base_url.rstrip("/") + "/embeddings"
    return asyncio.run(_run(texts, url, api_key, model, dimensions, max_concurrency, slices,
                            max_retries, max_rate_limit_wait, timeout))
