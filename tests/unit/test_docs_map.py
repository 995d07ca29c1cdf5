"""The code map in docs/architecture.md and the README's layout match the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("ops", "services", "shared")


def map_paths(text: str) -> list[str]:
    """The paths listed in the `text` block that follows `## Code map`."""
    section = text.split("## Code map", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block is not None, "the code map has no ```text block"
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


def packages(root: Path) -> set[str]:
    """Every package folder of the three layers, as `folder/` relative to the root."""
    found = {f"{layer}/" for layer in LAYERS}
    for layer in LAYERS:
        for init in (root / layer).rglob("__init__.py"):
            found.add(f"{init.parent.relative_to(root)}/")
    return found


def test_every_path_on_the_code_map_exists() -> None:
    """A path on the map that the tree no longer has fails (a stale map)."""
    stale = [p for p in map_paths((ROOT / "docs/architecture.md").read_text()) if not (ROOT / p).exists()]
    assert stale == []


def test_every_package_is_on_the_code_map() -> None:
    """A package folder the map does not list fails (a map that lags the tree)."""
    listed = set(map_paths((ROOT / "docs/architecture.md").read_text()))
    assert sorted(packages(ROOT) - listed) == []


def test_the_map_reader_sees_a_missing_package(tmp_path: Path) -> None:
    """On a synthetic tree with an unlisted package, the comparison is not empty."""
    for folder in ("ops", "services", "shared", "shared/extra"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").touch()
    text = "## Code map\n\n```text\nops/  x\nservices/  y\nshared/  z\n```\n"
    assert packages(tmp_path) - set(map_paths(text)) == {"shared/extra/"}


def test_the_readme_layout_names_each_top_level_package() -> None:
    """The README's layout block lists ops/, services/ and shared/ and no folder that is gone."""
    text = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    block = re.search(r"```\n(.*?)```", text, re.S)
    assert block is not None
    named = {line.split()[0].split("{")[0].split("/")[0] for line in block.group(1).splitlines() if line.strip()}
    assert set(LAYERS) <= named
    assert [n for n in named if not (ROOT / n).exists()] == []
