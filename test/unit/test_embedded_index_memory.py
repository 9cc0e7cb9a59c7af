"""The embedded server's HNSW build memory (issue #20: one million rows need ~6.8 GB of graph)."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from core.embedded import spawn
from core.stores.postgres_sql import INDEX_MEMORY_CAP, index_memory

Usage = namedtuple("Usage", "total used free")


def physical() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_third_of_the_machine_when_shared_memory_has_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: Usage(1 << 50, 0, 1 << 50))
    assert spawn.index_memory_cap(shm_folder=str(tmp_path)) == physical() // 3


def test_no_shared_memory_folder_leaves_the_machine_share(tmp_path: Path) -> None:
    assert spawn.index_memory_cap(shm_folder=str(tmp_path / "absent")) == physical() // 3


def test_a_small_dev_shm_bounds_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker's default 64 MB /dev/shm: a parallel build asking for more fails, so ask for 3/4 of what is free."""
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: Usage(64 << 20, 4 << 20, 60 << 20))
    assert spawn.index_memory_cap() == 45 << 20
    # index_memory never asks for more than the cap (the server's own setting is never lowered).
    assert index_memory(1_000_000, 1536, spawn.index_memory_cap()) == 45 << 20


def test_unknown_machine_memory_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sysconf(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert spawn.index_memory_cap() is None


def test_a_million_row_graph_fits_on_a_24_gb_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """~6.8 KB per 1536-dim row: 1,000,000 rows need ~6.8 GB, over the 1 GB asked of a user's database."""
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": (24 << 30) // 4096}
    monkeypatch.setattr(os, "sysconf", pages.__getitem__)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: Usage(24 << 30, 0, 24 << 30))
    cap = spawn.index_memory_cap()
    assert cap == 8 << 30 and index_memory(1_000_000, 1536, cap) == cap > 7 << 30 > INDEX_MEMORY_CAP
