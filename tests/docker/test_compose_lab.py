"""compose.yaml on real VMs: dockerd inside the lab's network namespace, so host-network containers
live there, and the containerised provisioner drives the lab's libvirtd through its socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.docker.compose import compose, compose_env, operator_login, skip_or_fail, wait_healthy
from tests.docker.engine import Engine, why_not


def lab_or_skip() -> None:
    reason = why_not()
    if reason is None:
        from ops.lab import lab_possible

        ok, why = lab_possible()
        reason = None if ok else why
    if reason is None and os.environ.get("QUICFLEET_SKIP_E2E") == "1":
        reason = "QUICFLEET_SKIP_E2E=1"
    if reason:
        skip_or_fail(reason)


def in_namespace(
    namespace: str, url: str, login: dict[str, str], *args: str, timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """The CLI inside the lab's namespace, logged in as the operator (compose's NATS demands a login)."""
    argv = ["ip", "netns", "exec", namespace, sys.executable, "-m", "ops.cli", "--nats-url", url, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env=os.environ | login)


def build_image(tmp_path: Path, project: str) -> None:
    """Build on a host-network engine: inside the lab's namespace a build has no way to PyPI."""
    builder = Engine()
    try:
        try:
            builder.start()
        except RuntimeError as error:
            skip_or_fail(str(error))
        builder.ensure_base_image()
        compose(compose_env(builder, project, tmp_path / "build"), "build", "nats", timeout=900)
    finally:
        builder.stop()


def test_containers_in_the_lab_clone_a_vm_that_answers_http3(tmp_path: Path) -> None:
    """With dockerd in the lab's namespace, `up` gets healthy containers, the provisioner clones a VM
    through the lab's libvirtd and the balancer container serves its answer over HTTP/3."""
    lab_or_skip()
    from ops.lab import Lab

    project = f"qflab{os.getpid()}"
    (tmp_path / "build").mkdir()
    build_image(tmp_path, project)
    lab = Lab(tmp_path / "lab", name=f"qf-dock-{os.getpid()}")
    info = lab.start()
    try:
        engine = Engine()
        env = compose_env(engine, project, tmp_path) | {
            "LIBVIRT_SOCKET_DIR": str(lab.paths.socket.parent), "QUICFLEET_LIBVIRT_URI": "qemu:///system",
            "QUICFLEET_NETWORK": info.network, "QUICFLEET_TEMPLATE": info.template, "PROVISIONER_USER": "root",
        }
        url = f"nats://127.0.0.1:{env['NATS_PORT']}"
        try:
            # nsenter, not `ip netns exec`: dockerd needs the host's cgroup mounts, which `ip netns exec`
            # hides by giving its child a fresh mount namespace with /sys remounted.
            engine.start(wrap=lambda argv: ["nsenter", f"--net=/run/netns/{info.namespace}", *argv])
            compose(env, "up", "-d")
            wait_healthy(engine, env, count=5)
            login = operator_login(env)
            scaled = in_namespace(info.namespace, url, login, "scale", "1", "--wait-timeout", "280")
            fetched = in_namespace(info.namespace, url, login, "--json", "get", "--count", "3")
            logs = compose(env, "logs", "--tail", "30", "provisioner", "balancer")
        finally:
            if engine.process is not None and engine.process.poll() is None:
                compose(env, "down", "-v", "--timeout", "30")
            engine.stop()
    finally:
        lab.stop()
    assert scaled.returncode == 0, scaled.stderr + logs[-3000:]
    assert fetched.returncode == 0, fetched.stderr + logs[-3000:]
    answers = json.loads(fetched.stdout)["answers"]
    assert [a["http_version"] for a in answers] == [30, 30, 30]
    assert all(a["body"].startswith("Server Address: 10.77.0.") for a in answers)
    assert engine.leftover_processes() == []
