"""`EmbeddingService()` with its defaults against a hand-written aiohttp client (issue #9).

The yardstick for the engine work of issue #9: the library, configured with
nothing but `api_key` and `base_url` (plus `output="numpy"` / `max_concurrency`
where a regime says so), runs side by side in ONE run with
`bench/reference_client.py` (asyncio + aiohttp, ~150 lines) on the same corpus
against the same local server (`core.testing.FakeOpenAIServer`, its own
process). Client and server share the machine's cores with whatever else runs,
so the figures that matter are the RATIOS between the two clients measured in
the same run (order alternated between repeats: library first, then reference
first).

    python bench/bench_defaults.py                 # full: 10,000 sections (~4.37M tokens), 2 repeats
    python bench/bench_defaults.py --quick         # 2,000 sections, 1 repeat
    python bench/bench_defaults.py --regime a,c    # a subset (a, b, c, d)
    python bench/bench_defaults.py --core-rev HEAD # measure core/ as committed, not the working tree

Regimes (latency 0.15 s + 4 us per token of the request in a, b, c):

a. ceiling 300,000 tokens per 1 s "minute" (`window_seconds=1`), no RPM limit;
b. tier-1 shape: 1,000,000 TPM / 3,000 RPM per 4 s "minute";
c. no limit, `output="numpy"`, `max_concurrency=16` for both clients;
d. client CPU per 10,000 vectors with no latency and no limit (library
   `output="numpy"`, defaults otherwise; the reference at the library's default
   concurrency), where it goes (a CPU-clock sampler over every thread, by bucket), and the
   per-call overhead of `generate_embedding("one text")` vs one raw httpx POST.

Each client run is a fresh subprocess (imports done, the client made, and one
one-text warm-up request sent through a throwaway client of the same kind — the
async service through its own `asyncio.run` — against a limit-free server before
the clock starts; the server is then configured for the regime, its buckets
refilled and its stats reset). The clock runs around the call only, for both
services (closing comes after; `loop_wall_s` keeps the async run's whole
`asyncio.run`). Client CPU = `time.process_time()` of that subprocess (all threads) around the call;
requests, 429s, 400s, max in flight and request sizes come from the server's
own request log. Writes every figure to ``bench/results/defaults.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
# 127.0.0.1 traffic must never go through a proxy from the environment.
os.environ["NO_PROXY"] = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")]))
os.environ["no_proxy"] = os.environ["NO_PROXY"]

API_KEY = "sk-bench-not-a-real-key"
MODEL = "text-embedding-3-small"
DIMS = 1536
LATENCY = {"latency_base": 0.15, "latency_per_token": 4e-6}
NO_LIMITS = {"tpm": None, "rpm": None, "window_seconds": 60.0, "latency_base": 0.0, "latency_per_token": 0.0}
MEAN_TOKENS = 437  # 10,000 sections -> ~4.37M tokens
CLK_TCK = os.sysconf("SC_CLK_TCK")

REGIMES: dict[str, dict[str, Any]] = {
    "a": {"title": "ceiling 300,000 tokens per 1 s window, no RPM limit",
          "server": {"tpm": 300_000, "rpm": None, "window_seconds": 1.0, **LATENCY}, "library": {}},
    "b": {"title": "tier-1 shape: 1,000,000 TPM / 3,000 RPM per 4 s window",
          "server": {"tpm": 1_000_000, "rpm": 3000, "window_seconds": 4.0, **LATENCY}, "library": {}},
    "c": {"title": "no binding limit, output=numpy, max_concurrency=16 for both",
          "server": {"tpm": None, "rpm": None, "window_seconds": 60.0, **LATENCY},
          "library": {"output": "numpy", "max_concurrency": 16}},
}


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid`."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------

_SYLLABLES = ("ka", "lo", "mi", "ter", "pra", "ven", "dos", "ul", "zi", "ber", "con", "ra", "sta", "ni", "mel",
              "tor", "qua", "fe", "gri", "an", "el", "os", "um", "pe", "ri", "sol", "var", "ex", "in", "ta")
_COMMON = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "on", "by", "this", "are",
           "be", "from", "or", "an", "at", "which", "can", "data", "vector", "index", "table", "query", "row")


def make_corpus(n: int, seed: int, mean_tokens: int = MEAN_TOKENS) -> list[str]:
    """`n` distinct sections ("title\\n\\ncontent"), lengths log-normal around `mean_tokens` cl100k tokens."""
    from core.engine.tokens import get_encoding

    rng = random.Random(seed)
    vocab = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    vocab += list(_COMMON) * 60
    vocab += [w + rng.choice((".", ",", ";", ":")) for w in rng.sample(vocab, 800)]
    vocab += [str(rng.randint(0, 9999)) for _ in range(300)]
    sample = " ".join(rng.choices(vocab, k=5000))
    words_per_token = 5000 / len(get_encoding().encode_ordinary(sample))
    sigma = 0.6  # log-normal spread: a few short sections, a long tail (max ~8x the mean)
    mu = -sigma * sigma / 2
    sections = []
    for i in range(n):
        tokens = min(8 * mean_tokens, max(12, mean_tokens * rng.lognormvariate(mu, sigma)))
        title = " ".join(rng.choices(vocab, k=rng.randint(2, 6))).title()
        body = " ".join(rng.choices(vocab, k=max(3, round((tokens - 12) * words_per_token))))
        sections.append(f"{title} ({i})\n\n{body[:1].upper()}{body[1:]}.")
    return sections


# ---------------------------------------------------------------------------------------
# Child processes: one client run each
# ---------------------------------------------------------------------------------------


def library_service(base_url: str, **kwargs: Any) -> Any:
    from core import EmbeddingService

    return EmbeddingService(api_key=API_KEY, base_url=base_url, **kwargs)


def child_run(spec: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """Embed `texts` once with the client of `spec`, timed; optionally under the CPU sampler."""
    import numpy as np
    import reference_client

    client, base_url = spec["client"], spec["base_url"]
    lib_kwargs = spec.get("library") or {}
    conc = spec["max_concurrency"]
    if client == "library":
        svc = library_service(base_url, **lib_kwargs)
        call = lambda: svc.batch_generate_embeddings(texts)
    elif client == "async":  # AsyncEmbeddingService, same settings, one asyncio.run
        import asyncio

        from core import AsyncEmbeddingService

        # Made before the clock, as the sync service is (its HTTP client's TLS context costs
        # 35-60 ms on this machine); the clock runs around the awaited call only, as around
        # the sync call: closing the client and the loop's teardown come after t1, as the sync
        # client's close does. `loop_wall_s` records the whole asyncio.run for comparison.
        asvc = AsyncEmbeddingService(api_key=API_KEY, base_url=base_url, **lib_kwargs)
        inner: dict[str, float] = {}

        async def run_async() -> Any:
            inner["t0"], inner["c0"] = time.perf_counter(), time.process_time()
            result = await asvc.batch_generate_embeddings(texts)
            inner["t1"], inner["c1"], inner["t1m"] = time.perf_counter(), time.process_time(), time.monotonic()
            await asvc.aclose()
            return result

        svc = None
        call = lambda: asyncio.run(run_async())
    else:
        call = lambda: reference_client.embed(texts, base_url=base_url, api_key=API_KEY,
                                              max_concurrency=conc)
    profiler = Profiler() if spec.get("profile") else None
    print("READY", flush=True)
    sys.stdin.readline()
    if profiler:
        profiler.start()
    t0m, c0, t0 = time.monotonic(), time.process_time(), time.perf_counter()
    result = call()
    t1, c1, t1m = time.perf_counter(), time.process_time(), time.monotonic()
    out: dict[str, Any] = {"client": client, "wall_s": t1 - t0, "cpu_s": c1 - c0, "t0_monotonic": t0m,
                           "t1_monotonic": t1m}
    if client == "async":  # the call itself (see above); the whole asyncio.run kept beside it
        out.update(loop_wall_s=t1 - t0, wall_s=inner["t1"] - inner["t0"], cpu_s=inner["c1"] - inner["c0"],
                   t0_monotonic=t0m + (inner["t0"] - t0), t1_monotonic=inner["t1m"])
    if profiler:
        out["profile"] = profiler.stop()
    if client in ("library", "async"):
        vectors = result["embeddings"]
        out["failed"] = len(result["failed_indices"])
        out["total_tokens"] = result["total_tokens"]
        out["output_type"] = type(vectors).__name__
        vectors = np.asarray(vectors, dtype=np.float32) if not isinstance(vectors, np.ndarray) else vectors
        if svc is not None:
            svc.close()
    else:
        vectors = result.vectors
        out.update(failed=0, total_tokens=result.tokens, output_type="ndarray", client_requests=result.requests,
                   client_429=result.rate_limited, client_server_errors=result.server_errors,
                   client_max_in_flight=result.max_in_flight, gate_closed_s=round(result.gate_wait_s, 3))
    if spec.get("vectors_path"):
        np.save(spec["vectors_path"], vectors)
    out["shape"] = list(vectors.shape)
    return out


def child_warm_up(spec: dict[str, Any]) -> None:
    """One one-text request through a throwaway client of the same kind: imports, tokenizer, SDK models."""
    import reference_client

    if spec["client"] == "library":
        svc = library_service(spec["base_url"], **(spec.get("library") or {}))
        svc.batch_generate_embeddings(["warm-up text"])
        svc.close()
    elif spec["client"] == "async":  # the async path's own imports (anyio, httpx's async transport)
        import asyncio

        from core import AsyncEmbeddingService

        async def warm() -> None:
            async with AsyncEmbeddingService(api_key=API_KEY, base_url=spec["base_url"],
                                             **(spec.get("library") or {})) as asvc:
                await asvc.batch_generate_embeddings(["warm-up text"])

        asyncio.run(warm())
    else:
        reference_client.embed(["warm-up text"], base_url=spec["base_url"], api_key=API_KEY)


def child_per_call(spec: dict[str, Any]) -> dict[str, Any]:
    """generate_embedding("one text") vs one raw httpx POST, interleaved in blocks of 20."""
    import httpx

    svc = library_service(spec["base_url"])
    http = httpx.Client(timeout=30)
    url = spec["base_url"].rstrip("/") + "/embeddings"
    body = json.dumps({"input": ["one text"], "model": MODEL, "encoding_format": "base64"}).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def raw() -> None:
        r = http.post(url, content=body, headers=headers)
        r.read()
        if r.status_code != 200:
            raise RuntimeError(f"raw POST answered {r.status_code}")

    def lib() -> None:
        if len(svc.generate_embedding("one text")) != DIMS:
            raise RuntimeError("wrong width")

    for _ in range(10):
        lib(), raw()
    print("READY", flush=True)
    sys.stdin.readline()
    times: dict[str, list[float]] = {"library": [], "raw": []}
    cpu = {"library": 0.0, "raw": 0.0}
    for _ in range(spec["calls"] // 20):
        for name, fn in (("library", lib), ("raw", raw)):
            c0 = time.process_time()
            for _ in range(20):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            cpu[name] += time.process_time() - c0
    svc.close()
    http.close()
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = {"calls": len(ts), "median_ms": 1000 * statistics.median(ts), "p90_ms": 1000 * ts[int(0.9 * len(ts))],
                     "cpu_ms_per_call": 1000 * cpu[name] / len(ts)}
    return out


def child_main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    from core.engine.tokens import get_encoding

    get_encoding()
    if spec["mode"] == "per_call":
        print(json.dumps(child_per_call(spec)), flush=True)
        return 0
    with open(spec["texts_path"]) as f:
        texts = json.load(f)
    child_warm_up(spec)
    print(json.dumps(child_run(spec, texts)), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# CPU profile of every thread, by bucket
# ---------------------------------------------------------------------------------------

_HTTP = ("/openai/", "/httpx/", "/httpx2/", "/httpcore/", "/httpcore2/", "/h11/", "/anyio/", "/pydantic",
         "/aiohttp/", "/yarl/", "/multidict/", "/asyncio/", "/socket.py", "/selectors.py", "/ssl.py", "/http/",
         "/email/", "/urllib/", "/sniffio/", "/idna/", "/certifi/", "/propcache/", "/aiosignal/", "/frozenlist/",
         "/aiohappyeyeballs/", "/uuid.py")
_THREADS = ("/threading.py", "/concurrent/", "/queue.py")
BUCKETS = ("tokenizing", "JSON encode/parse", "HTTP + SDK", "base64 -> float32", "output formatting", "threads",
           "client logic", "other")


def bucket_of(func: tuple[str, int, str]) -> str | None:
    """A function's bucket by the module it lives in; None for everything else (numpy, typing,
    tenacity, comprehensions, ...): those count for the first caller that has a bucket."""
    path, _, name = func
    path = path.replace("\\", "/")
    if name.startswith("<") and name != "<module>":
        return None
    if "/tiktoken" in path or path.endswith("/core/tokens.py"):
        return "tokenizing"
    if "/json/" in path:
        return "JSON encode/parse"
    if any(m in path for m in _HTTP):
        return "HTTP + SDK"
    if path.endswith("/base64.py"):
        return "base64 -> float32"
    if "/core/" in path or path.endswith("/reference_client.py"):
        low = name.lower()
        if "decode" in low or "float32" in low or name == "_field":
            return "base64 -> float32"
        if "format" in low:
            return "output formatting"
        return "client logic"
    if any(m in path for m in _THREADS):
        return "threads"
    return None


def stack_bucket(frame: Any) -> tuple[str, str]:
    """(bucket, function) of a thread's current stack: its innermost frame in a module that has a
    bucket (C functions have no frame: they count for their caller)."""
    while frame is not None:
        code = frame.f_code
        func = (code.co_filename, code.co_firstlineno, code.co_name)
        b = bucket_of(func)
        if b is not None:
            return b, f"{os.path.basename(func[0])}:{func[1]}({func[2]})"
        frame = frame.f_back
    return "other", "?"


class Profiler:
    """Statistical CPU profile of every thread of this process but its own.

    Every `interval` seconds it reads each thread's CPU clock (`pthread_getcpuclockid`,
    nanoseconds) and charges the CPU that thread used since the last look to the bucket
    of the stack it is in now. Unlike cProfile it costs nothing per Python call, so code
    made of many small calls (the SDK, pydantic, httpx) is not over-weighted against one
    long C call (tiktoken, base64, json). The sampler needs the GIL, so a long C call that
    holds it delays the look (the CPU is then charged to the stack found after it); the
    GIL switch interval is lowered to 0.2 ms meanwhile. A thread that ends between two
    looks reports its last unseen CPU itself (Thread.run is wrapped), spread over the
    buckets sampled in that thread.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.seconds: dict[str, float] = dict.fromkeys(BUCKETS, 0.0)
        self.functions: dict[tuple[str, str], float] = {}
        self.samples = 0
        self.exit_tails_s = 0.0
        self._last: dict[int, float] = {}
        self._per_thread: dict[int, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._saved: tuple[Any, float] | None = None

    def _charge(self, ident: int, used: float, bucket: str, function: str) -> None:
        self.seconds[bucket] += used
        self.functions[bucket, function] = self.functions.get((bucket, function), 0.0) + used
        mine = self._per_thread.setdefault(ident, {})
        mine[bucket] = mine.get(bucket, 0.0) + used

    def _run(self) -> None:
        me = threading.get_ident()
        clocks: dict[int, int] = {}
        while not self._stop.is_set():
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                with self._lock:
                    try:
                        clock = clocks.get(ident)
                        if clock is None:
                            clock = clocks[ident] = time.pthread_getcpuclockid(ident)
                        cpu = time.clock_gettime(clock)
                    except OSError:  # the thread ended between the two calls
                        continue
                    used = cpu - self._last.get(ident, cpu)
                    self._last[ident] = cpu
                    if used > 0:
                        self._charge(ident, used, *stack_bucket(frame))
            self.samples += 1
            time.sleep(self.interval)

    def _wrap_run(self, run: Any) -> Any:
        profiler = self

        def wrapped(thread: threading.Thread) -> None:
            ident = threading.get_ident()
            with profiler._lock:
                profiler._last.setdefault(ident, time.thread_time())
            try:
                run(thread)
            finally:
                with profiler._lock:
                    rest = time.thread_time() - profiler._last.pop(ident, time.thread_time())
                    mine = profiler._per_thread.get(ident) or {"other": 1.0}
                    total = sum(mine.values())
                    profiler.exit_tails_s += max(0.0, rest)
                    for bucket, seconds in list(mine.items()):
                        if rest > 0:
                            profiler._charge(ident, rest * seconds / total, bucket, "(thread end, spread)")

        return wrapped

    def start(self) -> None:
        self._saved = (threading.Thread.run, sys.getswitchinterval())
        threading.Thread.run = self._wrap_run(threading.Thread.run)  # type: ignore[method-assign]
        sys.setswitchinterval(0.0002)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        assert self._saved is not None
        threading.Thread.run, switch = self._saved  # type: ignore[method-assign]
        sys.setswitchinterval(switch)
        top = sorted(self.functions.items(), key=lambda kv: kv[1], reverse=True)
        return {
            "profiled_s": sum(self.seconds.values()),
            "bucket_s": self.seconds,
            "samples": self.samples,
            "thread_end_tails_s": self.exit_tails_s,
            "bucket_top": {b: [[f, round(t, 4)] for (bb, f), t in top if bb == b][:6] for b in BUCKETS},
        }


# ---------------------------------------------------------------------------------------
# Parent: server, children, analysis
# ---------------------------------------------------------------------------------------


def spawn(spec: dict[str, Any], workdir: str, fake: Any, server_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Start a child, let it warm up against a limit-free server, configure the regime, run it."""
    fake.configure(**NO_LIMITS)
    path = os.path.join(workdir, "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "READY":
            proc.wait(30)
            raise RuntimeError(f"child did not get ready: {line!r}\n{''.join(err)[-3000:]}")
        fake.configure(**(server_cfg or NO_LIMITS))  # buckets full again
        fake.reset_stats()
        load_before, server_cpu0 = load(), proc_cpu(fake.pid)
        proc.stdin.write("GO\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        rest = proc.stdout.read()  # type: ignore[union-attr]
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not rest.strip():
        raise RuntimeError(f"child failed ({proc.returncode}):\n{''.join(err)[-3000:]}")
    out = json.loads(rest.strip().splitlines()[-1])
    out["server_cpu_s"] = proc_cpu(fake.pid) - server_cpu0
    out["load_before"] = load_before
    return out


def analyse_log(stats: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """What the server saw of one run: statuses, sizes, concurrency, probe, start and tail."""
    log = sorted(stats["log"], key=lambda e: e[0])
    by_status = stats["by_status"]
    n = len(log)
    ok = [e for e in log if e[2] == 200]
    out: dict[str, Any] = {
        "requests": n, "by_status": by_status, "count_429": by_status.get("429", 0),
        "count_400": by_status.get("400", 0), "pct_429": round(100 * by_status.get("429", 0) / max(1, n), 1),
        "server_max_in_flight": stats["max_in_flight"], "tokens_ok": stats["tokens_ok"],
    }
    if not log:
        return out
    toks = sorted(e[3] for e in ok)
    ins = sorted(e[4] for e in ok)
    span = max(e[1] for e in log) - log[0][0]
    out.update(
        first_request_after_s=round(log[0][0] - child["t0_monotonic"], 3),
        first_request_alone=not any(e[0] < log[0][1] for e in log[1:]),
        second_request_after_s=round(log[1][0] - log[0][0], 3) if n > 1 else None,
        tokens_per_ok_request={"min": toks[0], "median": statistics.median(toks), "max": toks[-1]} if toks else None,
        inputs_per_ok_request={"min": ins[0], "median": statistics.median(ins), "max": ins[-1]} if ins else None,
        mean_in_flight=round(sum(e[1] - e[0] for e in log) / span, 2) if span > 0 else None,
        tail_s=round(child["t1_monotonic"] - max(e[1] for e in log), 3),
        first_429_at_s=next((round(e[0] - log[0][0], 3) for e in log if e[2] == 429), None),
        status_sequence="".join({200: ".", 429: "R", 400: "X"}.get(e[2], "?") for e in log[:200]),
    )
    return out


def check_vectors(path: str, texts: Sequence[str], sample: int = 600) -> dict[str, Any]:
    """Shape and a seeded sample of rows compared exactly with the server's expected vectors."""
    import numpy as np

    from core.testing import expected_embeddings

    vectors = np.load(path)
    os.remove(path)
    if vectors.shape != (len(texts), DIMS):
        return {"ok": False, "why": f"shape {vectors.shape}"}
    idx = sorted(random.Random(len(texts)).sample(range(len(texts)), min(sample, len(texts))))
    wrong = int((~(vectors[idx] == expected_embeddings([texts[i] for i in idx])).all(axis=1)).sum())
    return {"ok": wrong == 0, "checked": len(idx), "wrong": wrong}


def run_regime(key: str, fake: Any, texts: list[str], total_tokens: int, workdir: str, texts_path: str,
               repeat: int, default_conc: int, clients: Sequence[str] = ("library", "reference")) -> dict[str, Any]:
    regime = REGIMES[key]
    cfg = regime["server"]
    lib_kwargs = regime["library"]
    conc = lib_kwargs.get("max_concurrency", default_conc)
    ceiling = cfg["tpm"] / cfg["window_seconds"] if cfg["tpm"] else None
    say(f"## Regime {key}: {regime['title']}; latency {cfg['latency_base']} s + "
        f"{cfg['latency_per_token'] * 1e6:g} us/token; {len(texts):,} sections, {total_tokens:,} tokens; "
        f"concurrency {conc} for both")
    runs = []
    for rep in range(repeat):
        order = tuple(clients) if rep % 2 == 0 else tuple(reversed(clients))
        for client in order:
            vpath = os.path.join(workdir, f"vectors_{client}.npy")
            spec = {"mode": "run", "client": client, "base_url": fake.base_url, "texts_path": texts_path,
                    "library": lib_kwargs, "max_concurrency": conc, "vectors_path": vpath}
            child = spawn(spec, workdir, fake, cfg)
            stats = fake.stats()
            run = {"regime": key, "repeat": rep, **child, **analyse_log(stats, child)}
            run["tokens_per_s"] = total_tokens / child["wall_s"]
            run["fraction_of_ceiling"] = run["tokens_per_s"] / ceiling if ceiling else None
            run["vectors_check"] = check_vectors(vpath, texts)
            if child["failed"] or not run["vectors_check"]["ok"]:
                say(f"WARNING: {client} run {rep}: {child['failed']} failed inputs, check {run['vectors_check']}")
            runs.append(run)
            say(f"  {client:9s} rep {rep}: {run['tokens_per_s']:,.0f} tok/s, wall {child['wall_s']:.2f} s, "
                f"CPU {child['cpu_s']:.2f} s, {run['requests']} requests, {run['count_429']} x 429, "
                f"max in flight {run['server_max_in_flight']}")
    summary: dict[str, Any] = {}
    for client in clients:
        mine = [r for r in runs if r["client"] == client]
        summary[client] = {
            "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in mine),
            "fraction_of_ceiling": statistics.mean(r["fraction_of_ceiling"] for r in mine) if ceiling else None,
            "wall_s": statistics.mean(r["wall_s"] for r in mine),
            "cpu_s": statistics.mean(r["cpu_s"] for r in mine),
            "server_cpu_s": statistics.mean(r["server_cpu_s"] for r in mine),
            "requests": statistics.mean(r["requests"] for r in mine),
            "count_429": statistics.mean(r["count_429"] for r in mine),
            "pct_429": statistics.mean(r["pct_429"] for r in mine),
            "count_400": sum(r["count_400"] for r in mine),
            "max_in_flight": max(r["server_max_in_flight"] for r in mine),
        }
    lib, ref = summary["library"], summary.get("reference")
    if ref is not None:
        summary["library_vs_reference"] = {"tokens_per_s": lib["tokens_per_s"] / ref["tokens_per_s"],
                                           "cpu_s": lib["cpu_s"] / ref["cpu_s"]}
    if "async" in summary:  # issue #10: the async driver against the sync one, same run
        summary["async_vs_library"] = {"tokens_per_s": summary["async"]["tokens_per_s"] / lib["tokens_per_s"],
                                       "cpu_s": summary["async"]["cpu_s"] / lib["cpu_s"]}
        if ref is not None:
            summary["async_vs_reference"] = {"tokens_per_s": summary["async"]["tokens_per_s"] / ref["tokens_per_s"],
                                             "cpu_s": summary["async"]["cpu_s"] / ref["cpu_s"]}
    # A perfect client still starts with a full bucket: its best fraction of the ceiling is
    # tokens / ((tokens - bucket) / refill), before latency and tokenizing.
    best = total_tokens / ((total_tokens - cfg["tpm"]) / ceiling) / ceiling if ceiling and total_tokens > cfg["tpm"] else None
    return {"title": regime["title"], "server_config": cfg, "library_kwargs": lib_kwargs, "max_concurrency": conc,
            "ceiling_tokens_per_s": ceiling, "best_possible_fraction": best, "runs": runs, "summary": summary}


def run_profile(fake: Any, texts: list[str], workdir: str, texts_path: str, default_conc: int,
                calls: int) -> dict[str, Any]:
    n = len(texts)
    say(f"## d. Client CPU per 10,000 vectors: {n:,} sections, no latency, no limit; library output=numpy "
        f"(defaults otherwise), reference at concurrency {default_conc}")
    out: dict[str, Any] = {"sections": n, "scale_to_10k": 10_000 / n}
    for client in ("library", "reference"):
        res: dict[str, Any] = {}
        for profiled in (False, True):
            vpath = os.path.join(workdir, f"vectors_{client}.npy")
            spec = {"mode": "run", "client": client, "base_url": fake.base_url, "texts_path": texts_path,
                    "library": {"output": "numpy"}, "max_concurrency": default_conc, "profile": profiled,
                    "vectors_path": vpath}
            child = spawn(spec, workdir, fake, NO_LIMITS)
            child.update(analyse_log(fake.stats(), child))
            child["vectors_check"] = check_vectors(vpath, texts)
            res["profiled" if profiled else "plain"] = child
        out[client] = res
        say(f"  {client}: CPU {res['plain']['cpu_s']:.2f} s ({res['plain']['cpu_s'] * out['scale_to_10k']:.2f} "
            f"s/10k), wall {res['plain']['wall_s']:.2f} s")
    spec = {"mode": "per_call", "base_url": fake.base_url, "calls": calls}
    out["per_call"] = spawn(spec, workdir, fake, NO_LIMITS)
    return out


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_tables(results: dict[str, Any]) -> None:
    regimes = [k for k in ("a", "b", "c") if k in results["regimes"]]
    if regimes:
        say("### Throughput (mean over repeats; ratios from the same run)")
        rows = []
        for k in regimes:
            r = results["regimes"][k]
            s = r["summary"]
            for client in [c for c in ("library", "async", "reference") if c in s]:
                c = s[client]
                vs = {"library": "library_vs_reference", "async": "async_vs_reference"}.get(client)
                vs = vs if vs in s else None
                rows.append([k, client, c["tokens_per_s"], c["fraction_of_ceiling"],
                             s[vs]["tokens_per_s"] if vs else 1.0,
                             c["wall_s"], c["requests"], f"{fmt(c['count_429'])} ({c['pct_429']:.0f}%)",
                             c["count_400"], c["max_in_flight"], c["cpu_s"],
                             s[vs]["cpu_s"] if vs else 1.0, c["server_cpu_s"]])
        say(table(["regime", "client", "tokens/s", "× ceiling", "tok/s ÷ ref", "wall s", "requests", "429 (%)", "400",
                   "max in flight", "client CPU s", "CPU ÷ ref", "server CPU s"], rows))
        say()
        for k in regimes:
            ratio = results["regimes"][k]["summary"].get("async_vs_library")
            if ratio:
                say(f"Regime {k}: async ÷ thread driver tokens/s {ratio['tokens_per_s']:.3f}, CPU {ratio['cpu_s']:.3f}")
        say()
        say("### Every run, as the server saw it")
        rows = []
        for k in regimes:
            for run in results["regimes"][k]["runs"]:
                t, i = run.get("tokens_per_ok_request") or {}, run.get("inputs_per_ok_request") or {}
                rows.append([k, run["client"], run["repeat"], run["tokens_per_s"], run["wall_s"], run["cpu_s"],
                             run["requests"], run["count_429"], run.get("first_request_after_s"),
                             run.get("first_request_alone"), run.get("second_request_after_s"),
                             f"{fmt(t.get('min'))}/{fmt(t.get('median'))}/{fmt(t.get('max'))}",
                             fmt(i.get("median")), run.get("mean_in_flight"), run["server_max_in_flight"],
                             run.get("tail_s"), run["load_before"]])
        say(table(["regime", "client", "rep", "tokens/s", "wall s", "client CPU s", "requests", "429",
                   "1st request at s", "1st alone", "2nd after s", "tokens/request min/med/max", "inputs/request med",
                   "mean in flight", "max in flight", "tail s", "load before"], rows))
        say()
    d = results.get("profile")
    if d:
        scale = d["scale_to_10k"]
        say("### d. Client CPU per 10,000 vectors (no latency, no limit), by bucket")
        rows = []
        for client in ("library", "reference"):
            plain, prof = d[client]["plain"], d[client]["profiled"]["profile"]
            total = plain["cpu_s"] * scale
            share = {b: s / prof["profiled_s"] for b, s in prof["bucket_s"].items()} if prof["profiled_s"] else {}
            rows.append([client, total, plain["wall_s"] * scale]
                        + [f"{total * share.get(b, 0):.2f} ({100 * share.get(b, 0):.0f}%)" for b in BUCKETS])
        say(table(["client", "CPU s /10k (unprofiled)", "wall s /10k"] + list(BUCKETS), rows))
        say("(bucket shares from a second, sampled run: every ~1 ms each thread's CPU-clock delta is charged to the "
            "innermost frame of its stack in a module with a bucket (C calls, numpy, typing, tenacity count for their "
            "caller); shares applied to the unprofiled CPU)")
        say()
        pc = d["per_call"]
        say("### d. Per-call overhead, no latency")
        say(table(["call", "calls", "median ms", "p90 ms", "client CPU ms/call"],
                  [[name, v["calls"], v["median_ms"], v["p90_ms"], v["cpu_ms_per_call"]] for name, v in
                   (("EmbeddingService().generate_embedding('one text')", pc["library"]),
                    ("raw httpx.Client.post (same body)", pc["raw"]))]))
        say()


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 sections, 1 repeat")
    parser.add_argument("--regime", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--sections", type=int, help="sections in the corpus (default 10,000; --quick 2,000)")
    parser.add_argument("--repeat", type=int, help="runs per client per regime, order alternated (default 2; --quick 1)")
    parser.add_argument("--calls", type=int, default=200, help="calls per side for the per-call overhead")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--out", help="JSON results (default bench/results/defaults[_quick][_<regimes>].json)")
    parser.add_argument("--core-rev", help="run clients and server on core/ exported from this git revision "
                        "(git archive into a temp dir, first on PYTHONPATH) instead of the working tree")
    parser.add_argument("--clients", default="library,reference",
                        help="clients to run in regimes a-c: library,reference[,async] (async = AsyncEmbeddingService)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    snapshot = None
    if args.core_rev:
        snapshot = tempfile.TemporaryDirectory(prefix="bench_defaults_core_")
        archive = subprocess.run(["git", "archive", args.core_rev, "core"], capture_output=True, cwd=ROOT, check=True)
        subprocess.run(["tar", "-x", "-C", snapshot.name], input=archive.stdout, check=True)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [snapshot.name, os.environ.get("PYTHONPATH")]))
        sys.path.insert(1, snapshot.name)

    import reference_client

    from core.testing import FakeOpenAIServer
    from core.engine.tokens import count_tokens_batch

    chosen = [k.strip() for k in args.regime.split(",") if k.strip()]
    if not chosen or set(chosen) - {"a", "b", "c", "d"}:
        parser.error("--regime takes a comma-separated subset of a,b,c,d")
    n = args.sections or (2000 if args.quick else 10_000)
    repeat = args.repeat or (1 if args.quick else 2)
    out_path = args.out or os.path.join(HERE, "results", "defaults" + ("_quick" if args.quick else "")
                                        + ("" if set(chosen) == {"a", "b", "c", "d"} else "_" + "".join(chosen)) + ".json")
    started = time.perf_counter()
    git = lambda *a: subprocess.run(["git", *a], check=False, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
            "sections": n, "repeat": repeat, "seed": args.seed, "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_at_start": load(), "git_commit": git("rev-parse", "--short", "HEAD"),
            "core_measured": (f"git {args.core_rev} = {git('rev-parse', '--short', args.core_rev)}" if args.core_rev
                              else "working tree"),
            "core_uncommitted": [] if args.core_rev else git("status", "--porcelain", "--", "core").splitlines(),
            "latency": "0.15 s + 4 us/token (regimes a-c)"}
    import core

    meta["core_path"] = os.path.dirname(core.__file__)
    say(f"# EmbeddingService defaults vs reference client — {meta['date']}, load {meta['load_at_start']}, "
        f"{meta['cpus']} CPUs, Python {meta['python']}, core: {meta['core_measured']}"
        + (f" + {len(meta['core_uncommitted'])} uncommitted core files" if meta["core_uncommitted"] else ""))
    texts = make_corpus(n, args.seed)
    counts = count_tokens_batch(texts)
    total = sum(counts)
    meta["corpus"] = {"sections": n, "tokens": total, "mean_tokens": total / n, "min_tokens": min(counts),
                      "max_tokens": max(counts), "median_tokens": statistics.median(counts)}
    say(f"Corpus: {n:,} sections, {total:,} cl100k tokens (mean {total / n:.0f}, median "
        f"{statistics.median(counts):.0f}, min {min(counts)}, max {max(counts)})")
    say()
    results: dict[str, Any] = {"meta": meta, "regimes": {}}
    default_conc = library_service("http://127.0.0.1:1/v1").max_concurrency
    meta["library_default_max_concurrency"] = default_conc
    with tempfile.TemporaryDirectory(prefix="bench_defaults_") as workdir, FakeOpenAIServer() as fake:
        texts_path = os.path.join(workdir, "texts.json")
        with open(texts_path, "w") as f:
            json.dump(texts, f)
        # Untimed: the server counts (and caches) every text's tokens once; the real API
        # counts on its own hardware, not on the cores the clients use here.
        t0 = time.perf_counter()
        reference_client.embed(texts, base_url=fake.base_url, api_key=API_KEY, dimensions=1, max_concurrency=2)
        meta["server_count_warmup_s"] = round(time.perf_counter() - t0, 1)
        for key in chosen:
            t0 = time.perf_counter()
            if key == "d":
                results["profile"] = run_profile(fake, texts, workdir, texts_path, default_conc, args.calls)
                results["profile"]["scenario_wall_s"] = round(time.perf_counter() - t0, 1)
            else:
                results["regimes"][key] = run_regime(key, fake, texts, total, workdir, texts_path, repeat, default_conc,
                                                     [c.strip() for c in args.clients.split(",") if c.strip()])
                results["regimes"][key]["scenario_wall_s"] = round(time.perf_counter() - t0, 1)
            say()
    meta["load_at_end"] = load()
    meta["total_wall_s"] = round(time.perf_counter() - started, 1)
    print_tables(results)
    say(f"Total {meta['total_wall_s']} s; load at start {meta['load_at_start']}, at end {meta['load_at_end']}.")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    os.replace(out_path + ".tmp", out_path)
    say(f"Results written to {os.path.relpath(out_path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
