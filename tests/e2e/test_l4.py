"""The `l4` balancer on real VMs: the lab's kernel forwards the clients' QUIC to the guests' Caddy.

This module runs its own lab with a client side (`Lab(..., edge=True)`, `ops.lab.edge`): the
guests' network forwards, a client namespace reaches the VIP over a wire, and only the balancer's
DNAT'ed flows reach the guests from there. NATS and the four services run in the lab's namespace
with `balancer_mode=l4`; every client runs in the client namespace. The load opens a new
connection for each request (`tests.support.l4client`), so new flows follow the map while it
changes; an established flow never moves, whatever the map says.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.lab import Lab
from tests.e2e import vms
from tests.e2e.fleetwatch import FleetWatch
from tests.e2e.stack import REPO, Stack, running_in
from tests.support import wait_until
from tests.support.l4client import L4Client

PORT = 443
"""The VIP's port: the guests' own (their `Alt-Svc` advertises `h3=":443"`)."""
HEALTH = {"QUICFLEET_HEALTH_INTERVAL_S": "1", "QUICFLEET_HEALTH_FALL": "2", "QUICFLEET_HEALTH_TIMEOUT_S": "1"}
HEALTH_WINDOW_S = 1 * 2 + 1 + 0.2 + 3.0
"""interval x fall + one check's timeout + one sync of the map (0.2 s), plus 3 s for a slow TCG host."""


class L4Stack(Stack):
    """The e2e stack with the balancer in `l4` mode, serving the lab's VIP on the guests' port."""

    def env(self) -> dict[str, str]:
        info = self.lab.info
        assert info.vip is not None, "the l4 stack needs a lab with a client side (edge=True)"
        return super().env() | HEALTH | {
            "QUICFLEET_BALANCER_MODE": "l4", "QUICFLEET_LISTEN_HOST": info.vip, "QUICFLEET_LISTEN_PORT": str(PORT),
            "QUICFLEET_BALANCER_L4_VM_IFACE": "qfbr0", "QUICFLEET_BALANCER_L4_CLIENT_IFACES": "qfedge",
            "QUICFLEET_BALANCER_L4_CID_LENGTH": "4",  # the template's Caddy 2.6.2 (quic-go)
        }


class ClientSide:
    """What `L4Client` needs of a topology: the client namespace, the VIP and port, a way to run there."""

    def __init__(self, lab: Lab) -> None:
        info = lab.info
        assert info.client_namespace is not None and info.vip is not None
        self.lab, self.client_ns, self.vip, self.port = lab, info.client_namespace, info.vip, PORT

    async def exec_in(self, ns: str, argv: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
        assert ns == self.client_ns
        return await asyncio.create_subprocess_exec(*self.lab.wrap_client(argv), cwd=REPO, **kwargs)


@pytest.fixture(scope="module")
def lab_handle(e2e_workdir: Path) -> Iterator[Lab]:
    """This module's lab, with a client side (it replaces the session's lab for these tests)."""
    lab = Lab(e2e_workdir / "lab-l4", name=f"qf-l4e-{os.getpid()}", edge=True)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def stack(lab_handle: Lab, e2e_workdir: Path) -> Iterator[Stack]:
    """NATS and the services in the lab's namespace, the balancer in `l4` mode."""
    with running_in(lab_handle, L4Stack(lab_handle, e2e_workdir / "stack-l4")) as running:
        yield running


def mapped(lab: Lab) -> set[str]:
    """The VM addresses the kernel's bucket map sends new flows to now (empty before the table exists)."""
    done = subprocess.run(lab.wrap(["nft", "-j", "list", "map", "inet", "quicfleet_l4", "bucket_addr"]),
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        return set()
    found = [item["map"] for item in json.loads(done.stdout)["nftables"] if "map" in item]
    return {str(pair[1]) for entry in found for pair in entry.get("elem", [])}


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


async def answered_by(client: L4Client, addresses: set[str], count: int = 6) -> set[str]:
    """Which of `addresses` answered `count` fresh connections (errors fail the test at once)."""
    answer = await client.call(op="fresh", count=count)
    assert not answer.get("errors"), answer
    return {address for address in addresses if f"Server Address: {address}" in answer["bodies"]}


async def test_scale_one_three_one_under_load_fails_no_request(watch: FleetWatch, lab_handle: Lab) -> None:
    """Under load of fresh connections the fleet grows 1 -> 3 (new flows reach the new VMs) and shrinks to 1
    (the drained VMs leave the map first) with zero failed requests."""
    await watch.scale(1)
    first = await watch.settle(1)
    await wait_until(lambda: mapped(lab_handle) == {host_of(a) for a in first.values()}, 60, 0.5, "the map")
    async with L4Client(ClientSide(lab_handle)) as client:
        assert (await client.call(op="load_start", workers=4)).get("ok"), "load did not start"
        await watch.scale(3)
        grown = set((await watch.settle(3)).values())
        seen: set[str] = set()

        async def all_answered() -> bool:
            seen.update(await answered_by(client, grown))
            return seen == grown

        await wait_until(all_answered, 120, 0.5, "answers from all three VMs")
        await watch.scale(1)
        (survivor,) = (await watch.settle(1)).values()
        assert await answered_by(client, grown) == {survivor}
        result = await client.call(op="load_stop", timeout=120)
    assert result["failed"] == 0, result
    assert {f"Server Address: {a}" for a in grown} <= set(result["bodies"]), result["bodies"]


async def test_the_vms_own_headers_reach_the_client(watch: FleetWatch, lab_handle: Lab) -> None:
    """A client gets the VM's own answer over HTTP/3: its `Alt-Svc`, `QUIC-Status: quic` and identity header."""
    await watch.scale(1)
    ((vm, address),) = (await watch.settle(1)).items()
    info = lab_handle.info
    answer = vms.h3_get(lab_handle.wrap_client([]), f"https://{info.vip}:{PORT}/")
    headers = {k.lower(): v for k, v in answer["headers"].items()}
    assert answer["http_version"] == 30 and answer["body"] == f"Server Address: {address}"
    assert headers.get("alt-svc") == 'h3=":443"; ma=86400'
    assert headers.get("quic-status") == "quic"
    assert headers.get("x-quicfleet-vm") == vms.domain_uuid(info.libvirt_uri, vm)


async def test_a_killed_vm_leaves_the_map_within_the_health_window(watch: FleetWatch, lab_handle: Lab) -> None:
    """A VM destroyed behind the balancer's back is out of the kernel's map within the health window, and
    fresh connections then all succeed."""
    await watch.scale(2)
    ready = await watch.settle(2)
    await wait_until(lambda: mapped(lab_handle) == {host_of(a) for a in ready.values()}, 60, 0.5, "both in the map")
    victim = sorted(ready)[0]
    subprocess.run(["virsh", "-c", lab_handle.info.libvirt_uri, "destroy", victim], check=True, capture_output=True)
    killed_at = time.monotonic()
    await wait_until(lambda: host_of(ready[victim]) not in mapped(lab_handle), 60, 0.1, f"{victim} out of the map")
    removed_s = time.monotonic() - killed_at
    assert removed_s <= HEALTH_WINDOW_S, f"{victim} left the map after {removed_s:.1f} s"
    async with L4Client(ClientSide(lab_handle)) as client:
        answer = await client.call(op="fresh", count=8)
    assert not answer["errors"] and len(answer["bodies"]) == 8, answer
