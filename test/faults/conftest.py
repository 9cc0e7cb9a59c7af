"""The fault suite's hooks: mark every test ``faults`` (and ``integration``), print the figures.

The shared parts (sections, the check of every stored vector, the CLI runner)
live in `fault_helpers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fault_helpers import FIGURES

# --- hooks -----------------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES.runs_checked:
        return
    faults = ", ".join(f"{name} {count}" for name, count in sorted(FIGURES.faults.items()))
    terminalreporter.write_line(
        f"fault suite: {sum(FIGURES.faults.values())} faults injected ({faults}); "
        f"{FIGURES.runs_checked} runs checked, {FIGURES.sections_checked} sections checked "
        f"({FIGURES.rows_checked} rows read back); lost {FIGURES.lost}, wrong {FIGURES.wrong}, "
        f"duplicated {FIGURES.duplicated}"
    )
