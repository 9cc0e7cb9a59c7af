"""The one place secrets are masked: API keys, service-role keys, passwords, credentials inside URLs.

Everything this library prints, logs, raises or writes to a file passes through
`redact` (known secrets, passwords inside ``scheme://user:pass@`` URLs, and
anything shaped like a key) or a `Scrubber` (which also knows connection
strings). URLs the library keeps for messages or files go through
`strip_url_userinfo` first. Keys never reach a message by design; these
functions are the net under that design, not a substitute for it.

Where a known secret is masked (the rule, and why):

- A secret of `SUBSTRING_SECRET_LENGTH` (16) characters or more is masked
  wherever it occurs, even inside a longer word: real keys (OpenAI ``sk-...``,
  ~50+ characters; Supabase JWTs, hundreds) are that long, and a 16-character
  string does not turn up inside unrelated text by chance; glued to something
  (``Bearersk-...``, a key pasted twice) it is still the key.
- A shorter secret (``OPENAI_API_KEY=local``, ``test-key``, a short password)
  is masked only where it stands as a value: not preceded and not followed by a
  word character (letter, digit, ``_``) on a side where the secret itself starts
  or ends with one. So ``key=local``, ``"local"``, ``Bearer local`` and
  ``:local@`` are masked, but ``localhost`` and ``http://localhost:9/v1`` are
  left whole. Hunting five letters inside every word would say more than it
  hides: the message becomes unreadable (``http://***host``) and every ``***``
  tells the reader where the key's letters are.
- Secrets shorter than `MIN_SECRET_LENGTH` (4) are not masked by value at all.
- Every occurrence of every secret is found on the original text (overlapping
  ones too) and the union of their spans is masked, so neither order nor
  overlap leaks a piece: with ``hunter2`` and ``hunter2-xyz`` both secret,
  nothing of ``hunter2-xyz`` survives.

URL userinfo: `URL_USERINFO` is the only pattern for it. `strip_url_userinfo`
drops ``user:pass@`` from a URL the library keeps (an endpoint's base URL: httpx
sends it as Basic auth, and no message needs it); `redact` masks the password
of any ``scheme://user:pass@host`` in a message (``postgresql+psycopg2://``,
``mysql://``, ``https://``...), keeping the user name for diagnosis. The
authority ends at the first ``/``, ``?``, ``#`` or white space (RFC 3986); an
unescaped ``@`` in the password is covered (the last ``@`` of the authority
ends the userinfo), an unescaped ``/`` is not a URL any client accepts.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

__all__ = [
    "MASK",
    "KEY_PATTERN",
    "URL_USERINFO",
    "redact",
    "redact_dsn",
    "dsn_passwords",
    "scrub_dsn",
    "strip_url_userinfo",
    "url_passwords",
    "Scrubber",
]

MASK = "***"

KEY_PATTERN = re.compile(
    r"\b(sk-[A-Za-z0-9_\-*]{4,}|sb_secret_[A-Za-z0-9_\-]+|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"
)
"""OpenAI keys (``sk-...``), Supabase secret keys (``sb_secret_...``) and JWTs (service-role keys)."""

MIN_SECRET_LENGTH = 4
"""Shorter values are not masked: masking every "ab" in a message would say more than it hides."""

SUBSTRING_SECRET_LENGTH = 16
"""Secrets this long are masked wherever they occur; shorter ones only where they stand as a value."""

URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*)@")
"""``scheme://userinfo@`` (the userinfo runs to the authority's last ``@``): the one URL-credential pattern."""

_URI_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&#\s]*)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:\\.|[^'\\])*'|\S*)", re.IGNORECASE)
_WORD = re.compile(r"\w")


def strip_url_userinfo(url: str) -> str:
    """`url` without its ``user:password@`` (every URL in the string); nothing else changed."""
    return URL_USERINFO.sub(lambda m: m.group("scheme"), url)


def _mask_url_passwords(text: str) -> str:
    """`text` with the password of every ``scheme://user:pass@`` replaced by ``***`` (the user kept)."""

    def mask(m: re.Match[str]) -> str:
        user, colon, _password = m.group("userinfo").partition(":")
        return m.group("scheme") + user + (colon + MASK if colon else "") + "@"

    return URL_USERINFO.sub(mask, text)


def _url_passwords(text: str) -> list[str]:
    """The raw (still percent-encoded) passwords of the ``scheme://user:pass@`` URLs in `text`."""
    return [m.group("userinfo").partition(":")[2] for m in URL_USERINFO.finditer(text)]


def url_passwords(url: str) -> list[str]:
    """The passwords of `url`'s userinfo, as written and percent-decoded, longest first (to mask
    wherever a message repeats them, e.g. the Batch API's errors)."""
    found = {p for raw in _url_passwords(url) for p in (raw, urllib.parse.unquote(raw)) if p}
    return sorted(found, key=len, reverse=True)


def _occurrence(secret: str) -> re.Pattern[str]:
    """Where `secret` counts as present (see the module docstring): a lookahead, so overlaps are found too."""
    body = re.escape(secret)
    if len(secret) < SUBSTRING_SECRET_LENGTH:
        if _WORD.match(secret[0]):
            body = r"(?<!\w)" + body
        if _WORD.match(secret[-1]):
            body += r"(?!\w)"
    return re.compile(f"(?={body})")


def _mask_values(text: str, secrets: Iterable[str]) -> str:
    """`text` with the union of every occurrence of every secret replaced by one ``***`` per run."""
    spans = sorted(
        (m.start(), m.start() + len(secret))
        for secret in set(secrets)
        for m in _occurrence(secret).finditer(text)
    )
    if not spans:
        return text
    pieces: list[str] = []
    done = 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s <= end:
            end = max(end, e)
            continue
        pieces += [text[done:start], MASK]
        done, (start, end) = end, (s, e)
    pieces += [text[done:start], MASK, text[end:]]
    return "".join(pieces)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with each given secret, URL passwords and anything shaped like a key or JWT masked."""
    text = _mask_values(text, (s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH))
    return KEY_PATTERN.sub(MASK, _mask_url_passwords(text))


def _is_uri(dsn: str) -> bool:
    return re.match(r"\s*[A-Za-z][A-Za-z0-9+.\-]*://", dsn) is not None


def redact_dsn(dsn: str) -> str:
    """`dsn` with its password replaced by ``***`` (URI of any scheme, or key=value form); nothing else changed."""
    if not _is_uri(dsn):
        return _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, dsn)
    return _URI_QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, _mask_url_passwords(dsn))


def dsn_passwords(dsn: str) -> list[str]:
    """Every spelling of `dsn`'s password(s) that could show up in a message, longest first."""
    raws: list[str] = []
    if _is_uri(dsn):
        raws += _url_passwords(dsn)
        raws += [m.group("secret") for m in _URI_QUERY_PASSWORD.finditer(dsn)]
    else:
        raws += [m.group("secret") for m in _KV_PASSWORD.finditer(dsn)]
    found: list[str] = []
    for raw in raws:
        found += [raw, urllib.parse.unquote(raw)]
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            found.append(re.sub(r"\\(.)", r"\1", raw[1:-1]))
    return sorted({s for s in found if s}, key=len, reverse=True)


_PUBLIC_KEYS = ("user", "host", "hostaddr", "port", "dbname")


def _public_parts(dsn: str) -> set[str]:
    """The connection's parsed user, host, port and database name: shown openly anyway."""
    if _is_uri(dsn):
        try:
            parts = urllib.parse.urlsplit(dsn.strip())
            values = [parts.username, parts.hostname, str(parts.port or ""), parts.path.lstrip("/")]
        except ValueError:  # a malformed URI: nothing counts as public
            return set()
        return {urllib.parse.unquote(v) for v in values if v}
    pairs = re.findall(r"\b(\w+)\s*=\s*('(?:\\.|[^'\\])*'|\S*)", dsn)
    return {value.strip("'") for key, value in pairs if key.lower() in _PUBLIC_KEYS and value}


def scrub_dsn(text: str, dsn: str) -> str:
    """`text` with `dsn`'s password masked, wherever and however it appears.

    The DSN itself is replaced by its redacted form first. Then lone occurrences of
    the password (libpq quotes pieces of a malformed DSN in its errors) are masked
    as values (see the module docstring) — except a password that is also a public
    part of the DSN: with ``postgresql://postgres:postgres@host/postgres`` masking
    every "postgres" would turn the message into ``***ql://***:***@host/***``,
    hiding the host details and telling anyone who reads it that the password is
    the user's name.
    """
    text = text.replace(dsn, redact_dsn(dsn))
    public = _public_parts(dsn)
    secrets = [s for s in dsn_passwords(dsn) if s not in public and len(s) >= MIN_SECRET_LENGTH]
    return _mask_values(text, secrets)


class Scrubber:
    """The secrets one run knows of (keys, connection strings), masked from any text it is given."""

    def __init__(self, secrets: Iterable[str | None] = (), dsns: Iterable[str | None] = ()) -> None:
        self.secrets: set[str] = set()
        self.dsns: set[str] = set()
        for secret in secrets:
            self.add(secret)
        for dsn in dsns:
            self.add_dsn(dsn)

    def add(self, secret: str | None) -> None:
        """Mask `secret` from now on (values shorter than `MIN_SECRET_LENGTH` are ignored)."""
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            self.secrets.add(secret)

    def add_dsn(self, dsn: str | None) -> None:
        """Mask this connection string's (or URL's) password from now on."""
        if dsn:
            self.dsns.add(dsn)

    def __call__(self, text: str) -> str:
        for dsn in self.dsns:
            text = scrub_dsn(text, dsn)
        return redact(text, *self.secrets)

    def __repr__(self) -> str:
        return f"Scrubber({len(self.secrets)} secrets, {len(self.dsns)} DSNs)"
