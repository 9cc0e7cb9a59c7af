"""`EmbeddingService`: many texts in, aligned vectors out, at the edge of the API's limits.

The sync driver over the engine core (`core.engine`): the plan decides what to send
(validated, counted, deduplicated, packed, a small probe first while the limits are
unknown, requests sized to the learned budget), a thread pool sends up to
`max_concurrency` requests through the shared rate limiter, each retried by the one
retry loop (`core.engine.retry`), and every answer is checked for alignment before a vector
is accepted. Only up to `max_concurrency` requests are ever handed to the pool, so an
interrupt (Ctrl-C) loses at most those in flight: nothing queued is sent afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from openai import DefaultHttpxClient, OpenAI

from ..engine.attempts import raw_call
from ..engine.plan import EmbeddingBatch, Request
from ..engine.probe import HOLD
from ..limits import MAX_INPUTS_PER_REQUEST, PROBE_POLL_SECONDS
from ..engine.retry import call_with_retries
from .base import EmbeddingServiceBase, OutputFormat, sent_at

__all__ = ["EmbeddingService", "EmbeddingBatch", "MAX_BATCH_SIZE", "OutputFormat"]

MAX_BATCH_SIZE = MAX_INPUTS_PER_REQUEST
"""The seed's name for the per-request input cap."""

ProgressCallback = Callable[[int, int], None]
"""Called after each request with (inputs finished, tokens sent) for that request."""
VectorsCallback = Callable[[list[int], EmbeddingBatch], None]
"""Called after each request settles with the input indices it served (their vectors or errors are set)."""



class EmbeddingService(EmbeddingServiceBase):
    __doc__ = EmbeddingServiceBase.__doc__

    _slots: tuple[int, threading.BoundedSemaphore] | None = None
    _slots_lock = threading.Lock()

    def _slot(self) -> threading.BoundedSemaphore:
        """`max_concurrency` requests in flight for the whole service, however many threads call it.

        Per call, 8 threads sharing one service (a web server's workers) put 32-43
        requests in flight against a `max_concurrency` of 8 (issue #15); the async
        service has had one semaphore per service from the start.
        """
        slots = self._slots
        if slots is None or slots[0] != self.max_concurrency:
            with self._slots_lock:
                slots = self._slots
                if slots is None or slots[0] != self.max_concurrency:
                    slots = self._slots = (self.max_concurrency, threading.BoundedSemaphore(self.max_concurrency))
        return slots[1]

    def _make_client(self, api_key: str, base_url: str | None, timeout: float) -> Any:
        kwargs: dict[str, Any] = {
            "api_key": api_key,
            # Retries and pacing are ours (shared rate limiter, misalignment retries).
            "max_retries": 0,
            "timeout": timeout,
            # The hooks read x-ratelimit-* headers of every answer, 200s included, without
            # switching to with_raw_response (callers and mocks stub `embeddings.create`).
            "http_client": DefaultHttpxClient(
                event_hooks={"request": [self._stamp_request], "response": [self._observe_response]}
            ),
        }
        if base_url:
            kwargs["base_url"] = base_url
        return OpenAI(**kwargs)

    # --- public API ------------------------------------------------------------------

    def generate_embedding(self, text: str) -> list[float]:
        """The embedding of one text.

        Raises:
            InvalidInputTypeError: `text` is not a string.
            EmptyInputError: `text` is empty.
            InvalidInputError: `text` is not valid Unicode (a lone surrogate).
            InputTooLongError: `text` is over `max_tokens_per_input` and `truncate` is off.
            EndpointError: The endpoint, key or account is unusable.
            EmbeddingAPIError: The request failed for good.
        """
        self._check_strict([text])
        return self._single_result(self.embed([text]))

    def batch_generate_embeddings(self, texts: Sequence[str], max_batch_size: int | None = None) -> dict[str, Any]:
        """Embed many texts; a failing request never sinks the others.

        Args:
            texts: The texts, each a non-empty string.
            max_batch_size: Inputs per request for this call (default: the service's).

        Returns:
            ``embeddings``: the vectors of the inputs that succeeded, in input order
            (see `output`); ``failed_indices``: sorted indices that failed;
            ``total_tokens``: tokens the API reported; ``indices``: the input index
            of each embedding; ``errors``: index -> reason for each failure.

        Raises:
            InvalidInputTypeError: `texts` is not a list of strings (names the index).
            ValueError: `texts` is an empty list, or a text is empty (names the index).
            EndpointError: The endpoint, key or account is unusable (stops at once).
            AllRequestsFailedError: No input got a vector (a `RuntimeError`,
                chained to a sanitized last cause).
        """
        self._check_texts(texts)
        formatter = self._formatter()
        batch = self.embed(texts, max_batch_size=max_batch_size, on_vectors=formatter)
        return self._batch_result(texts, batch, formatter)

    def embed(
        self,
        texts: Sequence[Any],
        *,
        max_batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        on_vectors: VectorsCallback | None = None,
    ) -> EmbeddingBatch:
        """Embed `texts` and account for every index; never raises for a bad input.

        The engine under `batch_generate_embeddings` and the stores: an input that
        is not a string, empty, invalid Unicode or too long lands in `errors` with
        its reason (and `codes` with its code); so does every input of a request
        that failed for good.

        Args:
            texts: Inputs; anything that is not a non-empty string fails alone.
            max_batch_size: Inputs per request for this call.
            progress: Called after each request with (inputs finished, tokens).
            on_vectors: Called after each request settles with the input indices it
                served, so callers can store vectors as they arrive.

        Raises:
            EndpointError: The endpoint is unusable; nothing more is sent.
            KeyboardInterrupt: Requests not yet sent are cancelled; those in flight
                finish in the background and are dropped.
        """
        plan = self.plan(texts, max_batch_size=max_batch_size, probe=self._should_probe())

        def settle(request: Request, outcome: Any) -> None:
            served = self._settle(plan, request, outcome)
            if progress is not None and served:
                progress(len(served), request.tokens)
            if on_vectors is not None and served:
                on_vectors(served, plan.batch)

        if self.max_concurrency == 1 or plan.single_request():
            while (request := plan.next_request()) is not None:  # inline: no pool for one request
                settle(request, self._outcome(request, plan.batch))
                self._refresh(plan)
            return plan.batch
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="core-embed")
        running: dict[Future[Any], Request] = {}
        try:
            while True:
                self._refresh(plan)
                while len(running) < self.max_concurrency and (request := plan.next_request()) is not None:
                    running[pool.submit(self._outcome, request, plan.batch)] = request
                if not running:
                    break
                done, _ = wait(running, timeout=PROBE_POLL_SECONDS if plan.probing else None, return_when=FIRST_COMPLETED)
                for future in done:
                    settle(running.pop(future), future.result())
        except BaseException:
            plan.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return plan.batch

    def submit_batch(
        self, sections: Any, store: Any, job_dir: Any, *, wait: bool = True, finish_online: bool = False, **options: Any
    ) -> dict[str, Any]:
        """Embed and store `sections` through OpenAI's Batch API (half price, within 24 hours),
        resumably from the folder `job_dir`: `core.batch_api.BatchJob` (`options` are its own)."""
        from ..batch_api import BatchJob

        return BatchJob(job_dir, self, store, **options).run(sections, wait=wait, finish_online=finish_online)

    def close(self) -> None:
        """Close the HTTP client's connections."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> EmbeddingService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- one request -----------------------------------------------------------------

    def _outcome(self, request: Request, batch: EmbeddingBatch) -> Any:
        """(vectors, tokens used) for `request`, or the exception it failed with for good."""
        with self._slot():
            return self._attempts(request, batch)

    def _attempts(self, request: Request, batch: EmbeddingBatch) -> Any:
        attempts = self.attempts
        kwargs = attempts.create_kwargs(request)
        post = attempts.post_kwargs(kwargs) if raw_call(self.client) else None
        tries = [0]

        def attempt() -> Any:
            self.limiter.acquire(request.tokens)
            attempts.count(batch, retry=tries[0] > 0)
            tries[0] += 1
            try:
                response = self.client.post("/embeddings", **post) if post else self.client.embeddings.create(**kwargs)
            except Exception as exc:
                attempts.on_error(exc, request, batch, sent_at=sent_at(getattr(exc, "response", None)))
                raise
            return attempts.read(response, request, batch)

        while self._probe_turn(request) == HOLD:  # another call of this service probes the limits
            self._sleep(PROBE_POLL_SECONDS)
        try:
            return call_with_retries(attempt, attempts.policy, sleep=self._sleep, before_sleep=attempts.before_sleep)
        except Exception as exc:  # accounted per index by _settle
            return exc
        finally:
            self._probe_done(request)
