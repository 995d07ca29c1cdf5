"""The reliability matrix stays whole: every scenario has a test that records it and a row in
docs/operations.md's "What survives what", and the printed table keeps the matrix's order."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.chaos import MATRIX, Row, table_lines

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## 9. What survives what"


def _recorded() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        found |= set(re.findall(r'Row\(\s*(?:scenario=)?f?"([LFB]\d+)"', path.read_text()))
    return found


def _documented() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    assert SECTION in text, f"docs/operations.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| \*\*([LFB]\d+)\*\*", section, flags=re.MULTILINE))


def test_every_scenario_of_the_matrix_is_recorded_by_a_test() -> None:
    """Each of L1, F1-F10 and B1-B6 has a test that records its row."""
    assert set(MATRIX) - _recorded() == set()


def test_every_scenario_has_a_row_in_the_operations_guide() -> None:
    """docs/operations.md lists exactly the matrix's scenarios in its "What survives what" table."""
    assert _documented() == set(MATRIX)


def test_the_table_keeps_the_matrix_order_whatever_order_rows_came_in() -> None:
    """Rows print baseline first, then faults, then bad input, by number (F10 after F9)."""
    rows = [Row(scenario, "t") for scenario in ("B2", "F10", "L1", "F9", "B1", "F1")]
    firsts = [line.split(" ")[1] for line in table_lines(rows)[2:]]
    assert firsts == ["L1", "F1", "F9", "F10", "B1", "B2"]


def test_a_verdict_not_checked_shows_as_not_applicable() -> None:
    """An invariant a scenario did not check prints n/a, one it checked prints its verdict."""
    (line,) = table_lines([Row("F8", "t", invariants={"I2": "pass"})])[2:]
    assert "| n/a | pass | n/a | n/a |" in line
