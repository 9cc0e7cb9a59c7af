"""Batch API benchmark (issues #11, #19): the real CLI on 100,000 sections under a 3M-token queue, killed, run again.

Not a test: it measures, checks, prints a Markdown table and writes every figure
to ``bench/results/batch_api.json``.

    python bench/bench_batch_api.py                 # 100,000 sections
    python bench/bench_batch_api.py --sections 5000 # any size

What runs (everything on this machine; nothing touches the internet):

0. A JSONL file of N sections (`bench_ingest.write_sections`: ~100-300 cl100k
   tokens each), a PostgreSQL 18 + pgvector (pgserver) in a temporary folder, and
   `core.testing.openai_server` with its Batch API on a clock running
   `--time-scale` times real time (validating 60 s, in progress `--in-progress`
   s, finalizing 60 s, server seconds) and an enqueued-token limit of
   `--queue-tokens` (3,000,000: text-embedding-3-small at usage tier 1); the first
   batch accepted is scripted to stall at half its lines (``stop_at: 0.5``).
1. ``python -m core ingest FILE --batch-api --database-url DSN --no-index
   --poll-interval 0.5 --json`` (the CLI's default queue budget: the tier-1
   3,000,000): as soon as a batch of the job is ``in_progress``, the CLI is
   killed with SIGKILL (no cleanup).
2. The server's clock jumps 24 hours: the stalled batch expires with half its
   lines done, the other batch in flight completes.
3. The same command again: it collects the expired batch's half and the
   completed batch, submits the rest as the queue frees, resubmits only the
   lines that did not run, waits for them, and stores everything. Its wall time
   is given in real seconds and in server (scaled) hours.
4. The same command a third time: everything is skipped, nothing is submitted.

Checked: every section stored once; the inputs of the batches the server ran
equal N plus the inputs of the resubmitted lines, the inputs it answered 200 equal
N (nothing paid twice), and no section is in two lines that ran.
Measured per run: wall time, peak RSS of the CLI (sampled every 0.1 s and the
kernel's high-water mark from ``os.wait4``), CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ingest import cpu_model, load, log, now_iso, write_sections  # noqa: E402

from core.embedded.server import import_pgserver  # noqa: E402
from core.testing.openai_server import FakeOpenAIServer  # noqa: E402
from core.testing.openai_server.batches import BatchControl  # noqa: E402

RESULTS = REPO / "bench" / "results" / "batch_api.json"
API_KEY = "sk-bench-local-0000"
DAY = 86_400


class Peak(threading.Thread):
    """Samples a process's RSS (with its children) until told to stop."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.halt, self.peak = pid, interval, threading.Event(), 0

    def run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.halt.is_set():
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.halt.wait(self.interval)


def job_file(job: Path) -> dict[str, Any]:
    try:
        return json.loads((job / "job.json").read_text())
    except (OSError, ValueError):
        return {}


def run_cli(cmd: list[str], env: dict[str, str], label: str, workdir: Path,
            kill_when: Any = None, control: Any = None) -> dict[str, Any]:
    """One CLI run (killed with SIGKILL as soon as `kill_when()` is true, if given); its figures."""
    out_path = workdir / f"{label}.stdout"
    server_start = control.state()["now"] if control is not None else None
    notes: list[tuple[float, str]] = []  # (seconds after the start, line of stderr)
    with open(out_path, "wb") as out:
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=str(workdir))
        peak = Peak(proc.pid)
        peak.start()

        def read_notes() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                notes.append((round(time.time() - started, 2), raw.decode(errors="replace").rstrip()))

        reader = threading.Thread(target=read_notes, daemon=True)
        reader.start()
        killed = False
        if kill_when is not None:
            while proc.poll() is None:
                if kill_when():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.05)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - started
    peak.halt.set()
    peak.join(2)
    reader.join(5)
    stdout = out_path.read_text(errors="replace").strip()
    summary: dict[str, Any] = {}
    if stdout:
        try:
            summary = json.loads(stdout.splitlines()[-1])
        except ValueError:
            summary = {"unparsed": stdout[-500:]}
    scaled = None if control is None else (control.state()["now"] - server_start) / 3600
    return {
        "label": label, "killed": killed, "server_hours": None if scaled is None else round(scaled, 2), "exit_status": os.waitstatus_to_exitcode(status), "wall_s": round(wall, 2),
        "peak_rss_mb_sampled": round(peak.peak / 2**20, 1), "maxrss_mb_kernel": round(usage.ru_maxrss / 1024, 1),
        "cpu_user_s": round(usage.ru_utime, 2), "cpu_system_s": round(usage.ru_stime, 2), "summary": summary,
        "notes": notes,
    }


def check(job: Path, control: BatchControl, dsn: str, n: int) -> dict[str, Any]:
    """Every section stored once, and submitted in exactly one line that ran."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        stored = conn.execute("select count(*), count(distinct section_id) from section_embeddings").fetchone()
    data = job_file(job)
    seen: dict[int, int] = {}
    moved_inputs = 0
    for entry in data["batches"]:
        moved = set()
        for part in (entry.get("moved") or "").split(","):
            if part:
                low, _, high = part.partition("-")
                moved.update(range(int(low), int(high or low) + 1))
        with open(job / f"{entry['key']}.manifest.jsonl", "rb") as handle:
            for raw in handle:
                line = json.loads(raw)
                if line["line"] in moved:
                    moved_inputs += line["inputs"]
                    continue
                for section in line["sections"]:
                    seen[section[0]] = seen.get(section[0], 0) + 1
    batches = control.state()["batches"]
    ran = [b for b in batches if b["status"] != "failed"]  # a refused batch never ran
    server_inputs = sum(b["inputs"] for b in ran)
    ok_inputs = sum(b["ok_inputs"] for b in batches)
    return {
        "rows": stored[0], "distinct_rows": stored[1], "sections_in_lines_that_ran": len(seen),
        "sections_in_two_lines_that_ran": sum(1 for c in seen.values() if c > 1),
        "server_batches": [{k: b[k] for k in ("status", "lines", "inputs", "tokens", "done")} for b in batches],
        "server_inputs": server_inputs, "resubmitted_inputs": moved_inputs, "inputs_answered_200": ok_inputs,
        "refused_batches": len(batches) - len(ran), "largest_batch_tokens": max(b["tokens"] for b in batches),
        "ok": stored[0] == stored[1] == n and len(seen) == n and all(c == 1 for c in seen.values())
        and server_inputs == n + moved_inputs and ok_inputs == n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=100_000)
    parser.add_argument("--in-progress", type=float, default=1800.0,
                        help="server seconds a batch is in progress (default: half an hour)")
    parser.add_argument("--time-scale", type=float, default=120.0, help="server seconds per real second")
    parser.add_argument("--queue-tokens", type=int, default=3_000_000, help="the server's enqueued-token limit")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    n = args.sections
    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    res: dict[str, Any] = {"date": now_iso(), "sections": n, "cpu": cpu_model(), "cores": os.cpu_count(),
                           "python": sys.version.split()[0], "load_before": load(), "time_scale": args.time_scale,
                           "queue_tokens": args.queue_tokens, "in_progress_s": args.in_progress}
    log(f"writing {n:,} sections under {root}")
    file = root / "sections.jsonl"
    _, res["file"] = write_sections(file, n, args.seed, set())
    pg = import_pgserver().get_server(str(root / "pgdata"), cleanup_mode="stop")
    try:
        dsn = str(pg.get_uri())
        with FakeOpenAIServer() as fake:
            control = BatchControl(fake)
            control.configure(validating_seconds=60, in_progress_seconds=args.in_progress, finalizing_seconds=60,
                              enqueued_token_limit=args.queue_tokens, time_scale=args.time_scale,
                              script=[{"stop_at": 0.5}])
            env = {k: v for k, v in os.environ.items() if k not in (
                "SUPABASE_URL", "DATABASE_URL", "SUPABASE_KEY", "SUPABASE_SERVICE_ROLE_KEY", "CORE_DATA_DIR")}
            env.update(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=fake.base_url, PYTHONPATH=str(REPO),
                       NO_PROXY="127.0.0.1,localhost")
            cmd = [sys.executable, "-m", "core", "ingest", str(file), "--batch-api", "--database-url", dsn,
                   "--no-index", "--poll-interval", "0.5", "--json"]
            job = root / "sections.batch-job"

            def polling() -> bool:
                batches = job_file(job).get("batches") or []
                return any(b.get("status") == "in_progress" for b in batches)

            log("run 1: until a batch is in progress, then SIGKILL")
            first = run_cli(cmd, env, "run1", root, kill_when=polling, control=control)
            res["job_after_kill"] = [{k: b.get(k) for k in ("key", "state", "status", "lines", "inputs", "tokens",
                                                            "bytes")} for b in job_file(job)["batches"]]
            log(f"run 1 killed after {first['wall_s']} s; the server's clock jumps 24 hours")
            control.advance(DAY)
            log("run 2: the same command")
            second = run_cli(cmd, env, "run2", root, control=control)
            log(f"run 2 exit {second['exit_status']} after {second['wall_s']} s")
            res["check"] = check(job, control, dsn, n)
            log("run 3: the same command again")
            third = run_cli(cmd, env, "run3", root, control=control)
            res["runs"] = [first, second, third]
            res["check"]["third_run_new_batches"] = len(control.state()["batches"]) - len(res["check"]["server_batches"])
            res["job"] = {k: v for k, v in job_file(job).items() if k != "batches"}
            res["job_batches"] = [{k: b.get(k) for k in ("key", "state", "status", "lines", "inputs", "tokens", "bytes",
                                                         "stored", "moved")} for b in job_file(job)["batches"]]
    finally:
        pg.cleanup()
    res["load_after"] = load()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1))
    print(report(res))
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return 0 if res["check"]["ok"] and res["check"]["third_run_new_batches"] == 0 else 1


def report(res: dict[str, Any]) -> str:
    rows = ["| run | what | exit | wall s | server hours | peak RSS MB (sampled / kernel) | CPU s | stored | skipped "
            "| failed |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    what = {"run1": "prepare, upload, submit, poll — killed (SIGKILL)", "run2": "same command: collect, resubmit "
            "the expired half, wait, store", "run3": "same command again"}
    for run in res["runs"]:
        s = run["summary"]
        rows.append(f"| {run['label']} | {what[run['label']]} | {run['exit_status']} | {run['wall_s']} | "
                    f"{run['server_hours']} | "
                    f"{run['peak_rss_mb_sampled']} / {run['maxrss_mb_kernel']} | "
                    f"{run['cpu_user_s'] + run['cpu_system_s']:.1f} | {s.get('stored', '-')} | {s.get('skipped', '-')} | "
                    f"{s.get('failed', '-')} |")
    check = res["check"]
    statuses: dict[str, int] = {}
    for b in check["server_batches"]:
        statuses[b["status"]] = statuses.get(b["status"], 0) + 1
    batches = (f"{len(check['server_batches'])} ({', '.join(f'{v} {k}' for k, v in statuses.items())}); largest "
               f"{check['largest_batch_tokens']:,} tokens under a {res['queue_tokens']:,}-token queue")
    files = res["job_after_kill"]
    timeline = [f"  {t:7.2f} s  {text}" for t, text in res["runs"][1]["notes"]
                if "collected" in text or "submitted" in text or "resubmitting" in text or "Batch API:" in text]
    lines = [
        f"{res['sections']:,} sections ({res['file']['file_bytes'] / 1e6:.0f} MB, median "
        f"{res['file']['tokens_median']} tokens), {res['cores']} cores ({res['cpu']}), {res['date']}; load "
        f"{res['load_before']} before, {res['load_after']} after; server clock x{res['time_scale']:g}, a batch "
        f"{res['in_progress_s'] / 60:g} min in progress",
        "", *rows, "",
        f"batch files: {len(files)} ({sum(f['lines'] for f in files)} requests, "
        f"{sum(f['inputs'] for f in files):,} inputs, {sum(f['tokens'] for f in files):,} tokens, "
        f"{sum(f['bytes'] for f in files) / 1e6:.1f} MB)",
        f"server batches: {batches}",
        f"inputs the server received: {check['server_inputs']:,} = {res['sections']:,} + "
        f"{check['resubmitted_inputs']:,} resubmitted (lines that had not run); answered 200: "
        f"{check['inputs_answered_200']:,}; sections in two lines that ran: "
        f"{check['sections_in_two_lines_that_ran']}; rows: {check['rows']:,}; third run new batches: "
        f"{check['third_run_new_batches']}; check {'passed' if check['ok'] else 'FAILED'}",
        "", "run 2, seconds after its start:", *timeline,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
