"""The HTTP server: one thread per connection, a route table for the API, the control plane, `main`.

To add an endpoint, write a module of functions ``(ApiRequest) -> Reply`` (see
`api`) and list them in `API_ROUTES`; the server does the rest: request ids,
processing time, stats, error answers with rate-limit headers, 404 for
anything not listed.
"""

from __future__ import annotations

import argparse
import json
import socketserver
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.testing._process import read_request_body, watch_stdin_eof
from core.engine.tokens import get_encoding

from .api import ApiError, ApiRequest, Endpoint, Reply, ms_since
from .batches import BATCH_ROUTES, control as batch_control
from .embeddings import create_embeddings
from .files import FILE_ROUTES
from .faults import send_then_reset
from .state import State

__all__ = ["API_ROUTES", "find_route", "main", "serve"]

API_ROUTES: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/embeddings"): create_embeddings,
    **FILE_ROUTES,  # /v1/files: upload, retrieve, list, content, delete
    **BATCH_ROUTES,  # /v1/batches: create, retrieve, cancel, list
}
"""(method, path) -> endpoint. A path segment written ``{name}`` matches any one
non-empty segment, whose value the endpoint finds in ``request.params["name"]``."""

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 411: "Length Required",
    413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}
_MAX_BODY = 256 * 1024 * 1024


def find_route(method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint serving `method` `path` and the values of its ``{name}`` segments, or None."""
    endpoint = API_ROUTES.get((method, path))
    if endpoint is not None:
        return endpoint, {}
    segments = path.split("/")
    for (route_method, template), endpoint in API_ROUTES.items():
        if route_method != method or "{" not in template:
            continue
        pattern = template.split("/")
        if len(pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, segments):
            if want.startswith("{") and want.endswith("}") and got:
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return endpoint, params
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "fake-openai"
    timeout = 600  # idle keep-alive connections are dropped after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    # -- plumbing ------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"Request body too large ({length} bytes).")
        return read_request_body(self)

    def _send(
        self, status: int, body: bytes | list[bytes | memoryview], headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.wfile.write(self._answer(status, body, headers))

    def _answer(
        self, status: int, body: bytes | list[bytes | memoryview], headers: Iterable[tuple[str, str]] = ()
    ) -> bytes:
        payload = body if isinstance(body, bytes) else b"".join(body)
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n",
            f"date: {formatdate(usegmt=True)}\r\n",
            "content-type: application/json\r\n",
            f"content-length: {len(payload)}\r\n",
        ]
        head += [f"{k}: {v}\r\n" for k, v in headers]
        if self.close_connection:
            head.append("connection: close\r\n")
        head.append("\r\n")
        return b"".join(("".join(head).encode("latin-1"), payload))

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_body()
        except ApiError as exc:
            self._send(exc.status, exc.body())
            return
        except (ValueError, OSError):
            self.close_connection = True
            self._send(400, ApiError(400, "Malformed request body.").body())
            return
        if path.startswith("/_control/"):
            self._control(path, body)
            return
        self._api(path, body)

    # -- control plane -------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        state = self.server.state
        method = self.command
        if path == "/_control/config" and method == "GET":
            with state.lock:
                self._send_json(200, state.snapshot_config())
        elif path == "/_control/config" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("config must be a JSON object")
                self._send_json(200, state.merge(changes))
            except ValueError as exc:
                self._send_json(400, {"error": str(exc)})
        elif path == "/_control/stats" and method == "GET":
            self._send_json(200, state.stats())
        elif path.startswith("/_control/batches"):
            self._send_json(*batch_control(state, method, path, body))
        elif path == "/_control/reset" and method == "POST":
            with state.lock:
                state.reset_stats()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": f"unknown control endpoint {method} {path}"})

    # -- the API -------------------------------------------------------------------------
    def _api(self, path: str, body: bytes) -> None:
        state = self.server.state
        start = time.monotonic()
        state.begin()
        reply = Reply(0, None)
        request_id = "req_" + uuid.uuid4().hex
        try:
            try:
                route = find_route(self.command, path)
                if route is None:
                    raise ApiError(404, f"Invalid URL ({self.command} {path})")
                endpoint, params = route
                request = ApiRequest(self.command, path, params, self.headers, body, state, start, request_id,
                                     dict(urllib.parse.parse_qsl(self.path.partition("?")[2])))
                try:
                    reply = endpoint(request)
                except ApiError:
                    raise
                except Exception as exc:  # a bug of ours or a tokenizer failure: answer, don't drop
                    print(f"fake OpenAI server: internal error: {exc!r}", file=sys.stderr, flush=True)
                    raise ApiError(500, f"Internal error in the fake server: {exc!r}", "server_error") from exc
            except ApiError as exc:
                headers = [("x-request-id", request_id), ("openai-processing-ms", str(ms_since(start)))]
                headers += exc.headers or state.current_rate_headers()
                reply = Reply(exc.status, [exc.body()], headers, fault=exc.fault)
        finally:  # before answering: a client then sees it in stats
            answered = 0 if reply.fault == "reset" else reply.status  # a reset answer never arrives whole
            state.end(start, answered, reply.tokens, reply.inputs, reply.fault)
        if reply.parts is None:
            self.close_connection = True  # a hang: close without answering
        elif reply.fault == "reset":
            self.close_connection = True
            send_then_reset(self.connection, self.wfile, self._answer(reply.status, reply.parts, reply.headers))
        else:
            self._send(reply.status, reply.parts, reply.headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    state: State

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn (a DNS lookup)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, BrokenPipeError)):
            return  # a client gave up (timeouts, hang faults): not an error of ours
        super().handle_error(request, client_address)


def serve(port: int, config: dict[str, Any]) -> _Server:
    """A server bound to 127.0.0.1:`port` (0: any free port) with `config`; call ``serve_forever()``."""
    server = _Server(("127.0.0.1", port), _Handler)
    server.state = State(config)
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.testing.openai_server",
        description="Local OpenAI-compatible embeddings server (127.0.0.1 only).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0 = any free port)")
    parser.add_argument("--config", default="{}", help="JSON object of config keys (see DEFAULT_CONFIG)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="exit when stdin closes (the parent process ended)")
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config)
        if not isinstance(config, dict):
            raise ValueError("--config must be a JSON object")
        server = serve(args.port, config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"LISTENING http://127.0.0.1:{server.server_address[1]}", flush=True)

    def warm_up() -> None:  # load cl100k_base now, not inside the first request
        try:
            get_encoding()
        except Exception as exc:  # reported again, as a 500, by the first request needing it
            print(f"warning: tokenizer failed to load: {exc}", file=sys.stderr, flush=True)

    threading.Thread(target=warm_up, daemon=True).start()
    if args.exit_on_stdin_eof:
        watch_stdin_eof()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
