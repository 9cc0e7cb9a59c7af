"""core.secrets under property-based tests: no secret survives masking, nothing else is touched.

The properties are stated so that a partial leak fails them, not only a whole
secret left in place: messages are built from secrets and separators drawn
from two disjoint alphabets, so after masking *no character* of the secrets'
alphabet may remain (a fragment such as ``-xyz`` of ``hunter2-xyz`` fails).

Bugs planted in core/secrets.py (and reverted) to check these tests (bench/README.md, "Mutation testing"):
- only the first occurrence of a secret masked: `test_every_occurrence_of_every_secret_is_masked`
  (and four more);
- secrets masked one after another, shortest first: `test_every_occurrence_of_every_secret_is_masked`,
  `test_prefix_secrets_leave_no_fragment`, `test_touching_secrets_become_one_mask`;
- the Scrubber skipping its connection strings: `test_scrubber_masks_every_spelling_of_a_dsn_password`,
  `test_cli_scrubbing_layer_masks_what_the_cli_registered`, `test_every_password_of_a_dsn_is_masked_alone`.
"""

from __future__ import annotations

import re
import string
import urllib.parse

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from core.secrets import (
    KEY_PATTERN,
    MASK,
    MIN_SECRET_LENGTH,
    SUBSTRING_SECRET_LENGTH,
    Scrubber,
    redact,
    redact_dsn,
    scrub_dsn,
    strip_url_userinfo,
)

SECRET_CHARS = string.ascii_letters + string.digits + "-_."
"""What the generated secrets are made of (word characters and a little punctuation)."""
SEPARATOR_CHARS = " :/@?=&#'\"()[],;<>"
"""URL punctuation and quoting around them: non-word characters, none in `SECRET_CHARS`, no ``*``."""

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

secret_text = st.text(SECRET_CHARS, min_size=MIN_SECRET_LENGTH, max_size=40)
separator = st.text(SEPARATOR_CHARS, min_size=1, max_size=4)


@st.composite
def secret_sets(draw: st.DrawFn) -> list[str]:
    """1-5 secrets, some derived from others: prefixes/extensions of each other, overlapping, repeated."""
    secrets = draw(st.lists(secret_text, min_size=1, max_size=3))
    for _ in range(draw(st.integers(0, 3))):
        base = draw(st.sampled_from(secrets))
        kind = draw(st.sampled_from(["extend", "prefix", "overlap", "repeat"]))
        if kind == "extend":  # base is a prefix of the new one (hunter2 / hunter2-xyz)
            derived = base + draw(st.text(SECRET_CHARS, min_size=1, max_size=8))
        elif kind == "prefix":  # the new one is a prefix of base
            derived = base[: draw(st.integers(MIN_SECRET_LENGTH, max(MIN_SECRET_LENGTH, len(base))))]
        elif kind == "overlap":  # the tail of base starts the new one (ab-cd / cd-ef)
            cut = draw(st.integers(0, len(base) - 1))
            derived = base[cut:] + draw(st.text(SECRET_CHARS, min_size=MIN_SECRET_LENGTH, max_size=8))
        else:
            derived = base
        secrets.append(derived)
    return [s for s in secrets if len(s) >= MIN_SECRET_LENGTH]


@st.composite
def messages_with(draw: st.DrawFn) -> tuple[list[str], str]:
    """(secrets, a message holding them any number of times, each between separators)."""
    secrets = draw(secret_sets())
    picks = draw(st.lists(st.sampled_from(secrets), min_size=1, max_size=8))
    parts = [draw(separator)]
    for secret in picks:
        parts += [secret, draw(separator)]
    return secrets, "".join(parts)


def leaked(text: str) -> set[str]:
    """Characters of the secrets' alphabet left in `text` (separators and ``*`` are not)."""
    return set(text) & set(SECRET_CHARS)


# --- redact: every occurrence of every secret ------------------------------------------------


@PROPERTY
@given(messages_with())
@example((["hunter2", "hunter2-xyz"], " hunter2-xyz hunter2 ")).via("the issue's shortest-first leak")
@example((["local"], "=local&=local@")).via("a second occurrence")
def test_every_occurrence_of_every_secret_is_masked(case: tuple[list[str], str]) -> None:
    secrets, message = case
    out = redact(message, *secrets)
    assert not leaked(out), (message, out)
    assert Scrubber(secrets=secrets)(message) == out


@PROPERTY
@given(secret_text, st.text(SECRET_CHARS, min_size=1, max_size=10), separator, separator)
def test_prefix_secrets_leave_no_fragment(base: str, extension: str, left: str, right: str) -> None:
    """`base` and `base + extension` both secret; the longer one in a message: nothing of it survives."""
    longer = base + extension
    for order in ((base, longer), (longer, base)):
        out = redact(f"{left}{longer}{right}{left}{base}{right}", *order)
        assert not leaked(out), out
        assert out == f"{left}{MASK}{right}{left}{MASK}{right}"


@PROPERTY
@given(st.text(SECRET_CHARS, min_size=SUBSTRING_SECRET_LENGTH, max_size=60),
       st.text(string.ascii_letters + string.digits, max_size=6), st.integers(1, 4))
def test_long_secrets_are_masked_even_glued_to_words(secret: str, glue: str, times: int) -> None:
    """Keys (16+ characters) are masked wherever they occur, inside words too."""
    message = (glue + secret) * times + glue
    out = redact(message, secret)
    assert secret not in out
    assert out.count(MASK) >= 1


plain_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="*"), max_size=80
)


@PROPERTY
@given(plain_text, st.lists(secret_text, max_size=4))
@example("http://localhost:9/v1 answered 401", ["local"]).via("the README's OPENAI_API_KEY=local")
@example("the table postgres_sections on host pg", ["postgres"])
def test_text_without_secrets_comes_out_unchanged(text: str, secrets: list[str]) -> None:
    assume(not KEY_PATTERN.search(text) and "://" not in text)
    # A secret standing as a value in `text` is a secret in it; inside a word it is not.
    assume(redact(text) == text)
    assume(not any(f" {s} " in f" {text} " for s in secrets))
    for secret in secrets:
        if len(secret) >= SUBSTRING_SECRET_LENGTH:
            assume(secret not in text)
        else:
            assume(not re.search(rf"(?<!\w){re.escape(secret)}(?!\w)", text))
    assert redact(text, *secrets) == text
    assert Scrubber(secrets=secrets)(text) == text


@PROPERTY
@given(st.text(string.ascii_letters + string.digits, min_size=MIN_SECRET_LENGTH, max_size=SUBSTRING_SECRET_LENGTH - 1),
       st.text(string.ascii_letters + string.digits + "_", max_size=5),
       st.text(string.ascii_letters + string.digits + "_", max_size=5))
def test_short_secrets_are_not_hunted_inside_words(secret: str, before: str, after: str) -> None:
    assume(before or after)
    text = f"http://{before}{secret}{after}:9/v1 and {before}{secret}{after}."
    assume(not KEY_PATTERN.search(text))
    assert redact(text, secret) == text
    # ... and still masked where the same secret stands as a value
    assert redact(f"key={secret}&x", secret) == f"key={MASK}&x"


def test_short_key_examples() -> None:
    assert redact("POST http://localhost:9/v1: HTTP 401 for key local", "local") == (
        "POST http://localhost:9/v1: HTTP 401 for key ***"
    )
    assert redact("Bearer test-key, 'test-key', test-keys, mytest-key", "test-key") == (
        "Bearer ***, '***', test-keys, mytest-key"
    )
    assert redact("abc is short", "abc") == "abc is short"  # below MIN_SECRET_LENGTH


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("http://user:pw@host/v1", "http://host/v1"),
        ("https://user:p@ss@host:8443/v1?x=1#y", "https://host:8443/v1?x=1#y"),
        ("http://token@127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
        ("http://:pw@host", "http://host"),
        ("http://127.0.0.1:9/v1/path@thing", "http://127.0.0.1:9/v1/path@thing"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("", ""),
    ],
)
def test_strip_url_userinfo(url: str, stripped: str) -> None:
    assert strip_url_userinfo(url) == stripped


@pytest.mark.parametrize(
    "scheme", ["postgresql", "postgres", "postgresql+psycopg2", "mysql", "mysql+pymysql", "http", "https", "redis", "s3"]
)
def test_url_passwords_of_any_scheme_are_masked(scheme: str) -> None:
    message = f"could not connect to {scheme}://user:S3cret@127.0.0.1:1/db (and again: '{scheme}://user:S3cret@h')"
    out = redact(message)
    assert "S3cret" not in out
    assert f"{scheme}://user:{MASK}@127.0.0.1:1/db" in out and f"'{scheme}://user:{MASK}@h'" in out
    assert "S3cret" not in redact_dsn(f"{scheme}://user:S3cret@h/db")


@PROPERTY
@given(st.sampled_from(["postgresql", "postgresql+psycopg2", "mysql", "http", "https"]),
       st.text(SECRET_CHARS + "@:!$", min_size=1, max_size=20), st.integers(1, 3))
def test_url_password_never_survives(scheme: str, password: str, times: int) -> None:
    message = " ".join([f"{scheme}://app:{password}@db.example.com:5432/x"] * times)
    out = redact(message)
    assert out == " ".join([f"{scheme}://app:{MASK}@db.example.com:5432/x"] * times)
    assert strip_url_userinfo(message) == " ".join([f"{scheme}://db.example.com:5432/x"] * times)


# --- connection strings and the Scrubber ----------------------------------------------------

PUBLIC = "app db.example.com 5432 db"
dsn_password = st.text(SECRET_CHARS + "@:!$%^", min_size=MIN_SECRET_LENGTH, max_size=24)


@st.composite
def dsn_cases(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """(dsn, password, a message holding the dsn and the password's spellings, the message as it must read)."""
    password = draw(dsn_password)
    assume(password not in PUBLIC)
    form = draw(st.sampled_from(["postgresql", "postgres", "postgresql+psycopg2", "mysql", "https", "kv"]))
    if form == "kv":
        assume(all(ch not in password for ch in " '\\"))
        dsn = f"host=db.example.com port=5432 user=app password={password} dbname=db"
        spellings = [password]
    else:
        quoted = urllib.parse.quote(password, safe="")
        dsn = f"{form}://app:{quoted}@db.example.com:5432/db"
        spellings = sorted({password, quoted})
    assume(not any(s in redact_dsn(dsn) for s in spellings))  # e.g. "com:" inside the host: a value there
    pieces = draw(st.lists(st.sampled_from([dsn, *spellings]), min_size=1, max_size=6))
    seps = [draw(st.sampled_from([" ", ", ", " (", ") ", ": ", ' "', '" '])) for _ in range(len(pieces) + 1)]
    message = seps[0] + "".join(p + s for p, s in zip(pieces, seps[1:], strict=True))
    expected = seps[0] + "".join(
        (redact_dsn(dsn) if p == dsn else MASK) + s for p, s in zip(pieces, seps[1:], strict=True)
    )
    return dsn, password, message, expected


@PROPERTY
@given(dsn_cases())
@example(("host=h user=app password=hunter22 dbname=db", "hunter22", ' libpq: "hunter22" ', ' libpq: "***" '))
def test_scrubber_masks_every_spelling_of_a_dsn_password(case: tuple[str, str, str, str]) -> None:
    dsn, password, message, expected = case
    out = Scrubber(dsns=[dsn])(message)
    assert out == expected
    assert scrub_dsn(message, dsn) == expected


def test_dsn_password_that_is_also_public_keeps_the_message_readable() -> None:
    dsn = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
    assert scrub_dsn(f"FATAL on {dsn} for user postgres", dsn) == (
        f"FATAL on postgresql://postgres:{MASK}@127.0.0.1:5432/postgres for user postgres"
    )


def test_cli_scrubbing_layer_masks_what_the_cli_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's last layer (console.one_line over console.SECRETS), on its own: what the CLI registers
    (key, base URL, --database-url) never reaches a printed line, whoever made the message."""
    from core.cli import console, settings

    monkeypatch.setattr(console, "SECRETS", Scrubber())
    monkeypatch.setattr(settings, "SECRETS", console.SECRETS)
    monkeypatch.setenv("OPENAI_API_KEY", "local")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gw-user:gw-pass-123@localhost:9/v1")
    settings.require_key()
    console.SECRETS.add_dsn("host=h user=app password=S3cretPw dbname=db")
    console.SECRETS.add_dsn("postgresql+psycopg2://app:pa%40ss99@h/db")
    line = console.one_line(
        "failed:\n key local at http://localhost:9/v1, gw-pass-123 rejected; "
        'libpq: "S3cretPw" and pa@ss99 / pa%40ss99 in postgresql+psycopg2://app:pa%40ss99@h/db'
    )
    for secret in ("gw-pass-123", "S3cretPw", "pa@ss99", "pa%40ss99", " local "):
        assert secret not in line, line
    assert "http://localhost:9/v1" in line and "\n" not in line
    assert line == (
        f"failed: key {MASK} at http://localhost:9/v1, {MASK} rejected; "
        f'libpq: "{MASK}" and {MASK} / {MASK} in postgresql+psycopg2://app:{MASK}@h/db'
    )


# --- the embeddings service: a password in its base URL ---------------------------------------

GATEWAY = "http://gw-user:pw-123@localhost:9/v1"


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_service_never_shows_the_password_of_its_base_url(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """repr, EndpointError (message, .url, per-input reasons): no user:password, and the short key
    ``local`` masked as a value without eating ``localhost``."""
    from core.embed.async_service import AsyncEmbeddingService
    from core.embedding_service import EmbeddingService
    from core.errors import EndpointError

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    kwargs = {"base_url": GATEWAY} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv("OPENAI_BASE_URL", GATEWAY)
    service = EmbeddingService(api_key="local", max_retries=0, **kwargs)
    texts = [repr(service), repr(AsyncEmbeddingService(api_key="local", **kwargs))]
    with pytest.raises(EndpointError) as info:  # nothing listens on port 9: refused
        service.batch_generate_embeddings(["a", "b"])
    texts += [str(info.value), str(info.value.url), *info.value.failures.values()]
    for text in texts:
        assert "pw-123" not in text and "gw-user" not in text, text
        assert "***host" not in text, text
    assert "http://localhost:9/v1" in str(info.value) and info.value.url == "http://localhost:9/v1"
    assert all("base_url='http://localhost:9/v1'" in t for t in texts[:2])
    assert str(service.client.base_url).startswith("http://gw-user:pw-123@")  # the client still authenticates


def test_failure_reasons_mask_a_url_password_an_error_carries() -> None:
    from unittest.mock import patch

    from fake_openai_client import FakeOpenAIClient

    from core.embedding_service import EmbeddingService

    leak = Exception(f"POST {GATEWAY}/embeddings failed; retry postgresql+psycopg2://app:S3cret@h/db")
    with patch("core.embedding_service.OpenAI", return_value=FakeOpenAIClient(outcomes=[leak])):
        service = EmbeddingService(api_key="test-key", max_retries=0, sleep=lambda s: None)
        batch = service.embed(["c"])
    reason = batch.errors[0]
    assert "pw-123" not in reason and "S3cret" not in reason
    assert "http://gw-user:***@localhost:9/v1/embeddings" in reason


# --- edges the mutation run found untested (bench/README.md, "Mutation testing") ---------------


@PROPERTY
@given(st.text(string.ascii_letters + string.digits + "-_.", min_size=MIN_SECRET_LENGTH, max_size=SUBSTRING_SECRET_LENGTH - 1),
       st.sampled_from(["x", "7", "_"]))
def test_a_word_character_glued_to_a_short_secret_counts_only_on_a_word_edge(secret: str, glue: str) -> None:
    """Glued to a word character, a short secret stands as a value only where its own edge is not one."""
    before = redact(f"{glue}{secret} ", secret)
    after = redact(f" {secret}{glue}", secret)
    assert before == (f"{glue}{secret} " if re.match(r"\w", secret[0]) else f"{glue}{MASK} ")
    assert after == (f" {secret}{glue}" if re.match(r"\w", secret[-1]) else f" {MASK}{glue}")


def test_touching_secrets_become_one_mask() -> None:
    first, second = "A" * SUBSTRING_SECRET_LENGTH, "B" * SUBSTRING_SECRET_LENGTH
    assert redact(f"<{first}{second}>", first, second) == f"<{MASK}>"
    assert redact(f"<{first} {second}>", first, second) == f"<{MASK} {MASK}>"


def test_scheme_case_and_passwords_with_colons() -> None:
    assert redact_dsn("PostgreSQL://app:Pw12@h/db") == f"PostgreSQL://app:{MASK}@h/db"
    dsn = "postgresql://app:pa:ss@h/db"  # an unescaped ":" in the password: everything after the first
    assert scrub_dsn("libpq: pa:ss (and ss alone)", dsn) == f"libpq: {MASK} (and ss alone)"


@pytest.mark.parametrize(
    ("dsn", "lone"),
    [
        ("postgresql://h/db?user=app&password=Qu3ryPw", ["Qu3ryPw"]),
        ("postgresql://app:one1pw@h/db?password=two2pw", ["one1pw", "two2pw"]),
        ("host=h user=app password='se cret' dbname=db", ["se cret"]),
        (r"host=h user=app password='it\'s mine' dbname=db", ["it's mine"]),
    ],
)
def test_every_password_of_a_dsn_is_masked_alone(dsn: str, lone: list[str]) -> None:
    message = "server said: " + ", ".join(f'"{p}"' for p in lone)
    assert scrub_dsn(message, dsn) == "server said: " + ", ".join(f'"{MASK}"' for _ in lone)
    assert Scrubber(dsns=[dsn])(f"{dsn} failed") == f"{redact_dsn(dsn)} failed"


def test_dsn_passwords_lists_every_spelling_longest_first() -> None:
    from core.secrets import dsn_passwords

    assert dsn_passwords("postgresql://app:pa%40ss@h/db") == ["pa%40ss", "pa@ss"]
    assert dsn_passwords(r"password='a\'bcd'") == ["'a\\'bcd'", "a'bcd"]
    assert dsn_passwords("postgresql://app@h/db") == []


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgresql://postgres:postgres@h/postgres", "role postgres on db postgres"),
        ("postgresql://other:appdb@h/appdb", "database appdb does not exist"),
        ("postgresql://other:5432@h:5432/x", "port 5432 refused"),
        ("host=h user=postgres password=postgres dbname=x", "role postgres"),
        ("host=h user='admin' password=admin dbname=x", "role admin"),
        ("HOST=h USER=admin PASSWORD=admin", "role admin"),
    ],
)
def test_a_password_that_is_also_a_public_part_is_not_masked_alone(dsn: str, message: str) -> None:
    assert scrub_dsn(message, dsn) == message
    assert "admin" not in redact_dsn(dsn).partition("assword=")[2]


def test_scrubber_ignores_missing_and_short_values() -> None:
    scrub = Scrubber(secrets=[None, "", "abc"], dsns=[None, ""])
    assert scrub.secrets == set() and scrub.dsns == set()
    assert scrub("abc stays") == "abc stays"
    assert repr(scrub) == "Scrubber(0 secrets, 0 DSNs)"
