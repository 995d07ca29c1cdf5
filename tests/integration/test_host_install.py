"""The host install: units that systemd-analyze accepts, and `install-host.sh` laying out users, dirs and files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTANCES = ["quicfleet-balancer@1.service", "quicfleet-scaler@1.service", "quicfleet-metrics.service",
             "quicfleet-provisioner.service", "quicfleet.target"]


def staged_units(target: Path) -> list[Path]:
    """The units with ExecStart= on this venv's python (verify checks that the command exists)."""
    for unit in [*UNITS.glob("*.service"), *UNITS.glob("*.target")]:
        (target / unit.name).write_text(unit.read_text().replace("/opt/quicfleet/bin/python", sys.executable))
    return [target / name for name in INSTANCES]


def test_systemd_analyze_verifies_every_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` on each unit (template units as instance 1) reports nothing."""
    tool = require_tool("systemd-analyze", "systemd")
    result = subprocess.run([tool, "verify", "--man=no", *map(str, staged_units(tmp_path))], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check is not vacuous: a misspelt directive in a staged unit is reported."""
    tool = require_tool("systemd-analyze", "systemd")
    units = staged_units(tmp_path)
    units[2].write_text(units[2].read_text().replace("RestartPreventExitStatus=", "RestartPreventExitStatuss="))
    result = subprocess.run([tool, "verify", "--man=no", str(units[2])], capture_output=True, text=True,
                            timeout=120, check=False)
    assert "Unknown key" in result.stdout + result.stderr


@pytest.mark.parametrize("unit", ["quicfleet-balancer@.service", "quicfleet-scaler@.service",
                                  "quicfleet-metrics.service", "quicfleet-provisioner.service"])
def test_each_service_unit_is_notify_with_a_watchdog_and_no_restart_on_bad_settings(unit: str) -> None:
    """Type=notify, a watchdog, restart on failure but not on exit 2 (bad settings), and a non-root user."""
    text = (UNITS / unit).read_text()
    for line in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=2",
                 "User=quicfleet-", "NoNewPrivileges=yes", "ProtectSystem=strict"]:
        assert line in text, f"{unit} lacks {line}"
    capabilities = "CAP_NET_BIND_SERVICE" if "balancer" in unit else ""
    assert f"CapabilityBoundingSet={capabilities}\n" in text


def test_install_host_lays_out_users_directories_units_and_config(tmp_path: Path) -> None:
    """`install-host.sh --root DIR --no-venv` makes the users, /etc/quicfleet, the units and a config that checks."""
    require_tool("systemd-sysusers", "systemd")
    root = tmp_path / "root"
    result = subprocess.run(["bash", str(ROOT / "deploy" / "install-host.sh"), "--root", str(root), "--no-venv"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    passwd = (root / "etc" / "passwd").read_text()
    for user in ("quicfleet-balancer", "quicfleet-metrics", "quicfleet-scaler", "quicfleet-provisioner"):
        assert f"\n{user}:" in f"\n{passwd}"
    assert "quicfleet-provisioner" in next(line for line in (root / "etc" / "group").read_text().splitlines()
                                           if line.startswith("libvirt:"))
    assert (root / "run" / "quicfleet" / "steering").is_dir()
    assert (root / "etc" / "systemd" / "system" / "quicfleet-balancer@.service").is_file()
    config = root / "etc" / "quicfleet" / "quicfleet.toml"
    assert config.stat().st_mode & 0o777 == 0o640
    check = subprocess.run([sys.executable, "-m", "ops.cli", "config", "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                           env={"PATH": "/usr/bin:/bin"})
    assert check.returncode == 0, check.stderr
