"""The one place secrets are masked: API keys, service-role keys, database passwords.

Everything this library prints, logs, raises or writes to a file passes through
`redact` (known secrets plus anything shaped like a key) or a `Scrubber` (which
also knows connection strings). Keys never reach a message by design; these
functions are the net under that design, not a substitute for it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

__all__ = [
    "MASK", "KEY_PATTERN", "redact", "redact_dsn", "dsn_passwords", "scrub_dsn", "strip_url_userinfo", "url_passwords",
    "Scrubber",
]

MASK = "***"

KEY_PATTERN = re.compile(
    r"\b(sk-[A-Za-z0-9_\-*]{4,}|sb_secret_[A-Za-z0-9_\-]+|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"
)
"""OpenAI keys (``sk-...``), Supabase secret keys (``sb_secret_...``) and JWTs (service-role keys)."""

MIN_SECRET_LENGTH = 4
"""Shorter values are not masked by substring: masking every "ab" in a message would say more than it hides."""

_URI_USERINFO = re.compile(r"(?P<head>postgres(?:ql)?://[^@/?#:\s]*:)(?P<secret>[^@/\s]*)(?P<tail>@)", re.IGNORECASE)
_URI_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&#\s]*)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:\\.|[^'\\])*'|\S*)", re.IGNORECASE)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with each given secret, and anything shaped like a key or JWT, masked."""
    for secret in sorted((s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return KEY_PATTERN.sub(MASK, text)


def strip_url_userinfo(url: str) -> str:
    """`url` without its ``user:password@`` part (scheme, host, port, path, query kept).

    ``http://user:pw@host:8080/v1`` -> ``http://host:8080/v1``. A URL that has no
    userinfo, or that cannot be parsed, comes back unchanged, except that anything
    before an ``@`` in its authority is dropped all the same.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return re.sub(r"(?<=//)[^/@?#\s]*@", "", url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_passwords(url: str) -> list[str]:
    """The password in `url`'s userinfo, as written and percent-decoded (to mask wherever it shows up)."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return []
    return sorted({p for p in (password, urllib.parse.unquote(password or "")) if p}, key=len, reverse=True)


def _is_uri(dsn: str) -> bool:
    return re.match(r"\s*postgres(?:ql)?://", dsn, re.IGNORECASE) is not None


def redact_dsn(dsn: str) -> str:
    """`dsn` with its password replaced by ``***`` (URI or key=value form); nothing else changed."""
    if not _is_uri(dsn):
        return _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, dsn)
    text = _URI_USERINFO.sub(lambda m: m.group("head") + MASK + m.group("tail"), dsn)
    return _URI_QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def dsn_passwords(dsn: str) -> list[str]:
    """Every spelling of `dsn`'s password(s) that could show up in a message, longest first."""
    patterns = (_URI_USERINFO, _URI_QUERY_PASSWORD) if _is_uri(dsn) else (_KV_PASSWORD,)
    found: list[str] = []
    for pattern in patterns:
        for match in pattern.finditer(dsn):
            raw = match.group("secret")
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
    as whole words — except a password that is also a public part of the DSN: with
    ``postgresql://postgres:postgres@host/postgres`` masking every "postgres" would
    turn the message into ``***ql://***:***@host/***``, hiding the host details and
    telling anyone who reads it that the password is the user's name.
    """
    text = text.replace(dsn, redact_dsn(dsn))
    public = _public_parts(dsn)
    for secret in dsn_passwords(dsn):
        if secret in public or len(secret) < MIN_SECRET_LENGTH:
            continue
        text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(secret)}(?![A-Za-z0-9_])", MASK, text)
    return text


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
        """Mask this connection string's password from now on."""
        if dsn:
            self.dsns.add(dsn)

    def __call__(self, text: str) -> str:
        for dsn in self.dsns:
            text = scrub_dsn(text, dsn)
        return redact(text, *self.secrets)

    def __repr__(self) -> str:
        return f"Scrubber({len(self.secrets)} secrets, {len(self.dsns)} DSNs)"
