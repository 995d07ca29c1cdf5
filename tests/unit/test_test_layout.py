"""The test tree's own rules: tiers from folders, helpers in helper modules, not in test modules."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    return found + [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]


def test_no_test_module_imports_another_test_module() -> None:
    """Helpers shared between test modules live in tests/support/ or a helper module, never in a test_*.py."""
    wrong = [
        f"{path.relative_to(TESTS)} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in _imported_modules(path)
        if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert wrong == []


def test_no_test_module_repeats_its_tier_marker() -> None:
    """A test's tier comes from its folder (tests/conftest.py), so no module marks it again by hand."""
    tiers = ("unit", "integration", "e2e", "docker")
    wrong = [
        str(path.relative_to(TESTS)) for path in sorted(TESTS.rglob("test_*.py"))
        if any(f"pytest.mark.{tier}" in path.read_text() for tier in tiers)
    ]
    assert wrong == []
