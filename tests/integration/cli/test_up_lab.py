"""`quicfleet up` with the lab: the README's tour on real VMs (QEMU in a network namespace)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli.support import Result
from tests.support import wait_until


def lab_or_skip() -> None:
    """Skip loudly where the lab cannot run (or a developer opted out); under CI that is a failure."""
    from ops.lab import lab_possible

    ok, why = lab_possible()
    if ok and os.environ.get("QUICFLEET_SKIP_E2E") == "1":
        ok, why = False, "QUICFLEET_SKIP_E2E=1"
    if not ok:
        message = f"LAB STACK TEST NOT RUN: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


async def in_lab(namespace: str, *args: str, timeout: float = 300) -> Result:
    """The CLI run inside the lab's namespace, as the hints printed by `up` say."""
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, sys.executable, "-m", "ops.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout


async def test_up_with_the_lab_serves_http3_from_a_cloned_vm(tmp_path: Path) -> None:
    """`up` starts the lab, a VM is cloned and answers HTTP/3 through the balancer, and SIGTERM removes it all."""
    lab_or_skip()
    name = f"qf-up-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k != "QUICFLEET_LIBVIRT_URI"}
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        stack = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ops.cli", "up", "--workdir", str(tmp_path / "run"), "--lab-name", name,
            env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT)
    try:
        await wait_until(lambda: "quicfleet is up" in log.read_text(), timeout=600, what="the lab stack")
        scaled = await in_lab(name, "scale", "1", "--wait-timeout", "280")
        fetched = await in_lab(name, "--json", "get", "--count", "3")
    finally:
        stack.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(stack.wait(), 180)
    text = log.read_text()
    assert "libvirt via lab" in text and f"ip netns exec {name} " in text
    assert scaled.code == 0, scaled.err + text[-3000:]
    assert fetched.code == 0, fetched.err + text[-3000:]
    answers = json.loads(fetched.out)["answers"]
    assert [a["http_version"] for a in answers] == [30, 30, 30]
    assert all(a["body"].startswith("Server Address: 10.77.0.") for a in answers)
    assert code == 0, text[-3000:]
    assert name not in namespaces()
