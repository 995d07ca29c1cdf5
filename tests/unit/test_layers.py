"""The layering rules hold on the real tree, and the checker catches each kind of violation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import layers

ROOT = Path(__file__).resolve().parents[2]


def plant(root: Path, files: dict[str, str]) -> Path:
    """Write a tiny synthetic tree: every package gets an `__init__.py`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            if str(folder) != ".":
                (root / folder / "__init__.py").touch()
        path.write_text(text)
    return root


CLEAN = {
    "shared/bus.py": "import json\n",
    "services/a/core.py": "from shared import bus\n",
    "services/a/glue.py": "from services.a.core import bus\nfrom . import core\n",
    "services/b/main.py": "from shared.bus import json\n",
    "ops/cli.py": 'import importlib\nfrom services.a import glue\nimportlib.import_module(f"services.{1}")\n',
}


def test_the_real_tree_has_no_forbidden_import() -> None:
    """No module in shared/ names services/ or ops/, no service another service or ops/."""
    assert layers.violations(ROOT) == []


def test_the_real_tree_has_no_import_circle() -> None:
    """No two modules of the project reach each other through their imports."""
    assert layers.cycles(ROOT) == []


def test_a_clean_synthetic_tree_passes(tmp_path: Path) -> None:
    """Downward arrows, relative imports and ops naming services are all allowed."""
    root = plant(tmp_path, CLEAN)
    assert layers.violations(root) == []
    assert layers.cycles(root) == []


@pytest.mark.parametrize(("where", "text", "why"), [
    ("shared/runtime.py", "from services.a.core import bus\n", "shared/ must not depend on services/"),
    ("shared/runtime.py", "def f():\n    import ops.cli\n", "shared/ must not depend on ops/"),
    ("shared/runtime.py", 'import importlib\nimportlib.import_module(f"services.{x}.settings")\n',
     "shared/ must not depend on services/"),
    ("shared/runtime.py", 'NAME = "services.a.core"\n', "shared/ must not depend on services/"),
    ("services/b/extra.py", "from services.a import core\n", "service b must not depend on service a"),
    ("services/b/extra.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ops import cli\n",
     "a service must not depend on the operator tools"),
])
def test_a_planted_forbidden_import_is_reported(tmp_path: Path, where: str, text: str, why: str) -> None:
    """Each rule fails on a tree that breaks it, whether by import, local import or string."""
    root = plant(tmp_path, {**CLEAN, where: text})
    found = layers.violations(root)
    assert len(found) == 1
    assert found[0].startswith(where.removesuffix(".py").replace("/", "."))
    assert why in found[0]


def test_a_docstring_naming_a_service_is_not_an_import(tmp_path: Path) -> None:
    """Prose that names `services.a.core` in a docstring is not an arrow."""
    root = plant(tmp_path, {**CLEAN, "shared/doc.py": '"""See services.a.core."""\n'})
    assert layers.violations(root) == []


def test_a_planted_circle_is_reported_even_behind_type_checking(tmp_path: Path) -> None:
    """Two modules importing each other, one only for type checking, make a circle."""
    root = plant(tmp_path, {
        **CLEAN,
        "services/a/left.py": "from services.a.right import thing\n",
        "services/a/right.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from services.a import left\n",
    })
    assert layers.cycles(root) == [["services.a.left", "services.a.right"]]


def test_a_longer_circle_is_reported_whole(tmp_path: Path) -> None:
    """A circle through three modules is reported once, with all three."""
    root = plant(tmp_path, {
        **CLEAN,
        "ops/x.py": "import ops.y\n",
        "ops/y.py": "from ops import z\n",
        "ops/z.py": "def late():\n    from ops.x import late\n",
    })
    assert layers.cycles(root) == [["ops.x", "ops.y", "ops.z"]]


CORE_TREE = {"shared/bus.py": "import nats\n", "shared/contract/events.py": "X = 1\n", "services/c/glue.py": "x = 1\n",
             "services/c/core/base.py": "import math\n"}


def test_the_real_tree_keeps_every_core_pure() -> None:
    """No `services/<name>/core/` module imports I/O, a clock, randomness, the bus or its service's glue."""
    assert layers.core_violations(ROOT) == []


@pytest.mark.parametrize(("text", "why"), [
    ("import asyncio\n", "must not import asyncio"),
    ("from time import monotonic\n", "must not import time"),
    ("def f():\n    import nats.js\n", "must not import nats.js"),
    ("from shared.bus import Bus\n", "must not import shared.bus"),
    ("from services.c.glue import x\n", "must not import its service's glue"),
])
def test_a_planted_impure_core_module_is_caught(tmp_path: Path, text: str, why: str) -> None:
    """A core/ module that imports asyncio, a clock, NATS, the bus or its own glue fails the rule."""
    root = plant(tmp_path, {**CORE_TREE, "services/c/core/rules.py": text})
    found = layers.core_violations(root)
    assert len(found) == 1 and why in found[0] and found[0].startswith("services.c.core.rules:")


def test_a_core_may_import_its_own_core_and_shared_models(tmp_path: Path) -> None:
    """Core modules importing each other, the stdlib's pure parts and shared/'s models are allowed."""
    files = {"services/c/core/one.py": "import math\n", "services/c/core/two.py": "from services.c.core import one\n",
             "services/c/core/three.py": "from shared.contract.events import X\n"}
    assert layers.core_violations(plant(tmp_path, {**CORE_TREE, **files})) == []
