"""Rate limits as the API enforces them: continuously refilling RPM/TPM buckets, their 429s and headers."""

from __future__ import annotations

import math

from .api import ApiError

__all__ = ["Bucket", "RateLimits", "format_duration", "quota_exhausted"]

ORG = "org-fake0000000000000000000"
"""The organization the 429 messages name."""


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it: ``120ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    total_ms = max(0, round(seconds * 1000))
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, ms = divmod(rest, 60_000)
    secs = f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs}s"


class Bucket:
    """A continuously refilling bucket: capacity `limit`, refill `limit / window` per second."""

    def __init__(self, limit: float, window: float, now: float) -> None:
        self.capacity = float(limit)
        self.rate = float(limit) / float(window)
        self.level = float(limit)
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        return max(0.0, (amount - self.level) / self.rate)

    def until_full(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class RateLimits:
    """The RPM and TPM buckets of one config (None: unlimited). Not locked: the server state's lock guards it."""

    def __init__(self, rpm: float | None, tpm: float | None, window: float, now: float) -> None:
        self.rpm = Bucket(rpm, window, now) if rpm is not None else None
        self.tpm = Bucket(tpm, window, now) if tpm is not None else None

    def refill(self, now: float) -> None:
        for bucket in (self.rpm, self.tpm):
            if bucket is not None:
                bucket.refill(now)

    def headers(self) -> list[tuple[str, str]]:
        """x-ratelimit-* headers of the configured limits (call after `refill`)."""
        headers: list[tuple[str, str]] = []
        for bucket, kind in ((self.rpm, "requests"), (self.tpm, "tokens")):
            if bucket is None:
                continue
            headers += [
                (f"x-ratelimit-limit-{kind}", str(int(bucket.capacity))),
                (f"x-ratelimit-remaining-{kind}", str(max(0, int(bucket.level)))),
                (f"x-ratelimit-reset-{kind}", format_duration(bucket.until_full())),
            ]
        return headers

    def check(self, model: str, tokens: int) -> None:
        """Raise the API's 429 when the request cannot go now (call after `refill`).

        A request above the TPM limit can never go ("Request too large", no
        retry-after); otherwise a bucket short of one request or of the tokens
        answers "Rate limit reached" with retry-after headers.
        """
        if self.tpm is not None and tokens > self.tpm.capacity:
            raise ApiError(
                429,
                f"Request too large for {model} in organization {ORG} on tokens per min (TPM): "
                f"Limit {int(self.tpm.capacity)}, Requested {tokens}. The input or output tokens must be "
                "reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits "
                "to learn more.",
                "tokens",
                "rate_limit_exceeded",
                headers=self.headers(),
            )
        short: list[tuple[Bucket, str, str, float]] = []
        if self.rpm is not None and self.rpm.level < 1:
            short.append((self.rpm, "requests", "RPM", 1))
        if self.tpm is not None and self.tpm.level < tokens:
            short.append((self.tpm, "tokens", "TPM", tokens))
        if short:
            wait = max(bucket.wait_for(amount) for bucket, _, _, amount in short)
            bucket, kind, abbrev, amount = short[0]
            used = int(math.ceil(bucket.capacity - bucket.level))
            headers = self.headers() + [
                ("retry-after-ms", str(max(1, math.ceil(wait * 1000)))),
                ("retry-after", str(max(1, math.ceil(wait)))),
            ]
            raise ApiError(
                429,
                f"Rate limit reached for {model} in organization {ORG} on {kind} per min ({abbrev}): "
                f"Limit {int(bucket.capacity)}, Used {used}, Requested {int(amount)}. Please try again in "
                f"{format_duration(wait)}. Visit https://platform.openai.com/account/rate-limits to learn more.",
                kind,
                "rate_limit_exceeded",
                headers=headers,
            )

    def consume(self, tokens: int) -> None:
        """Spend one request and `tokens` (an answered request does; a 500/503 does not)."""
        if self.rpm is not None:
            self.rpm.level -= 1
        if self.tpm is not None:
            self.tpm.level -= tokens


def quota_exhausted(headers: list[tuple[str, str]]) -> ApiError:
    """The 429 ``insufficient_quota`` answer (billing, not rate: never worth a retry)."""
    return ApiError(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        "insufficient_quota",
        headers=headers,
    )
