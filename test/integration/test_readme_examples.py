"""Every ```python block of README.md runs, as a script, against the local servers (issue #12).

Each block is written to a file and run with ``python`` in a fresh temporary folder,
with the environment a user would have set: `OPENAI_API_KEY` / `OPENAI_BASE_URL`
(the local OpenAI-compatible server), `SUPABASE_URL` / `SUPABASE_SERVICE_ROLE_KEY`
(the PostgREST stand-in over the session's PostgreSQL, shipped schema applied) and
`DATABASE_URL` (that PostgreSQL). A block that raises fails its test; the lines it
prints must match the ``# expected`` comments next to its ``print`` calls where they
give a literal value.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.stores.schema import apply_schema
from servers.postgrest_server import FakePostgREST

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "test-service-role-key"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def expected_prints(block: str) -> list[str]:
    """``print(...)  # 1 []`` -> "1 []": the literal each print is documented to show."""
    found = []
    for line in block.splitlines():
        match = re.match(r"\s*print\(.*\)\s+#\s+(.*)$", line)
        if match:
            expected = match.group(1).split(" — ")[0].split(": ")[0].strip()
            if re.fullmatch(r"[\d\[\] ]+", expected):  # literal numbers and empty lists only
                found.append(expected)
    return found


BLOCKS = python_blocks()


def test_readme_has_the_examples() -> None:
    assert len(BLOCKS) >= 4, "README lost its Python examples"


@pytest.mark.parametrize("number", range(len(BLOCKS)), ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_block_runs(number: int, tmp_path: Path, openai_env: Any, pg_conn: Any, pg_dsn: str,
                           rest: FakePostgREST) -> None:
    block = BLOCKS[number]
    apply_schema(pg_dsn)  # what `python -m core schema --apply` does: the Supabase blocks need the table
    rest.reload_schema()
    script = tmp_path / "example.py"
    script.write_text(block, encoding="utf-8")
    env = dict(os.environ)
    env.update(
        OPENAI_API_KEY="sk-readme-test",
        OPENAI_BASE_URL=openai_env.base_url,
        SUPABASE_URL=rest.url,
        SUPABASE_SERVICE_ROLE_KEY=KEY,
        DATABASE_URL=pg_dsn,
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"README block {number + 1} failed:\n{block}\n--- stderr ---\n{done.stderr}"
    printed = [line.strip() for line in done.stdout.splitlines()]
    for expected in expected_prints(block):
        assert expected in printed, f"README block {number + 1} should print {expected!r}; printed {printed}"
