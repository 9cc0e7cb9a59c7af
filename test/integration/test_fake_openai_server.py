"""The local OpenAI-compatible server, driven by the real `openai` SDK and by raw httpx."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import openai
import pytest

from core.testing import DEFAULT_CONFIG, FakeOpenAIServer, expected_embedding, expected_embeddings, format_duration
from core.testing.openai_server import _WORD_RE, _word_codes
from core.engine.tokens import count_tokens, get_encoding

pytestmark = pytest.mark.integration

SMALL = "text-embedding-3-small"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Postgres stores vectors with pgvector", "naïve café — ÉCOLE"]
DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


@pytest.fixture
def client(fake_openai: FakeOpenAIServer):
    with openai.OpenAI(api_key="test-key", base_url=fake_openai.base_url, max_retries=0) as c:
        yield c


@pytest.fixture
def raw(fake_openai: FakeOpenAIServer):
    with httpx.Client(base_url=fake_openai.base_url, headers={"Authorization": "Bearer test-key"},
                      trust_env=False, timeout=10) as c:
        yield c


def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# -- embeddings ---------------------------------------------------------------------------


def test_sdk_default_base64_decodes_to_expected_vectors(client, raw, fake_openai):
    resp = client.embeddings.create(model=SMALL, input=TEXTS)
    assert [d.index for d in resp.data] == [0, 1, 2]
    for d, text in zip(resp.data, TEXTS):
        got = np.asarray(d.embedding, dtype=np.float32)
        assert got.shape == (1536,)
        np.testing.assert_array_equal(got, expected_embedding(text))
        assert abs(np.linalg.norm(got) - 1.0) < 1e-5
    n_tokens = sum(count_tokens(t) for t in TEXTS)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == n_tokens
    assert resp.model == SMALL and resp.object == "list"

    # the wire format the SDK asked for: base64 of little-endian float32
    r = raw.post("/embeddings", json={"model": SMALL, "input": TEXTS[0], "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(vec, expected_embedding(TEXTS[0]))
    # no encoding_format at all: floats
    r = raw.post("/embeddings", json={"model": SMALL, "input": TEXTS[0]})
    assert r.status_code == 200 and isinstance(r.json()["data"][0]["embedding"], list)
    assert r.headers["x-request-id"].startswith("req_") and int(r.headers["openai-processing-ms"]) >= 0
    assert "x-ratelimit-limit-tokens" not in r.headers  # no limits configured


def test_float_format_round_trips_float32_exactly(client):
    resp = client.embeddings.create(model=SMALL, input=TEXTS, encoding_format="float")
    assert len(TEXTS) >= 2 and [d.index for d in resp.data] == list(range(len(TEXTS)))
    for d, text in zip(resp.data, TEXTS, strict=True):
        assert isinstance(d.embedding, list) and len(d.embedding) == 1536 and isinstance(d.embedding[0], float)
        np.testing.assert_array_equal(np.asarray(d.embedding, dtype=np.float32), expected_embedding(text))


def test_dimensions_are_the_renormalised_prefix(client):
    resp = client.embeddings.create(model=SMALL, input=TEXTS[0], dimensions=256)
    short = np.asarray(resp.data[0].embedding, dtype=np.float32)
    assert short.shape == (256,)
    np.testing.assert_array_equal(short, expected_embedding(TEXTS[0], 256))
    native = expected_embedding(TEXTS[0])
    np.testing.assert_allclose(short, native[:256] / np.linalg.norm(native[:256]), atol=1e-6)

    large = client.embeddings.create(model="text-embedding-3-large", input=TEXTS[1])
    vec = np.asarray(large.data[0].embedding, dtype=np.float32)
    assert vec.shape == (3072,)
    np.testing.assert_array_equal(vec, expected_embedding(TEXTS[1], 3072, model="text-embedding-3-large"))
    ada = client.embeddings.create(model="text-embedding-ada-002", input=TEXTS[1])
    assert len(ada.data[0].embedding) == 1536


@pytest.mark.parametrize(
    ("model", "dims", "pattern"),
    [
        ("text-embedding-ada-002", 512, "does not support specifying dimensions"),
        (SMALL, 0, "Must be at least 1"),
        (SMALL, 1537, "Expected a value <= 1536"),
        ("text-embedding-3-large", 3073, "Expected a value <= 3072"),
    ],
)
def test_bad_dimensions_are_400(raw, model, dims, pattern):
    r = raw.post("/embeddings", json={"model": model, "input": "hi", "dimensions": dims})
    assert r.status_code == 400
    err = _error(r)
    assert err["type"] == "invalid_request_error" and err["param"] == "dimensions"
    assert re.search(pattern, err["message"])


def test_token_array_inputs(client):
    tokens = get_encoding().encode_ordinary("hello world")
    one = client.embeddings.create(model=SMALL, input=tokens)
    assert one.usage.prompt_tokens == len(tokens) and len(one.data) == 1
    np.testing.assert_array_equal(np.asarray(one.data[0].embedding, dtype=np.float32), expected_embedding("hello world"))
    many = client.embeddings.create(model=SMALL, input=[tokens, tokens[:1]])
    assert many.usage.prompt_tokens == len(tokens) + 1
    np.testing.assert_array_equal(np.asarray(many.data[1].embedding, dtype=np.float32), expected_embedding("hello"))


def test_expected_embedding_shares_words_and_never_collides():
    a, b, c = expected_embeddings(["red apples and green pears", "green pears and red apples too", "tax law of Norway"])
    assert a @ b > 0.8 > 0.2 > abs(a @ c)  # a shared vocabulary makes neighbours
    same_words = expected_embeddings(["Hello world", "hello world", "hello, world!"])
    assert not np.array_equal(same_words[0], same_words[1]) and same_words[0] @ same_words[1] > 0.999
    # batch computation equals one-by-one, and is deterministic
    np.testing.assert_array_equal(expected_embeddings(TEXTS), np.stack([expected_embedding(t) for t in TEXTS]))
    # shortened vectors of the large model: the first d of its native vector, renormalised
    full = expected_embedding(TEXTS[0], 3072, model="text-embedding-3-large")
    np.testing.assert_allclose(expected_embedding(TEXTS[0], 100, model="text-embedding-3-large"),
                               full[:100] / np.linalg.norm(full[:100]), atol=1e-6)
    with pytest.raises(ValueError):
        expected_embedding("x", 1537)


def test_vectorised_word_hashing_equals_zlib_crc32():
    texts = TEXTS + ["Ünïcödé WORDS, ǅ and İ; snake_case 42x " + "y" * 60, "!!!", "a", "\ud800 lone surrogate"]
    rows, codes = _word_codes(texts)
    ref = [(i, zlib.crc32(w.encode("utf-8", "surrogatepass"))) for i, t in enumerate(texts)
           for w in _WORD_RE.findall(t.lower())]
    assert list(zip(rows.tolist(), codes.tolist())) == ref


# -- request errors -----------------------------------------------------------------------


def test_each_bad_request_is_a_400_with_openai_error_body(client, raw, fake_openai):
    cases = [
        ("", "'$.input' is invalid"),
        ([], "'$.input' is invalid"),
        (["ok", ""], "'$.input' is invalid"),
        (["x"] * 2049, "Too many inputs. The max number of inputs is 2048"),
    ]
    for value, message in cases:
        with pytest.raises(openai.BadRequestError) as exc:
            client.embeddings.create(model=SMALL, input=value)
        assert exc.value.status_code == 400
        assert message in exc.value.body["message"] and exc.value.body["type"] == "invalid_request_error"

    long_text = "hello " * 8200
    n = count_tokens(long_text)
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model=SMALL, input=["fine", long_text])
    assert exc.value.body["message"].startswith(
        f"This model's maximum context length is 8192 tokens, however you requested {n} tokens"
    )

    texts = ["hello " * 8000] * 38  # 38 * 8001 tokens > 300000
    total = 38 * count_tokens(texts[0])
    r = raw.post("/embeddings", json={"model": SMALL, "input": texts})
    assert r.status_code == 400
    err = _error(r)
    assert err == {"message": f"Requested {total} tokens, max 300000 tokens per request",
                   "type": "invalid_request_error", "param": None, "code": "max_tokens_per_request"}

    r = raw.post("/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "could not parse the JSON body" in _error(r)["message"]
    assert fake_openai.stats()["by_status"] == {"400": 7}


def test_missing_or_empty_key_is_401(fake_openai):
    with httpx.Client(base_url=fake_openai.base_url, trust_env=False) as c:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}):
            r = c.post("/embeddings", json={"model": SMALL, "input": "hi"}, headers=headers)
            assert r.status_code == 401
            assert "You didn't provide an API key" in _error(r)["message"]
            assert r.headers["x-request-id"]


def test_unknown_model_and_path_are_404(client, raw):
    with pytest.raises(openai.NotFoundError) as exc:
        client.embeddings.create(model="text-embedding-4-huge", input="hi")
    assert exc.value.code == "model_not_found"
    assert "`text-embedding-4-huge` does not exist" in exc.value.body["message"]
    r = raw.post("/completions", json={})
    assert r.status_code == 404 and _error(r)["message"] == "Invalid URL (POST /v1/completions)"
    r = raw.get("/embeddings")
    assert r.status_code == 404 and _error(r)["message"] == "Invalid URL (GET /v1/embeddings)"


# -- rate limits and quota ----------------------------------------------------------------


def test_tpm_bucket_429_with_retry_after_then_refills(fake_openai, raw):
    fake_openai.configure(tpm=1000, window_seconds=3.0)  # refills 1000 tokens in 3 s
    text = "hello " * 599  # 600 tokens
    assert count_tokens(text) == 600
    ok = raw.post("/embeddings", json={"model": SMALL, "input": text})
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-tokens"] == "1000"
    assert 400 <= int(ok.headers["x-ratelimit-remaining-tokens"]) <= 450
    assert DURATION.match(ok.headers["x-ratelimit-reset-tokens"])
    assert "x-ratelimit-limit-requests" not in ok.headers  # rpm not configured

    limited = raw.post("/embeddings", json={"model": SMALL, "input": text})
    assert limited.status_code == 429
    err = _error(limited)
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "tokens"
    assert "on tokens per min (TPM): Limit 1000" in err["message"] and "Requested 600" in err["message"]
    wait_ms = int(limited.headers["retry-after-ms"])
    assert 100 <= wait_ms <= 600  # 200 tokens short, minus what refilled since
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["x-request-id"] and DURATION.match(limited.headers["x-ratelimit-reset-tokens"])

    time.sleep(wait_ms / 1000 + 0.02)
    assert raw.post("/embeddings", json={"model": SMALL, "input": text}).status_code == 200
    stats = fake_openai.stats()
    assert stats["by_status"] == {"200": 2, "429": 1} and stats["tokens_ok"] == 1200


def test_rpm_bucket_and_request_too_large(fake_openai, client):
    fake_openai.configure(rpm=2, tpm=50, window_seconds=10.0)
    client.embeddings.create(model=SMALL, input="one")
    client.embeddings.create(model=SMALL, input="two")
    with pytest.raises(openai.RateLimitError) as exc:
        client.embeddings.create(model=SMALL, input="three")
    assert exc.value.code == "rate_limit_exceeded" and exc.value.body["type"] == "requests"
    headers = exc.value.response.headers
    assert 4000 <= int(headers["retry-after-ms"]) <= 5000  # one request refills in 10 s / 2
    assert headers["x-ratelimit-limit-requests"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"

    fake_openai.configure(rpm=None, tpm=50)
    with pytest.raises(openai.RateLimitError) as exc:
        client.embeddings.create(model=SMALL, input="word " * 60)
    assert exc.value.body["message"].startswith("Request too large for text-embedding-3-small")
    assert "retry-after-ms" not in exc.value.response.headers


def test_insufficient_quota(fake_openai, client):
    fake_openai.configure(quota_exhausted=True)
    with pytest.raises(openai.RateLimitError) as exc:
        client.embeddings.create(model=SMALL, input="hi")
    assert exc.value.code == "insufficient_quota" and exc.value.body["type"] == "insufficient_quota"
    assert "check your plan and billing details" in exc.value.body["message"]
    assert "retry-after" not in exc.value.response.headers and "retry-after-ms" not in exc.value.response.headers


def test_server_faults_do_not_consume_budget(fake_openai, client):
    fake_openai.configure(rpm=1, window_seconds=60.0, fault_script=["500", "503"])
    with pytest.raises(openai.InternalServerError) as exc:
        client.embeddings.create(model=SMALL, input="hi")
    assert exc.value.status_code == 500 and exc.value.body["type"] == "server_error"
    with pytest.raises(openai.InternalServerError) as exc:
        client.embeddings.create(model=SMALL, input="hi")
    assert exc.value.status_code == 503
    client.embeddings.create(model=SMALL, input="hi")  # the bucket's one request is still there
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model=SMALL, input="hi")
    stats = fake_openai.stats()
    assert stats["faults"] == {"500": 1, "503": 1}
    assert stats["by_status"] == {"500": 1, "503": 1, "200": 1, "429": 1}


# -- faults -------------------------------------------------------------------------------


def test_malformed_answers_are_visible(fake_openai, client):
    fake_openai.configure(fault_script=["short", "extra", "bad_index", "ok"])
    short = client.embeddings.create(model=SMALL, input=TEXTS)
    assert [d.index for d in short.data] == [0, 1]
    extra = client.embeddings.create(model=SMALL, input=TEXTS)
    assert [d.index for d in extra.data] == [0, 1, 2, 3]
    bad = client.embeddings.create(model=SMALL, input=TEXTS)
    assert [d.index for d in bad.data] == [0, 1, 1]
    ok = client.embeddings.create(model=SMALL, input=TEXTS)
    assert [d.index for d in ok.data] == [0, 1, 2]
    stats = fake_openai.stats()
    assert stats["faults"] == {"short": 1, "extra": 1, "bad_index": 1}
    assert stats["by_status"] == {"200": 4} and stats["inputs_ok"] == 12
    assert fake_openai.get_config()["fault_script"] == []


def test_hang_is_cut_by_the_client_timeout(fake_openai):
    fake_openai.configure(fault_script=["hang"], hang_seconds=1.5)
    with openai.OpenAI(api_key="test-key", base_url=fake_openai.base_url, max_retries=0, timeout=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            c.embeddings.create(model=SMALL, input="hi")
        assert time.monotonic() - t0 < 1.2
        deadline = time.monotonic() + 3
        while fake_openai.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = fake_openai.stats()
        assert stats["faults"] == {"hang": 1} and stats["by_status"] == {} and stats["log"][0][2] == 0
        assert c.embeddings.create(model=SMALL, input="hi").usage.total_tokens == 1  # the server still serves


def test_random_faults_are_seeded(fake_openai, raw):
    def statuses() -> list[int]:
        return [raw.post("/embeddings", json={"model": SMALL, "input": "x"}).status_code for _ in range(12)]

    fake_openai.configure(fault_rates={"500": 0.3, "503": 0.2}, seed=7)
    first = statuses()
    fake_openai.configure(seed=7)  # reseeds
    assert statuses() == first
    import random

    rng = random.Random(7)
    expected = []
    for _ in range(12):
        u = rng.random()
        expected.append(500 if u < 0.3 else 503 if u < 0.5 else 200)
    assert first == expected and {500, 503, 200} <= set(first)


# -- latency, concurrency, stats, control plane --------------------------------------------


def test_latency_and_max_in_flight(fake_openai, client):
    fake_openai.configure(latency_base=0.25, latency_per_token=0.01)
    t0 = time.monotonic()
    client.embeddings.create(model=SMALL, input="hello " * 9)  # 10 tokens: 0.35 s
    assert 0.35 <= time.monotonic() - t0 < 3

    fake_openai.reset_stats()
    threads = [threading.Thread(target=client.embeddings.create, kwargs={"model": SMALL, "input": "a"})
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = fake_openai.stats()
    assert stats["requests"] == 4 and stats["max_in_flight"] >= 2 and stats["in_flight"] == 0
    starts, ends = [e[0] for e in stats["log"]], [e[1] for e in stats["log"]]
    assert all(end - start >= 0.26 for start, end in zip(starts, ends))


def test_stats_and_control_plane(fake_openai, client):
    client.embeddings.create(model=SMALL, input=TEXTS)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
    stats = fake_openai.stats()
    n_tokens = sum(count_tokens(t) for t in TEXTS)
    assert stats["requests"] == 2 and stats["by_status"] == {"200": 1, "404": 1}
    assert stats["tokens_ok"] == n_tokens and stats["inputs_ok"] == 3 and stats["max_in_flight"] == 1
    (t_start, t_end, status, tokens, n_inputs), _ = stats["log"]
    assert t_start <= t_end <= time.monotonic() and (status, tokens, n_inputs) == (200, n_tokens, 3)

    fake_openai.reset_stats()
    assert fake_openai.stats() == {"requests": 0, "by_status": {}, "faults": {}, "tokens_ok": 0, "inputs_ok": 0,
                                   "max_in_flight": 0, "in_flight": 0, "log": []}
    assert fake_openai.configure(tpm=5000)["tpm"] == 5000
    with pytest.raises(ValueError, match="unknown config key"):
        fake_openai.configure(tmp=5)
    with pytest.raises(ValueError, match="fault_rates"):
        fake_openai.configure(fault_rates={"boom": 0.1})
    assert fake_openai.reset_config() == DEFAULT_CONFIG
    with httpx.Client(trust_env=False) as c:
        assert c.get(fake_openai.url + "/_control/nope").status_code == 404


def test_openai_env_fixture_points_the_sdk_at_the_server(openai_env):
    with openai.OpenAI(max_retries=0) as c:  # key and base URL from the environment
        assert c.embeddings.create(model=SMALL, input="hi").data[0].index == 0
    assert openai_env.stats()["by_status"] == {"200": 1}


def test_format_duration():
    cases = {0: "0s", 0.12: "120ms", 0.0004: "0s", 1: "1s", 1.5: "1.5s", 360: "6m0s", 59.9996: "1m0s",
             3723.25: "1h2m3.25s"}
    assert {k: format_duration(k) for k in cases} == cases


# -- the process --------------------------------------------------------------------------


def test_process_lifecycle_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    with FakeOpenAIServer(tpm=123) as fake:
        pid = fake.pid
        assert fake.running and fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
        assert fake.get_config()["tpm"] == 123
        with httpx.Client(trust_env=False) as c:
            r = c.post(fake.base_url + "/embeddings", json={"model": SMALL, "input": "hi"},
                       headers={"Authorization": "Bearer k"})
            assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "123"
    assert not fake.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as c:
        c.get(fake.url + "/_control/stats")

    with pytest.raises(ValueError, match="unknown config key"):
        FakeOpenAIServer(rpn=5)


def test_cli_prints_listening_line_first():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(__import__("core").__file__))),
                      os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "core.testing.openai_server", "--port", "0",
                             "--config", '{"rpm": 7}'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline().decode()
        match = re.fullmatch(r"LISTENING http://127\.0\.0\.1:(\d+)\n", line)
        assert match
        with httpx.Client(trust_env=False) as c:
            assert c.get(f"http://127.0.0.1:{match.group(1)}/_control/config").json()["rpm"] == 7
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
