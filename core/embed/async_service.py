"""`AsyncEmbeddingService`: the embedding service for event loops (FastAPI, Starlette, async workers).

The same contract, results, errors and limits as `EmbeddingService`, driven by the
same engine core (`core.engine`: plan, attempts, decode) and the same retry loop
(`core.engine.retry`, async flavour); only the waiting differs: `AsyncOpenAI`, tasks and
`asyncio.wait` instead of threads. One `RateLimiter` per service paces every
concurrent call: 100 `generate_embedding` calls at once share one budget, and while
the account's limits are unknown only one request (the probe) goes out first.

Cancellation (`task.cancel()`, `asyncio.timeout`) cancels queued and in-flight
requests at once and leaves no task running.

One service may serve several event loops one after the other (two `asyncio.run`
calls, a test per loop): the SDK's async client keeps its connections on the loop
that opened them, so a service that made its own client makes a new one for each
new loop (a client you passed in is yours to keep on one loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from ..engine.attempts import raw_call
from ..engine.plan import EmbeddingBatch, Request
from ..engine.probe import HOLD
from ..engine.retry import acall_with_retries
from ..limits import PROBE_POLL_SECONDS
from .base import EmbeddingServiceBase, sent_at

__all__ = ["AsyncEmbeddingService"]

ProgressCallback = Callable[[int, int], None]
VectorsCallback = Callable[[list[int], EmbeddingBatch], Any]
"""May be a plain function or a coroutine function (awaited before the next request settles)."""



_SENT: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("core_request_sent", default=None)
"""In a request's task: the event its driver waits on until the request's body is written."""


async def _trace(name: str, info: Any) -> None:
    """httpcore's trace hook (runs in the request's task): flags the request as sent."""
    if name.endswith("send_request_body.complete") and (sent := _SENT.get()) is not None:
        sent.set()


class AsyncEmbeddingService(EmbeddingServiceBase):
    __doc__ = (EmbeddingServiceBase.__doc__ or "") + """
    Async: `sleep` is an async function (default `asyncio.sleep`); `client` an `AsyncOpenAI`.
    """

    def __init__(self, api_key: str | None = None, *, sleep: Callable[[float], Awaitable[None]] | None = None, **kw: Any):
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        super().__init__(api_key, sleep=sleep or asyncio.sleep, **kw)
        self._own_client = kw.get("client") is None

    def _make_client(self, api_key: str, base_url: str | None, timeout: float) -> Any:
        async def stamp(request: Any) -> None:
            self._stamp_request(request)
            request.extensions["trace"] = _trace

        async def observe(response: Any) -> None:
            self._observe_response(response)

        kwargs: dict[str, Any] = {
            "api_key": api_key,
            "max_retries": 0,  # retries and pacing are ours, as in the sync service
            "timeout": timeout,
            "http_client": DefaultAsyncHttpxClient(event_hooks={"request": [stamp], "response": [observe]}),
        }
        if base_url:
            kwargs["base_url"] = base_url
        return AsyncOpenAI(**kwargs)

    # --- public API ------------------------------------------------------------------

    async def generate_embedding(self, text: str) -> list[float]:
        """The embedding of one text. Raises as `EmbeddingService.generate_embedding`."""
        self._check_strict([text])
        return self._single_result(await self.embed([text]))

    async def batch_generate_embeddings(self, texts: Sequence[str], max_batch_size: int | None = None) -> dict[str, Any]:
        """Embed many texts; same result and errors as `EmbeddingService.batch_generate_embeddings`."""
        self._check_texts(texts)
        formatter = self._formatter()
        batch = await self.embed(texts, max_batch_size=max_batch_size, on_vectors=formatter)
        return self._batch_result(texts, batch, formatter)

    async def embed(
        self,
        texts: Sequence[Any],
        *,
        max_batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        on_vectors: VectorsCallback | None = None,
    ) -> EmbeddingBatch:
        """Embed `texts` and account for every index (see `EmbeddingService.embed`).

        Raises:
            EndpointError: The endpoint is unusable; nothing more is sent.
            asyncio.CancelledError: Cancelled; every request of this call is cancelled too.
        """
        self._bind_loop()
        plan = self.plan(texts, max_batch_size=max_batch_size, probe=self._should_probe())
        running: dict[asyncio.Task[Any], Request] = {}
        try:
            while True:
                self._refresh(plan)
                while len(running) < self.max_concurrency and (request := plan.next_request()) is not None:
                    sent = asyncio.Event()
                    task = asyncio.ensure_future(self._outcome(request, plan.batch, sent))
                    running[task] = request
                    if not plan.counted_ahead:  # the next request needs counting: let this one leave first
                        await self._until_sent(task, sent)
                if not running:
                    break
                timeout = PROBE_POLL_SECONDS if plan.probing else None
                done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    request = running.pop(task)
                    served = self._settle(plan, request, task.result())
                    if progress is not None and served:
                        progress(len(served), request.tokens)
                    if on_vectors is not None and served:
                        result = on_vectors(served, plan.batch)
                        if asyncio.iscoroutine(result):
                            await result
        except BaseException:
            plan.cancel()
            for task in running:
                task.cancel()
            if running:  # wait for them to finish cancelling: no task outlives this call
                await asyncio.wait(running)
            raise
        return plan.batch

    async def _until_sent(self, task: asyncio.Task[Any], sent: asyncio.Event) -> None:
        """Let `task`'s request leave before the plan counts the next one's tokens on this loop.

        Counting a request's worth of inputs is ~20-80 ms of CPU (more under load), and a
        request needs several loop turns (connect, write the body) to leave: counted right
        after handing a request to a task, the next requests' counting held it back, and
        with 8 or 16 slots the 2nd..8th requests left together after all were counted
        (server log, bench/bench_defaults.py regime b: 3rd-8th at +0.76 s; the thread
        driver, whose workers send while its driver thread counts, had them out at
        +0.28..0.68 s). Counting on a worker thread instead overlapped the two but cost
        more than it saved once the cores were busy (GIL hand-offs at every text: regime b
        18.2 s against 15.1 s for the thread driver at load 6, issue #20). So: the request's
        body is written (httpcore's ``send_request_body.complete``, seen through the trace
        hook of a client this service made), or its task sleeps (rate limit, probe, backoff),
        or is done, before counting goes on; with a client passed in, one loop turn as before.
        """
        if not self._own_client:
            await asyncio.sleep(0)
            return
        waiter = asyncio.ensure_future(sent.wait())
        try:
            await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    def _bind_loop(self) -> None:
        """Use a client whose connections belong to the running loop.

        The SDK's `AsyncOpenAI` keeps pooled connections on the loop that opened them;
        from a second `asyncio.run` they fail with "Event loop is closed" (issue #15).
        The connections of the old loop cannot be closed from this one (and die with
        it): a client made by this service is replaced by a new one on this loop.
        """
        loop = asyncio.get_running_loop()
        previous = self._client_loop() if self._client_loop is not None else None
        if previous is loop:
            return
        if self._client_loop is not None and self._own_client and self._api_key:  # used on another loop before
            self.client = self._make_client(self._api_key, self.base_url, self.timeout)
        self._client_loop = weakref.ref(loop)

    async def aclose(self) -> None:
        """Close the HTTP client's connections (those of this loop: another loop's died with it)."""
        self._bind_loop()
        close = getattr(self.client, "close", None)
        if callable(close):
            result = close()
            if asyncio.iscoroutine(result):
                await result

    async def __aenter__(self) -> AsyncEmbeddingService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- one request -----------------------------------------------------------------

    def _slot(self) -> asyncio.Semaphore:
        """`max_concurrency` requests in flight for the whole service, whatever the number of calls.

        Measured: 100 concurrent single-text calls each took a rate-limit slot at once and
        left together ~0.6 s later (the loop busy opening 100 connections): 15 % answered
        429. Holding the others until a slot frees keeps "slot taken" close to "sent".
        """
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.max_concurrency))
        return self._slots[1]

    async def _outcome(self, request: Request, batch: EmbeddingBatch, sent: asyncio.Event | None = None) -> Any:
        """(vectors, tokens used) for `request`, or the exception it failed with for good.
        `sent` is set once the request's body is written (this task's context carries it)."""
        _SENT.set(sent)
        async with self._slot():
            return await self._attempts(request, batch)

    async def _attempts(self, request: Request, batch: EmbeddingBatch) -> Any:
        attempts = self.attempts
        kwargs = attempts.create_kwargs(request)
        post = attempts.post_kwargs(kwargs) if raw_call(self.client) else None
        tries = [0]
        async def idle(seconds: float) -> None:
            """Sleep (rate limit, probe, backoff): the loop is free meanwhile, so the driver
            may count the next request (see `_until_sent`)."""
            if (sent := _SENT.get()) is not None:
                sent.set()
            await self._sleep(seconds)  # type: ignore[misc]

        while self._probe_turn(request) == HOLD:  # another call of this service probes the limits
            await idle(PROBE_POLL_SECONDS)

        async def attempt() -> Any:
            await self.limiter.acquire_async(request.tokens, sleep=idle)
            attempts.count(batch, retry=tries[0] > 0)
            tries[0] += 1
            try:
                if post:
                    response = await self.client.post("/embeddings", **post)
                else:
                    response = await self.client.embeddings.create(**kwargs)
            except Exception as exc:
                attempts.on_error(exc, request, batch, sent_at=sent_at(getattr(exc, "response", None)))
                raise
            return attempts.read(response, request, batch)

        try:
            return await acall_with_retries(
                attempt, attempts.policy, sleep=idle, before_sleep=attempts.before_sleep
            )
        except Exception as exc:  # accounted per index by _settle
            return exc
        finally:
            self._probe_done(request)
