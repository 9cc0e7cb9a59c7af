"""`FakeOpenAIServer`: the handle that starts the server in its own process and talks to its control plane."""

from __future__ import annotations

import copy
import json
from typing import Any

from core.testing._process import ServerProcess

from .config import DEFAULT_CONFIG, validate_config

__all__ = ["FakeOpenAIServer"]


class FakeOpenAIServer(ServerProcess):
    """Handle of one fake-server process on 127.0.0.1.

    ``with FakeOpenAIServer(tpm=100_000, window_seconds=1) as fake:`` starts
    ``python -m core.testing.openai_server`` (importable from any cwd), waits
    for its LISTENING line, and stops it on exit. Point clients at
    :attr:`base_url` with any non-empty API key.
    """

    module = "core.testing.openai_server"
    label = "fake OpenAI server"

    def __init__(self, *, startup_timeout: float = 30.0, control_timeout: float = 30.0, **config: Any) -> None:
        validate_config(config)
        super().__init__(startup_timeout=startup_timeout, control_timeout=control_timeout)
        self.config: dict[str, Any] = dict(config)

    def _arguments(self) -> list[str]:
        return ["--config", json.dumps(self.config)]

    @property
    def base_url(self) -> str:
        """What to give the SDK as `base_url`: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into the live config (buckets refill to full if rpm/tpm/window_seconds are
        given; the RNG is reseeded if seed is; fault_script replaces the queue). Returns the new config."""
        validate_config(changes)
        return self._call("POST", "/_control/config", changes)

    def reset_config(self) -> dict[str, Any]:
        """Back to DEFAULT_CONFIG: no limits, no latency, no faults, full buckets, RNG reseeded."""
        return self.configure(**copy.deepcopy(DEFAULT_CONFIG))

    def stats(self) -> dict[str, Any]:
        """{"requests", "by_status" {"200": n}, "faults" {name: n}, "tokens_ok", "inputs_ok",
        "max_in_flight", "in_flight", "log" [[t_start, t_end, status, tokens, n_inputs], ...]}
        (times are time.monotonic() of the server; status 0 = hung, never answered)."""
        return super().stats()

