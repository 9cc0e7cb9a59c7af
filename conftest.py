"""Root fixtures shared by every test module (the seed's tests use `mock_supabase_store`)."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest


@pytest.fixture
def mock_supabase_store():
    """A real `SupabaseStore` whose `.client` is a MagicMock (no network, no credentials).

    Retries sleep through a no-op so failure paths stay fast.
    """
    from core.supabase_store import SupabaseStore

    return SupabaseStore(
        url="http://127.0.0.1:54321", key="test-service-role-key", client=MagicMock(), sleep=lambda _s: None
    )
