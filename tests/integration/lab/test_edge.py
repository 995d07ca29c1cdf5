"""The lab's client side for an `l4` balancer (`ops.lab.edge`): only DNAT'ed flows reach the guests.

No VM is needed: a namespace with a bridge stands in for the lab, another on the bridge for a
guest, and a DNAT rule written here for the balancer's table. Sockets are opened inside the
namespaces by this thread (`netns.entered`), so each packet really crosses the lab's forwarding.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ops.lab import edge, netns
from ops.lab.network import network_xml

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root")
GUEST = "10.77.0.10"
PORT = 4433


def test_a_routed_network_forwards_openly() -> None:
    """The network of an edge (or two-host) lab is `<forward mode='open'/>`: libvirt adds no firewall rule."""
    forward = ET.fromstring(network_xml("lab-x", routed=True)).find("forward")
    assert forward is not None and forward.get("mode") == "open"


def test_the_guard_drops_what_is_not_dnated_both_ways() -> None:
    """The guard accepts DNAT'ed flows between the client side and the bridge and drops the rest, both ways."""
    rules = edge.guard_rules(edge.Edge("lab-x", bridge="br9"))
    assert 'iifname "qfedge" oifname "br9" ct status dnat accept' in rules
    assert 'iifname "qfedge" oifname "br9" counter drop' in rules
    assert 'iifname "br9" oifname "qfedge" counter drop' in rules
    assert rules.index("ct status dnat accept") < rules.index("counter drop")


@dataclass
class Wired:
    """A stand-in lab namespace with an edge, and a guest namespace on its bridge."""

    lab: str
    guest: str
    side: edge.Edge


def _ip(*args: str) -> None:
    netns.run(["ip", *args])


@pytest.fixture
def wired() -> Iterator[Wired]:
    lab, guest = f"qf-edge-{os.getpid()}", f"qf-edge-{os.getpid()}-g"
    try:
        for name in (lab, guest):
            netns.create(name)
        _ip("-n", lab, "link", "add", "qfbr0", "type", "bridge")
        _ip("-n", lab, "addr", "add", "10.77.0.1/24", "dev", "qfbr0")
        _ip("-n", lab, "link", "set", "qfbr0", "up")
        _ip("-n", lab, "link", "add", "g0", "type", "veth", "peer", "name", "eth0", "netns", guest)
        _ip("-n", lab, "link", "set", "g0", "master", "qfbr0", "up")
        _ip("-n", guest, "addr", "add", f"{GUEST}/24", "dev", "eth0")
        _ip("-n", guest, "link", "set", "eth0", "up")
        _ip("-n", guest, "route", "add", "default", "via", "10.77.0.1")
        yield Wired(lab, guest, edge.connect(lab))
    finally:
        edge.remove(lab)
        for name in (guest, lab):
            netns.delete(name)


def _bound(ns: str, address: str, port: int) -> socket.socket:
    with netns.entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(2.0)
    return sock


def _exchange(wired: Wired, target: str, port: int) -> tuple[str, str] | None:
    """Send one datagram from the client side to `target`:`port`; (where the guest saw it come from, where the
    answer came from), or None when the guest got nothing within the deadline."""
    server = _bound(wired.guest, "0.0.0.0", PORT)
    client = _bound(wired.side.namespace, "0.0.0.0", 0)
    with server, client:
        client.sendto(b"ping", (target, port))
        try:
            data, peer = server.recvfrom(100)
        except TimeoutError:
            return None
        server.sendto(data, peer)
        _, answered_from = client.recvfrom(100)
        return peer[0], answered_from[0]


@needs_root
def test_the_client_side_reaches_a_guest_only_through_dnat(wired: Wired) -> None:
    """A datagram to a guest's own address is dropped; one to the VIP, DNAT'ed, reaches it and the answer
    comes back from the VIP with the client's address kept."""
    assert _exchange(wired, GUEST, PORT) is None
    rule = (f"table ip balancer {{ chain pre {{ type nat hook prerouting priority dstnat; "
            f"ip daddr {wired.side.vip} udp dport 443 dnat to {GUEST}:{PORT}\n}}\n}}\n")
    netns.run(["ip", "netns", "exec", wired.lab, "nft", "-f", "-"], stdin=rule)
    assert _exchange(wired, wired.side.vip, 443) == (wired.side.client_ip, wired.side.vip)
    assert _exchange(wired, GUEST, PORT) is None


def _stand_in(lab: str, guest: str, subnet: str) -> None:
    """A lab namespace with the bridge `qfbr0` at `<subnet>.1` and a guest namespace at `<subnet>.10` on it."""
    for name in (lab, guest):
        netns.create(name)
    _ip("-n", lab, "link", "add", "qfbr0", "type", "bridge")
    _ip("-n", lab, "addr", "add", f"{subnet}.1/24", "dev", "qfbr0")
    _ip("-n", lab, "link", "set", "qfbr0", "up")
    _ip("-n", lab, "link", "add", "g0", "type", "veth", "peer", "name", "eth0", "netns", guest)
    _ip("-n", lab, "link", "set", "g0", "master", "qfbr0", "up")
    _ip("-n", guest, "addr", "add", f"{subnet}.10/24", "dev", "eth0")
    _ip("-n", guest, "link", "set", "eth0", "up")
    _ip("-n", guest, "route", "add", "default", "via", f"{subnet}.1")


def _dnat(lab: str, vip: str, guest: str) -> None:
    """What a host's `l4` balancer does, reduced to one rule: the VIP's port 443 to its own guest."""
    rule = (f"table ip balancer {{\nchain pre {{\ntype nat hook prerouting priority dstnat;\n"
            f"ip daddr {vip} udp dport 443 dnat to {guest}:{PORT}\n}}\n}}\n")
    netns.run(["ip", "netns", "exec", lab, "nft", "-f", "-"], stdin=rule)


@pytest.fixture
def spread() -> Iterator[tuple[edge.Spread, list[str]]]:
    base = f"qf-spread-{os.getpid()}"
    hosts, guests = [f"{base}-{i}" for i in range(2)], [f"{base}-{i}g" for i in range(2)]
    try:
        for index, (host, guest) in enumerate(zip(hosts, guests, strict=True)):
            _stand_in(host, guest, f"10.77.{index}")
            _dnat(host, edge.SPREAD_VIP, f"10.77.{index}.10")
        yield edge.connect_spread(hosts, f"{base}-c"), guests
    finally:
        for name in [f"{base}-c", *guests, *hosts]:
            netns.delete(name)


@needs_root
def test_a_spread_sends_flows_to_both_hosts_and_each_answers_from_the_vip(
    spread: tuple[edge.Spread, list[str]],
) -> None:
    """Flows from the client namespace to the anycast VIP are spread over both hosts by ECMP; each host DNATs to
    its own guest, and every answer comes back from the VIP (through the host that took the flow)."""
    side, guests = spread
    servers = [_bound(guest, "0.0.0.0", PORT) for guest in guests]
    clients = [_bound(side.namespace, "0.0.0.0", 0) for _ in range(24)]
    received = [0, 0]
    try:
        for client in clients:
            client.sendto(b"ping", (side.vip, 443))
        ready: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 10
        while sum(received) < len(clients) and time.monotonic() < deadline:
            for index, server in enumerate(servers):
                server.settimeout(0.05)
                try:
                    data, peer = server.recvfrom(100)
                except TimeoutError:
                    continue
                received[index] += 1
                server.sendto(data, peer)
                ready.add(peer)
        answers = {client.recvfrom(100)[1][0] for client in clients}
    finally:
        for sock in [*servers, *clients]:
            sock.close()
    assert sum(received) == len(clients) and min(received) > 0, received
    assert {address for address, _ in ready} == {side.client_ip}  # DNAT keeps the client's own address
    assert answers == {side.vip}


@needs_root
def test_the_client_namespace_goes_with_remove(wired: Wired) -> None:
    """`remove` deletes the client namespace and the wire with it; a second call is fine."""
    edge.remove(wired.lab)
    edge.remove(wired.lab)
    assert not netns.exists(wired.side.namespace)
    links = subprocess.run(["ip", "-n", wired.lab, "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert edge.DEVICE not in links
