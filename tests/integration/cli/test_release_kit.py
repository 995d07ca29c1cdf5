"""What a release carries: deploy/ data in the sdist and the wheel built from it, found by the installed CLI;
the licence, one version everywhere, the pinned constraints the image and host install use, shell completion.

The sdist and wheel are built the way pip would (setuptools' PEP 517 hooks, the version pyproject.toml asks
for, in a throwaway virtualenv), from a copy of the source, so the checkout gets no build/ or egg-info.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SOURCE = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "CHANGELOG.md", "docs", "deploy", "ops",
          "services", "shared")
"""What the sdist is made from (a copy; tests, bench and the checkout's caches stay out)."""
NOT_SHIPPED = {
    "docker/": "the image's build: its Dockerfile copies the source tree itself",
    "gen_config_docs.py": "a maintainer's tool, run in a checkout",
    "gen_constraints.py": "a maintainer's tool, run in a checkout",
    "bpf/": "#31's program: compiled by `make bpf`, its object installed to /opt/quicfleet/lib/bpf by `make install`",
}
"""deploy/ files that stay out of the package on purpose, and why; every other file must ship."""
BUILD_OUTPUTS = ("template/build", "bpf/build", "__pycache__")
DATA = f"quicfleet-{VERSION}.data/data/share/quicfleet/"


def deploy_files() -> set[str]:
    """deploy/ as a package must carry it: every file but build outputs and the NOT_SHIPPED ones."""
    found = set()
    for path in (ROOT / "deploy").rglob("*"):
        name = path.relative_to(ROOT / "deploy").as_posix()
        if path.is_file() and not any(part in name for part in BUILD_OUTPUTS):
            found.add(name)
    return {name for name in found if not any(name.startswith(skip) for skip in NOT_SHIPPED)}


def ignore_builds(directory: str, names: list[str]) -> set[str]:
    """copytree's filter: no build outputs, caches or egg-info in the copy."""
    here = Path(directory)
    return {n for n in names if n in {"__pycache__", ".mypy_cache"} or n.endswith(".egg-info")
            or (n == "build" and here.name in {"template", "bpf"})}


def run(argv: list[str | Path], cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)
    assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway venv with the setuptools pyproject.toml asks for; the sdist; the wheel built from the sdist."""
    top = tmp_path_factory.mktemp("release")
    src, dist, venv = top / "src", top / "dist", top / "venv"
    for name in SOURCE:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=ignore_builds)
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(origin, src / name)
    run([sys.executable, "-m", "venv", "--without-pip", venv], top)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", *PYPROJECT["build-system"]["requires"]],
        top, timeout=300)
    hook = "import sys; from setuptools import build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"
    sdist = dist / run([python, "-c", hook, "build_sdist", dist], src).split()[-1]
    with tarfile.open(sdist) as archive:
        archive.extractall(top / "unpacked", filter="data")
    unpacked = top / "unpacked" / f"quicfleet-{VERSION}"
    wheel = dist / run([python, "-c", hook, "build_wheel", dist], unpacked).split()[-1]
    return {"sdist": sdist, "wheel": wheel, "venv": venv, "top": top}


def test_the_wheel_built_from_the_sdist_carries_deploy_and_the_docs(built: dict[str, Path]) -> None:
    """Every deploy/ file a host install or the CLI uses (units, rules, dashboard, apt lists, template build) and
    operations.md are in the wheel's share/quicfleet data; nothing of deploy/ is left out but NOT_SHIPPED."""
    names = zipfile.ZipFile(built["wheel"]).namelist()
    shipped = {n.removeprefix(DATA + "deploy/") for n in names if n.startswith(DATA + "deploy/")}
    assert sorted(deploy_files() - shipped) == [], "deploy/ files missing from the wheel (pyproject data-files, " \
                                                   "MANIFEST.in) or to be named in NOT_SHIPPED"
    assert {"template/build.sh", "template/domain.xml.in", "template/guest/init", "systemd/quicfleet.target",
            "grafana/quicfleet-dashboard.json", "apt/run.txt"} <= shipped
    assert {DATA + "docs/operations.md", DATA + "docs/configuration.md"} <= set(names)


def test_the_installed_cli_finds_its_deploy_data_outside_a_checkout(built: dict[str, Path]) -> None:
    """Installed from the wheel into a venv, `ops.paths.DEPLOY` is <venv>/share/quicfleet/deploy and holds what
    `quicfleet template build` runs."""
    venv = built["venv"]
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet", "--no-deps",
         built["wheel"]], built["top"])
    shown = run([venv / "bin" / "python", "-I", "-c", "from ops.paths import DEPLOY; print(DEPLOY)"], built["top"])
    deploy = Path(shown.strip())
    assert deploy == venv / "share" / "quicfleet" / "deploy"
    assert (deploy / "template" / "build.sh").is_file() and (deploy / "template" / "guest" / "Caddyfile").is_file()


def test_the_licence_and_one_version_everywhere(built: dict[str, Path]) -> None:
    """The wheel holds LICENSE and declares Apache-2.0; CHANGELOG's newest release and `--version` say
    pyproject.toml's version."""
    wheel = zipfile.ZipFile(built["wheel"])
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
    metadata = wheel.read(f"quicfleet-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {VERSION}\n" in metadata
    newest = re.search(r"(?m)^## (\S+)", (ROOT / "CHANGELOG.md").read_text())
    assert newest is not None and newest.group(1) == VERSION
    assert run([sys.executable, "-m", "ops.cli", "--version"], ROOT).strip() == f"quicfleet {VERSION}"


def test_the_image_and_the_host_install_use_the_pinned_constraints() -> None:
    """deploy/constraints.txt matches the tested venv (`gen_constraints.py --check`), and both the Dockerfile and
    install-host.sh install with it."""
    run([sys.executable, ROOT / "deploy" / "gen_constraints.py", "--check"], ROOT)
    assert re.search(r"pip install .*--constraint /src/deploy/constraints\.txt",
                     (ROOT / "deploy" / "docker" / "Dockerfile").read_text())
    assert '--constraint "$here/constraints.txt"' in (ROOT / "deploy" / "install-host.sh").read_text()


def test_a_host_install_takes_only_the_run_packages() -> None:
    """install-host.sh installs deploy/apt/run.txt and no other list, and that list starts no web server or
    docker engine on the host (Debian's caddy and docker.io enable their services on install)."""
    script = (ROOT / "deploy" / "install-host.sh").read_text()
    assert set(re.findall(r"apt/[a-z]+\.txt", script)) == {"apt/run.txt"}
    wanted = {line.split()[0] for line in (ROOT / "deploy" / "apt" / "run.txt").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")}
    assert wanted and not wanted & {"caddy", "nginx", "nginx-light", "docker.io", "docker-compose", "chromium"}


def test_shell_completion_is_on() -> None:
    """`quicfleet --show-completion bash` prints a completion function for `quicfleet`."""
    plain = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    # a plain environment: what other tests of a run left in os.environ (settings, completion variables) once made
    # typer read a completion request instead of printing the script
    script = run([sys.executable, "-m", "ops.cli", "--show-completion", "bash"], ROOT, env=plain)
    assert "_quicfleet_completion()" in script and "complete " in script
