"""Lab pieces that need no VM: the namespace, entering it, the network XML, process checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import Lab, LabError, lab_possible, netns
from ops.lab.network import network_xml

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"qf-it-{os.getpid()}"
    netns.create(name)
    yield name
    netns.delete(name)


@needs_root
def test_listener_inside_namespace_is_unreachable_from_outside(namespace: str) -> None:
    """A TCP listener opened while inside the namespace answers there and not on the host's loopback."""
    with netns.entered(namespace):
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with listener, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@needs_root
def test_processes_started_inside_are_listed_and_killed_by_delete(namespace: str) -> None:
    """A process started in the namespace shows in its pid list and is gone after the namespace is deleted."""
    child = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in netns.pids(namespace)
        netns.delete(namespace)
        assert child.wait(timeout=20) != 0
        assert not netns.exists(namespace)
    finally:
        child.kill()


@needs_root
def test_delete_twice_is_fine() -> None:
    """Deleting a namespace that is already gone does nothing and raises nothing."""
    name = f"qf-it2-{os.getpid()}"
    netns.create(name)
    netns.delete(name)
    netns.delete(name)
    assert not netns.exists(name)


def test_network_is_isolated_with_a_dhcp_range() -> None:
    """The lab network has no forwarding (isolated) and a DHCP range in its private subnet."""
    root = ET.fromstring(network_xml("lab-x"))
    assert root.findtext("name") == "lab-x"
    assert root.find("forward") is None
    dhcp_range = root.find("ip/dhcp/range")
    assert dhcp_range is not None and dhcp_range.get("start", "").startswith("10.77.0.")


def test_alive_is_false_for_a_reaped_process() -> None:
    """A process that exited is not alive; the current one is."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=20)
    assert not netns.alive(child.pid)
    assert netns.alive(os.getpid())


def test_lab_possible_answers_with_a_reason() -> None:
    """lab_possible gives (True, "") or (False, a non-empty reason)."""
    ok, why = lab_possible()
    assert (ok and why == "") or (not ok and why)


@pytest.mark.skipif(not lab_possible()[0], reason="the lab is not possible here")
def test_lab_refuses_a_namespace_that_exists_and_leaves_it_alone(namespace: str, tmp_path: Path) -> None:
    """Starting a lab whose namespace already exists fails with a clear error and deletes nothing."""
    with pytest.raises(LabError, match="already exists"):
        Lab(tmp_path, name=namespace).start()
    assert netns.exists(namespace)
