"""deploy/prometheus: promtool accepts the rules and the scrape example, and the rules' unit cases pass."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.tools import require_tool

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "prometheus")
    return subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules_and_the_scrape_example() -> None:
    """`promtool check rules` and `check config` succeed on the shipped files."""
    rules = promtool("check", "rules", "quicfleet-rules.yml")
    config = promtool("check", "config", "prometheus.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_cases_pass() -> None:
    """`promtool test rules`: the error-ratio, below-desired, latency and scrape-down cases hold."""
    result = promtool("test", "rules", "quicfleet-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
