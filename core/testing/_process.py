"""What the local test servers share: a server in its own process, and its handle.

Each server module (`core.testing.openai_server`, and the test suite's
`servers.postgrest_server` under ``test/``) runs as
``python -m <module> --port 0 --exit-on-stdin-eof ...``, prints
``LISTENING http://127.0.0.1:PORT`` first, and answers a JSON control plane
under ``/_control/`` (config, stats, reset). `ServerProcess` starts it from any
working directory, waits for that line, talks to the control plane without
proxies, and always stops the process (on exit, on garbage collection, and —
through the stdin watch — when the parent dies without cleaning up).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import weakref
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["ServerProcess", "read_request_body", "watch_stdin_eof", "stop_process"]

_LISTENING = re.compile(r"LISTENING http://127\.0\.0\.1:(\d+)")


def read_request_body(handler: Any) -> bytes:
    """The body of the request a `BaseHTTPRequestHandler` is serving (Content-Length or chunked)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def watch_stdin_eof() -> None:
    """In a server process: exit as soon as stdin closes (the parent that owns us is gone)."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate `proc` (closing its stdin first), wait, kill if it lingers; close its pipes."""
    if proc.poll() is None:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


class ServerProcess:
    """Handle of one local server process on 127.0.0.1 (base of the test servers' handles).

    Subclasses set `module` and `label`, and may override `_arguments()` and
    `_environment()` to pass their options.
    """

    module = ""
    """The server's module (``core.testing.openai_server``...), run with ``python -m``."""
    label = "server"
    """How errors name the server."""
    import_roots: tuple[str, ...] = ()
    """Folders to put on the child's PYTHONPATH ahead of the repository root, for a server
    module that lives outside the package (the test suite's, under ``test/``)."""

    def __init__(self, *, startup_timeout: float = 30.0, control_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self.control_timeout = control_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=200)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._finalizer: weakref.finalize | None = None

    def _arguments(self) -> list[str]:
        """Command-line options after ``--port 0``."""
        return []

    def _environment(self) -> dict[str, str]:
        """Extra environment variables (secrets go here, never on the command line)."""
        return {}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Any:
        """Start the process (no-op when running); returns self.

        Raises:
            RuntimeError: It did not print its LISTENING line in time (stderr included).
        """
        if self.running:
            return self
        import core

        repo_root = str(Path(core.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*self.import_roots, repo_root, *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._environment())
        cmd = [sys.executable, "-m", self.module, "--port", "0", *self._arguments(), "--exit-on-stdin-eof"]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=repo_root
        )
        self._proc = proc
        self._finalizer = weakref.finalize(self, stop_process, proc)
        self._stderr_tail.clear()
        threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True).start()
        line: list[bytes] = []
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        text = line[0].decode(errors="replace").strip() if line else ""
        match = _LISTENING.fullmatch(text)
        if not match:
            self.stop()
            reader.join(1.0)
            why = "timed out" if not line else f"printed {text!r}"
            raise RuntimeError(
                f"{self.label} did not start ({why} after {self.startup_timeout}s); stderr:\n" + self.stderr_tail
            )
        self.port = int(match.group(1))
        return self

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            for raw in proc.stderr:  # type: ignore[union-attr]
                self._stderr_tail.append(raw.decode(errors="replace"))
        except (OSError, ValueError):
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process, wait, kill if it lingers. Idempotent."""
        if self._proc is not None:
            stop_process(self._proc, timeout)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        """Root URL, ``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError(f"{self.label} not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr_tail(self) -> str:
        return "".join(self._stderr_tail)

    # -- control plane -------------------------------------------------------------------
    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=self.control_timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(f"{method} {path} failed with HTTP {exc.code}: {detail}") from None

    def get_config(self) -> dict[str, Any]:
        return self._call("GET", "/_control/config")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_control/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/_control/reset", {})

    def __repr__(self) -> str:
        where = self.url if self.port is not None and self.running else "stopped"
        return f"{type(self).__name__}({where}, pid={self.pid})"
