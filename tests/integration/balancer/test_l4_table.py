"""The l4 table in a real kernel: clients' HTTP/3 reaches the VMs through nftables DNAT, and map changes
move no established connection (namespaces: client -> host with the VIP -> bridge -> aioquic VMs)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from services.balancer.core.passthrough import L4Target, TableSpec
from services.balancer.l4.nft import Passthrough
from tests.support.l4client import L4Client
from tests.support.l4net import L4Net, Vm
from tests.support.tools import require_tool

STRAY_PACKET = """
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
payload = b"stray"
sock.sendto(struct.pack("!HHHH", int(sys.argv[1]), 40000, 8 + len(payload), 0) + payload, (sys.argv[2], 0))
"""
"""A UDP packet from the VM's service port to the client with no flow behind it (raw: the server holds the port)."""
CONNTRACK_TIMEOUT_S = 6
"""Short, so a closed connection's conntrack entry is gone within the test (the GETs keep open ones alive)."""


@pytest.fixture(autouse=True)
def quic_engine() -> str:
    """The kernel forwards here, not the balancer's QUIC engine: each test runs once."""
    return "kernel"


@pytest.fixture
def net() -> Iterator[L4Net]:
    require_tool("nft", "nftables")
    require_tool("conntrack", "conntrack")
    with L4Net(vms=2) as topology:
        yield topology


def spec_of(net: L4Net) -> TableSpec:
    return TableSpec(vip=net.vip, port=net.port, conntrack_timeout_s=CONNTRACK_TIMEOUT_S, vm_network=net.vm_network)


@pytest.fixture
async def table(net: L4Net) -> AsyncIterator[Passthrough]:
    passthrough = Passthrough(spec_of(net), netns=net.host_ns)
    await passthrough.start()
    try:
        yield passthrough
    finally:
        await passthrough.close()


@pytest.fixture
async def client(net: L4Net) -> AsyncIterator[L4Client]:
    async with L4Client(net) as driver:
        yield driver


def target(vm: Vm) -> L4Target:
    return L4Target(f"vm{vm.index}", vm.ip, vm.port)


def answer_of(vm: Vm) -> str:
    return f"Server Address: {vm.address}"


async def get(client: L4Client, conn: str) -> str:
    answer = await client.call(op="get", conn=conn)
    assert answer.get("status") == 200, answer
    return str(answer["body"]).strip()


def tables(net: L4Net) -> str:
    return net.run_in(net.host_ns, ["nft", "list", "tables"]).stdout


async def test_a_client_reaches_a_vm_through_the_vip(net: L4Net, table: Passthrough, client: L4Client) -> None:
    """HTTP/3 GETs to the VIP are answered by the one VM in the map, with its own answer."""
    assert await table.apply([target(net.vms[0])]) is True
    assert await table.apply([target(net.vms[0])]) is False
    fresh = await client.call(op="fresh", count=4)
    assert fresh["errors"] == [] and set(fresh["bodies"]) == {answer_of(net.vms[0])}
    flows = await table.flows()
    assert flows["vm0"].entries >= 1 and flows["vm0"].packets > 0 and flows["vm0"].bytes > 0


async def test_scale_out_keeps_established_connections(net: L4Net, table: Passthrough, client: L4Client) -> None:
    """After a second VM joins, open connections still answer from their VM and new ones reach both."""
    first, second = net.vms
    await table.apply([target(first)])
    names = [f"c{index}" for index in range(6)]
    for name in names:
        assert (await client.call(op="open", conn=name)).get("ok"), name
        assert await get(client, name) == answer_of(first)
    assert await table.apply([target(first), target(second)])
    fresh = await client.call(op="fresh", count=24)
    assert fresh["errors"] == [] and set(fresh["bodies"]) == {answer_of(first), answer_of(second)}
    for name in names:
        assert await get(client, name) == answer_of(first)


async def test_a_drained_vm_keeps_its_flows_until_they_end(net: L4Net, table: Passthrough, client: L4Client) -> None:
    """A VM left out keeps its open connection while new ones avoid it; its flows then fall to 0 and it leaves."""
    first, second = net.vms
    await table.apply([target(first)])
    assert (await client.call(op="open", conn="kept")).get("ok")
    assert await get(client, "kept") == answer_of(first)
    await table.apply([target(second)])
    fresh = await client.call(op="fresh", count=8)
    assert fresh["errors"] == [] and set(fresh["bodies"]) == {answer_of(second)}
    assert await get(client, "kept") == answer_of(first)
    assert (await table.flows())["vm0"].entries >= 1
    assert await table.apply([target(second)]) is False  # still busy: stays a member
    assert (await client.call(op="close", conn="kept")).get("ok")
    deadline = time.monotonic() + CONNTRACK_TIMEOUT_S + 30
    while (await table.flows())["vm0"].entries > 0:
        assert time.monotonic() < deadline, "the drained VM's conntrack entries never went"
        await asyncio.sleep(0.5)
    assert await table.apply([target(second)]) is True
    assert "vm0" not in await table.flows() and "vm0" not in table.slots()


async def test_a_reused_client_port_reaches_the_map_not_a_left_vm(net: L4Net, client: L4Client) -> None:
    """A client port reused after its VM left the map and went idle reaches a mapped VM, not the left one."""
    first, second = net.vms
    spec = dataclasses.replace(spec_of(net), conntrack_timeout_s=300, live_within_s=1)  # entries outlive the test
    passthrough = Passthrough(spec, netns=net.host_ns)
    await passthrough.start()
    try:
        await passthrough.apply([target(first)])
        port = (await client.call(op="open", conn="old"))["port"]
        assert await get(client, "old") == answer_of(first)
        assert (await client.call(op="close", conn="old")).get("ok")
        await passthrough.apply([target(second)])
        deadline = time.monotonic() + 30
        while (await passthrough.flows())["vm0"].entries > 0:
            assert time.monotonic() < deadline, "the left VM's flow never went idle"
            await asyncio.sleep(0.5)
        assert await passthrough.apply([target(second)]) is True
        assert (await client.call(op="open", conn="new", local_port=port)).get("port") == port
        assert await get(client, "new") == answer_of(second)
    finally:
        await passthrough.close()


async def test_a_vm_gone_from_the_fleet_leaves_at_once_with_its_entries(
        net: L4Net, table: Passthrough, client: L4Client) -> None:
    """A member the fleet no longer has leaves the plan at the next apply and its conntrack entries go with it."""
    first, second = net.vms
    await table.apply([target(first), target(second)])
    for index in range(6):
        assert (await client.call(op="open", conn=f"c{index}")).get("ok")
    assert (await table.flows())["vm0"].entries >= 1
    assert await table.apply([target(second)], known={"vm1"}) is True
    assert "vm0" not in table.slots()
    listed = net.run_in(net.host_ns, ["conntrack", "-L", "-p", "udp", "--reply-src", first.ip]).stdout
    assert first.ip not in listed


async def test_map_swaps_under_load_fail_no_request(net: L4Net, table: Passthrough, client: L4Client) -> None:
    """A steady client load (a new connection per GET) sees 0 failures while the map is rewritten 100 times."""
    first, second = net.vms
    choices = [[target(first), target(second)], [target(first)], [target(second)]]
    await table.apply(choices[0])
    assert (await client.call(op="load_start", workers=3)).get("ok")
    for swap in range(100):
        assert await table.apply(choices[(swap + 1) % 3])
    summary = await client.call(op="load_stop")
    assert summary["failed"] == 0, summary["errors"]
    assert summary["ok"] >= 20 and set(summary["bodies"]) <= {answer_of(first), answer_of(second)}


async def test_a_vm_packet_without_dnat_is_dropped(net: L4Net, table: Passthrough, client: L4Client) -> None:
    """Answers of DNAT'ed flows pass; a VM's packet from its service port with no DNAT'ed flow never leaves."""
    vm = net.vms[0]
    await table.apply([target(vm)])
    assert (await client.call(op="fresh", count=2))["errors"] == []
    assert await table.dropped() == 0
    net.run_in(vm.netns, [sys.executable, "-c", STRAY_PACKET, str(vm.port), net.client_ip])
    deadline = time.monotonic() + 10
    while await table.dropped() < 1:
        assert time.monotonic() < deadline, "the stray packet was not dropped"
        await asyncio.sleep(0.1)


async def test_close_leaves_no_table(net: L4Net) -> None:
    """Closing the passthrough removes its table; a second close is fine."""
    passthrough = Passthrough(spec_of(net), netns=net.host_ns)
    await passthrough.start()
    await passthrough.apply([target(net.vms[0])])
    assert "quicfleet_l4" in tables(net)
    await passthrough.close()
    await passthrough.close()
    assert "quicfleet" not in tables(net)


async def test_a_stale_table_is_replaced_at_start(net: L4Net, client: L4Client) -> None:
    """A crashed run's table (here: one dropping the service) is replaced by a fresh one at start."""
    stale = ("add table inet quicfleet_l4\n"
             "add chain inet quicfleet_l4 junk { type filter hook prerouting priority 0; }\n"
             f"add rule inet quicfleet_l4 junk ip daddr {net.vip} udp dport {net.port} drop\n")
    net.run_in(net.host_ns, ["nft", "-f", "-"], input_text=stale)
    passthrough = Passthrough(spec_of(net), netns=net.host_ns)
    await passthrough.start()
    try:
        await passthrough.apply([target(net.vms[1])])
        listing = net.run_in(net.host_ns, ["nft", "list", "table", "inet", "quicfleet_l4"]).stdout
        assert "junk" not in listing
        fresh = await client.call(op="fresh", count=2)
        assert fresh["errors"] == [] and set(fresh["bodies"]) == {answer_of(net.vms[1])}
    finally:
        await passthrough.close()
