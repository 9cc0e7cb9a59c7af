"""The one fake of Supabase (its PostgREST table API), reachable two ways.

`FakeSupabase` is one project holding one table's rows. A test reaches it:

* as supabase-py's client — ``SupabaseStore(client=fake)``: the few builder
  calls the store makes (``table().select().in_()/.limit().execute()``,
  ``table().upsert().execute()``, ``rpc().execute()``) run against it in
  process; or
* over HTTP — ``fake.serve(router)`` mounts PostgREST's routes on a respx
  router, so the real supabase-py client (``SupabaseStore(url=URL, key=KEY)``)
  sends real requests and the fake answers them like PostgREST.

Either way it keeps the rows it was given (a test checks what was stored under
which id), counts attempts per body, records every upsert, lookup and RPC, and
measures the upserts in flight. Failures are injected with
``fail(body, attempt)`` for upserts and ``select_fail(ids)`` for hash lookups;
they return None (success), an exception to raise, or — over HTTP — the
`httpx.Response` to answer (a status below 300 still stores the rows).

The seed tests use the root conftest's ``mock_supabase_store`` (a MagicMock
client) instead; end-to-end tests use the PostgREST stand-in
(``servers.postgrest_server``) over a real PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from postgrest.exceptions import APIError

__all__ = ["KEY", "TABLE", "TABLE_PATH", "URL", "FakeSupabase", "api_error", "postgrest_error"]

URL = "http://127.0.0.1:54321"
KEY = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIiwidGVzdCI6dHJ1ZX0.ZmFrZS1zaWduYXR1cmU"
TABLE = "section_embeddings"
TABLE_PATH = f"/rest/v1/{TABLE}"


def api_error(code: str, message: str = "boom") -> APIError:
    """The exception supabase-py raises for a PostgREST error answer."""
    return APIError({"code": code, "message": message, "details": None, "hint": None})


def postgrest_error(status: int, code: str, message: str) -> httpx.Response:
    """A PostgREST error answer, as it comes over HTTP."""
    return httpx.Response(status, json={"code": code, "details": None, "hint": None, "message": message})


# --- supabase-py's builder, as far as the store uses it --------------------------------------


class _Result:
    def __init__(self, data: Any = None) -> None:
        self.data = data


class _Call:
    """A built request: `.execute()` runs it against the fake."""

    def __init__(self, run: Any) -> None:
        self._run = run

    def execute(self) -> _Result:
        return self._run()


class _Select:
    def __init__(self, fake: FakeSupabase, table: str, columns: str) -> None:
        self.fake, self.table, self.columns = fake, table, columns

    def in_(self, column: str, values: list[Any]) -> _Call:
        return _Call(lambda: _Result(self.fake._select(self.table, self.columns, column, list(values))))

    def limit(self, count: int) -> _Call:
        return _Call(lambda: _Result(self.fake._first(self.table, self.columns, count)))


class _Table:
    def __init__(self, fake: FakeSupabase, name: str) -> None:
        self.fake, self.name = fake, name

    def select(self, columns: str) -> _Select:
        return _Select(self.fake, self.name, columns)

    def upsert(self, body: Any, **kwargs: Any) -> _Call:
        return _Call(lambda: self.fake._upsert(self.name, body, kwargs))


class FakeSupabase:
    """One Supabase project with one table; see the module doc.

    Args:
        fail: ``fail(body, attempt)`` for each upsert (`attempt` counts earlier upserts
            of that same body's ids, from 0): None, an exception, or (over HTTP) a response.
        select_fail: ``select_fail(ids)`` for each hash lookup, the same way.
        delay: Seconds each upsert takes (to observe concurrency).
    """

    def __init__(self, fail: Any = None, select_fail: Any = None, delay: float = 0.0) -> None:
        self.fail = fail
        self.select_fail = select_fail
        self.delay = delay
        self.rows: dict[int, dict[str, Any]] = {}
        self.upserts: list[tuple[str, Any, dict[str, Any]]] = []  # (table, body, kwargs), every attempt
        self.selects: list[tuple[str, str, str, list[Any]]] = []  # (table, columns, column, ids)
        self.probes: list[tuple[str, str, int]] = []  # (table, columns, limit): selects without a filter
        self.rpcs: list[tuple[str, dict[str, Any]]] = []
        self.rpc_data: list[dict[str, Any]] = []
        self.attempts: dict[Any, int] = {}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.upsert_route: Any = None
        self.select_route: Any = None
        self.rpc_route: Any = None

    # -- the client face -------------------------------------------------------------------
    def table(self, name: str) -> _Table:
        return _Table(self, name)

    def rpc(self, fn: str, params: dict[str, Any]) -> _Call:
        return _Call(lambda: _Result(self._rpc(fn, params)))

    # -- the HTTP face ---------------------------------------------------------------------
    def serve(self, router: Any, table: str = TABLE) -> FakeSupabase:
        """Answer PostgREST's requests for `table` and its RPCs on the respx `router`; returns self.

        The routes are `upsert_route` (POST), `select_route` (GET) and `rpc_route`
        (POST ``/rest/v1/rpc/<fn>``): their ``.calls`` hold the real requests.
        """
        path = f"/rest/v1/{table}"
        self.upsert_route = router.post(path).mock(side_effect=lambda request: self._http_upsert(table, request))
        self.select_route = router.get(path).mock(side_effect=lambda request: self._http_select(table, request))
        self.rpc_route = router.post(path__regex=r"^/rest/v1/rpc/(?P<fn>\w+)$").mock(side_effect=self._http_rpc)
        return self

    def _http_upsert(self, table: str, request: httpx.Request) -> httpx.Response:
        answer = self._upsert(table, json.loads(request.content), dict(request.url.params), http=True)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(201)

    def _http_select(self, table: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        columns = params.get("select", "*")
        if "section_id" not in params:
            return httpx.Response(200, json=self._first(table, columns, int(params.get("limit", "1000"))))
        value = params["section_id"]
        assert value.startswith("in.(") and value.endswith(")"), value
        ids = [int(x) for x in value[4:-1].split(",")]
        found = self._select(table, columns, "section_id", ids, http=True)
        return found if isinstance(found, httpx.Response) else httpx.Response(200, json=found)

    def _http_rpc(self, request: httpx.Request, fn: str) -> httpx.Response:
        return httpx.Response(200, json=self._rpc(fn, json.loads(request.content)))

    # -- what both faces do ----------------------------------------------------------------
    def _rpc(self, fn: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.rpcs.append((fn, params))
        return self.rpc_data

    def _first(self, table: str, columns: str, count: int) -> list[dict[str, Any]]:
        self.probes.append((table, columns, count))
        return [dict(row) for row in list(self.rows.values())[:count]]

    def _select(self, table: str, columns: str, column: str, ids: list[Any], *, http: bool = False) -> Any:
        self.selects.append((table, columns, column, ids))
        if self.select_fail is not None:
            failure = self.select_fail(ids)
            if isinstance(failure, BaseException):
                raise failure
            if failure is not None:
                assert http, "a response can only answer over HTTP"
                return failure
        return [
            {"section_id": i, "content_hash": self.rows[i]["content_hash"], "model": self.rows[i]["model"]}
            for i in ids
            if i in self.rows
        ]

    def _upsert(self, table: str, body: Any, kwargs: dict[str, Any], *, http: bool = False) -> Any:
        key = tuple(r["section_id"] for r in body) if isinstance(body, list) else body["section_id"]
        with self.lock:
            self.upserts.append((table, body, kwargs))
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            failure = self.fail(body, attempt) if self.fail is not None else None
            if isinstance(failure, BaseException):
                raise failure
            if failure is not None:
                assert http, "a response can only answer over HTTP"
                if failure.status_code >= 300:
                    return failure
            with self.lock:
                for row in body if isinstance(body, list) else [body]:
                    self.rows[row["section_id"]] = dict(row)
            return failure if failure is not None else _Result([])
        finally:
            with self.lock:
                self.in_flight -= 1

    # -- what was sent ---------------------------------------------------------------------
    def bodies(self) -> list[Any]:
        """Every upsert body (a row object, or a list of them in bulk mode), retries included."""
        return [body for _table, body, _kw in self.upserts]

    def row_bodies(self) -> list[dict[str, Any]]:
        """Every row object sent (bulk bodies flattened), retries included."""
        out: list[dict[str, Any]] = []
        for body in self.bodies():
            out.extend(body if isinstance(body, list) else [body])
        return out
