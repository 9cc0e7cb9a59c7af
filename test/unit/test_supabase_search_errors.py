"""Supabase `search` never lets postgrest's raw `APIError` through (issue #15, item 6).

A gateway that echoes the key in a 401 used to put the service key into the
exception's `str`, `repr` and traceback. Now the search, sync and async, raises a
`StoreError` naming the URL and the function, with the key masked, and no chained cause.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Iterator

import httpx
import pytest
import respx
from fake_supabase import KEY, URL

from core.errors import StoreError
from core.stores.supabase import SupabaseStore
from core.stores.supabase_async import AsyncSupabaseStore

pytestmark = pytest.mark.filterwarnings("ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning")

ECHO = {"message": f"JWT invalid: Bearer {KEY}", "code": "PGRST301", "hint": None, "details": f"apikey={KEY}"}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=True) as mock:
        mock.post("/rest/v1/rpc/match_sections").mock(return_value=httpx.Response(401, json=ECHO))
        yield mock


def _assert_clean(info: pytest.ExceptionInfo[StoreError]) -> None:
    error = info.value
    rendered = "".join(traceback.format_exception(error))
    assert KEY not in str(error) and KEY not in repr(error) and KEY not in rendered
    assert error.__cause__ is None and "match_sections" in str(error) and URL in str(error)
    assert "PGRST301" in str(error)


def test_sync_search_masks_the_key(router: respx.MockRouter) -> None:
    store = SupabaseStore(url=URL, key=KEY, sleep=lambda _s: None)
    with pytest.raises(StoreError) as info:
        store.search_vector([0.1, 0.2, 0.3], k=3)
    _assert_clean(info)


def test_async_search_masks_the_key(router: respx.MockRouter) -> None:
    async def main() -> None:
        store = AsyncSupabaseStore(url=URL, key=KEY)
        await store.search_vector([0.1, 0.2, 0.3], k=3)

    with pytest.raises(StoreError) as info:
        asyncio.run(main())
    _assert_clean(info)
