"""Connection-ID learning in the kernel: the tc program learns server CIDs from VMs and marks client packets,
so a QUIC connection survives a conntrack idle-out or a client rebinding with the l4 passthrough."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.balancer.core.passthrough import L4Target, TableSpec
from services.balancer.l4.cid import PREF, CidSteering, default_object
from services.balancer.l4.nft import Passthrough
from tests.support.l4client import L4Client
from tests.support.l4net import L4Net, Vm
from tests.support.quicpackets import long_header, send_from, short_header

SLOT = 7
CID = bytes.fromhex("a1b2c3d4e5f60718")
COUNTERS = """
table inet qfcidtest {
    counter steered { }
    counter unmarked { }
    chain pre {
        type filter hook prerouting priority -150; policy accept;
        iifname "h0" udp dport 8443 meta mark 7 counter name "steered"
        iifname "h0" udp dport 8443 meta mark 0 counter name "unmarked"
    }
}
"""

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", autouse=True)
def bpf_object() -> Path:
    """The program built from the current source (`make bpf`, a no-op when up to date); skipped without clang."""
    if shutil.which("clang") is None and not default_object().is_file():
        pytest.skip("no clang to build deploy/bpf/quic_cid.c (apt-get install clang llvm libbpf-dev)")
    if shutil.which("clang") is not None:
        subprocess.run(["make", "-s", "-C", str(REPO / "deploy" / "bpf")], check=True, timeout=120)
    return default_object()


@pytest.fixture
def quic_engine() -> str:
    """These tests run no balancer, so they need not run once per QUIC engine (overrides the folder's)."""
    return "aioquic"


@pytest.fixture
def net() -> Iterator[L4Net]:
    """The namespace topology with one VM, and a counter of marked and unmarked packets to the VIP."""
    with L4Net(vms=1) as topology:
        _nft(topology, COUNTERS)
        yield topology


def _nft(net: L4Net, text: str) -> None:
    subprocess.run(net.argv_in(net.host_ns, ["nft", "-f", "-"]), input=text, text=True, check=True, timeout=30)


@pytest.fixture
def steering(net: L4Net, tmp_path: Path) -> Iterator[CidSteering]:
    """The program attached in the host namespace: client side h0, VM side the bridge; CIDs of 8 bytes."""
    attached = CidSteering.attach([net.host_client_iface], [net.bridge], 8, tmp_path / "bpf", net.host_ns,
                                  vip=net.vip, port=net.port)
    assert attached is not None
    try:
        yield attached
    finally:
        attached.detach()


def counter(net: L4Net, name: str) -> int:
    """Packets counted so far by the nft counter `name` of the test table."""
    out = net.run_in(net.host_ns, ["nft", "-j", "list", "counter", "inet", "qfcidtest", name]).stdout
    found = [item["counter"] for item in json.loads(out)["nftables"] if "counter" in item]
    return int(found[0]["packets"])


def wait_for(what: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `what` until it holds or the deadline passes (the kernel gives no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.02)
    return what()


def learn(net: L4Net, scid: bytes) -> None:
    """The VM sends a long-header packet naming `scid` (toward the client, through the host)."""
    send_from(net, net.vms[0].netns, net.client_ip, 40000, long_header(scid))


def to_vip(net: L4Net, dcid: bytes) -> None:
    """The client sends a short-header packet naming `dcid` to the VIP."""
    send_from(net, net.client_ns, net.vip, net.port, short_header(dcid))


def test_a_learned_cid_marks_client_packets_with_the_vms_slot(net: L4Net, steering: CidSteering) -> None:
    """A CID a VM announced in a long header marks the client's short-header packets with that VM's slot."""
    steering.set_slots({net.vms[0].ip: SLOT})
    learn(net, CID)
    assert wait_for(lambda: steering.learned() == 1)
    to_vip(net, CID)
    assert wait_for(lambda: counter(net, "steered") == 1)
    assert steering.counters()["steered"] == 1


def test_an_unknown_cid_leaves_the_mark_at_zero(net: L4Net, steering: CidSteering) -> None:
    """A short header whose DCID nobody announced is left unmarked (nftables hashes it)."""
    steering.set_slots({net.vms[0].ip: SLOT})
    learn(net, CID)
    assert wait_for(lambda: steering.learned() == 1)
    to_vip(net, bytes(reversed(CID)))
    assert wait_for(lambda: counter(net, "unmarked") == 1)
    assert counter(net, "steered") == 0
    assert steering.counters()["unknown"] == 1


def test_only_vm_addresses_with_a_slot_and_the_configured_length_teach(net: L4Net, steering: CidSteering) -> None:
    """Long headers from an address with no slot, or with a SCID of another length, are not learned."""
    learn(net, CID)  # no slots yet
    steering.set_slots({net.vms[0].ip: SLOT})
    learn(net, CID[:4])
    learn(net, CID + b"\x01")
    to_vip(net, CID)
    assert wait_for(lambda: counter(net, "unmarked") == 1)
    assert steering.learned() == 0


def _add_ipv6(net: L4Net) -> None:
    """fd77::/64 between client (::2) and host (::1, the VIP ::10), fd78::/64 between host (::1) and VM (::10)."""
    vm = net.vms[0]
    for ns, address, dev in ((net.client_ns, "fd77::2/64", net.client_iface), (net.host_ns, "fd77::1/64", "h0"),
                             (net.host_ns, "fd77::10/128", "h0"), (net.host_ns, "fd78::1/64", net.bridge),
                             (vm.netns, "fd78::10/64", net.vm_iface)):
        net.run_in(ns, ["ip", "-6", "addr", "add", address, "dev", dev, "nodad"])
    net.run_in(vm.netns, ["ip", "-6", "route", "add", "default", "via", "fd78::1"])
    net.run_in(net.client_ns, ["ip", "-6", "route", "add", "default", "via", "fd77::1"])
    net.run_in(net.host_ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])


def test_ipv6_cids_are_learned_and_steered_too(net: L4Net, tmp_path: Path) -> None:
    """Over IPv6 (VIP fd77::10) a CID announced by the VM marks the client's packets with the VM's slot."""
    _add_ipv6(net)
    attached = CidSteering.attach([net.host_client_iface], [net.bridge], 8, tmp_path / "bpf", net.host_ns,
                                  vip="fd77::10", port=net.port)
    assert attached is not None
    try:
        attached.set_slots({"fd78::10": SLOT})
        send_from(net, net.vms[0].netns, "fd77::2", 40000, long_header(CID))
        assert wait_for(lambda: attached.learned() == 1)
        send_from(net, net.client_ns, "fd77::10", net.port, short_header(CID))
        assert wait_for(lambda: counter(net, "steered") == 1)
    finally:
        attached.detach()


def test_a_vm_leaving_the_slots_takes_its_cids_along(net: L4Net, steering: CidSteering) -> None:
    """Once a VM's slot is gone, the CIDs learned for it no longer mark anything."""
    steering.set_slots({net.vms[0].ip: SLOT})
    learn(net, CID)
    assert wait_for(lambda: steering.learned() == 1)
    steering.set_slots({})
    to_vip(net, CID)
    assert wait_for(lambda: counter(net, "unmarked") == 1)
    assert counter(net, "steered") == 0


def test_detach_leaves_no_filter_qdisc_or_pinned_map(net: L4Net, tmp_path: Path) -> None:
    """After detach the interfaces have no filter or clsact qdisc of ours and no map is pinned."""
    pin_dir = tmp_path / "bpf"
    attached = CidSteering.attach([net.host_client_iface], [net.bridge], 8, pin_dir, net.host_ns)
    assert attached is not None
    assert (pin_dir / "tc" / "globals" / "qf_cids").exists()
    attached.detach()
    for iface in (net.host_client_iface, net.bridge):
        assert net.run_in(net.host_ns, ["tc", "filter", "show", "dev", iface, "ingress"]).stdout.strip() == ""
        assert "clsact" not in net.run_in(net.host_ns, ["tc", "qdisc", "show", "dev", iface]).stdout
    assert not pin_dir.exists()
    assert str(pin_dir) not in Path("/proc/self/mountinfo").read_text()


def test_detach_keeps_a_clsact_qdisc_it_did_not_add(net: L4Net, tmp_path: Path) -> None:
    """A clsact qdisc that was there before attach stays; only our filter (by its priority) goes."""
    net.run_in(net.host_ns, ["tc", "qdisc", "add", "dev", net.bridge, "clsact"])
    attached = CidSteering.attach([net.host_client_iface], [net.bridge], 8, tmp_path / "bpf", net.host_ns)
    assert attached is not None
    assert f"pref {PREF}" in net.run_in(net.host_ns, ["tc", "filter", "show", "dev", net.bridge, "ingress"]).stdout
    attached.detach()
    assert "clsact" in net.run_in(net.host_ns, ["tc", "qdisc", "show", "dev", net.bridge]).stdout
    assert net.run_in(net.host_ns, ["tc", "filter", "show", "dev", net.bridge, "ingress"]).stdout.strip() == ""


def test_attach_without_an_object_returns_none(net: L4Net, tmp_path: Path) -> None:
    """With no BPF object the mode goes on without learning: attach returns None and touches nothing."""
    attached = CidSteering.attach([net.host_client_iface], [net.bridge], 8, tmp_path / "bpf", net.host_ns,
                                  bpf_object=tmp_path / "missing.o")
    assert attached is None
    assert "clsact" not in net.run_in(net.host_ns, ["tc", "qdisc", "show", "dev", net.bridge]).stdout
    assert not (tmp_path / "bpf").exists()


def test_a_folder_of_a_mounted_bpffs_is_used_without_a_mount_of_its_own(net: L4Net, tmp_path: Path) -> None:
    """Under a bpffs already there (the host's /sys/fs/bpf) attach makes a folder, not a mount, and detach
    removes only that folder."""
    outer = tmp_path / "bpffs"
    outer.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(outer)], check=True, timeout=30)
    try:
        attached = CidSteering.attach([net.host_client_iface], [net.bridge], 8, outer / "qf", net.host_ns)
        assert attached is not None
        assert (outer / "qf" / "tc" / "globals" / "qf_slots").exists()
        assert Path("/proc/self/mountinfo").read_text().count(str(outer)) == 1
        attached.detach()
        assert not (outer / "qf").exists()
    finally:
        subprocess.run(["umount", str(outer)], check=False, timeout=30)


def test_a_pin_dir_under_sys_is_refused_with_a_namespace(net: L4Net) -> None:
    """`ip netns exec` hides /sys, so a pin dir there could not be shared: attach says so and returns None."""
    attached = CidSteering.attach([net.host_client_iface], [net.bridge], 8, Path("/sys/fs/bpf/qf-test"), net.host_ns)
    assert attached is None


def _target(vm: Vm) -> L4Target:
    return L4Target(vm=vm.netns, address=vm.ip, port=vm.port)


async def _send_new_flows_to(passthrough: Passthrough, steering: CidSteering | None, vm: Vm) -> None:
    """Only `vm` takes new flows; the other VM stays a member (its flows and slot kept), as when draining."""
    await passthrough.apply([_target(vm)])
    if steering is not None:
        plan = passthrough.plan
        steering.set_slots({m.address: plan.slots[m.vm] for m in plan.members})


@pytest.mark.parametrize("learning", [True, False], ids=["learning", "no-learning"])
@pytest.mark.parametrize("event", ["idle-out", "rebinding"])
async def test_a_connection_survives_idle_out_and_rebinding_only_with_learning(
    event: str, learning: bool, tmp_path: Path
) -> None:
    """A connection whose conntrack entry is gone (idle-out) or whose client moved to a new port (rebinding)
    while the map sends new flows elsewhere stays on its VM with CID learning and is lost without it."""
    with L4Net(vms=2) as topology:
        first, second = topology.vms
        passthrough = Passthrough(TableSpec(vip=topology.vip, port=topology.port), netns=topology.host_ns)
        await passthrough.start()
        steering = CidSteering.attach([topology.host_client_iface], [topology.bridge], 8, tmp_path / "bpf",
                                      topology.host_ns, vip=topology.vip, port=topology.port) if learning else None
        assert (steering is not None) == learning
        try:
            async with L4Client(topology) as client:
                await _send_new_flows_to(passthrough, steering, first)
                assert (await client.call(op="open", conn="c")).get("ok")
                assert first.address in (await client.call(op="get", conn="c"))["body"]
                await _send_new_flows_to(passthrough, steering, second)
                assert first.address in (await client.call(op="get", conn="c"))["body"]  # conntrack keeps it
                if event == "idle-out":
                    topology.run_in(topology.host_ns, ["conntrack", "-D", "-p", "udp", "--orig-dst", topology.vip])
                else:
                    assert (await client.call(op="rebind", conn="c")).get("port")
                answer = await client.call(op="get", conn="c")
                counts = steering.counters() if steering is not None else {}
        finally:
            if steering is not None:
                steering.detach()
            await passthrough.close()
    if learning:
        assert first.address in answer.get("body", ""), answer
        assert counts["learned"] >= 1 and counts["steered"] >= 1
    else:
        assert "error" in answer or second.address in answer["body"], answer


def test_a_failed_attach_undoes_what_it_did(net: L4Net, tmp_path: Path) -> None:
    """When tc fails on one interface (here: no such device), the filters already added go and attach returns None."""
    attached = CidSteering.attach(["no-such-if"], [net.bridge], 8, tmp_path / "bpf", net.host_ns)
    assert attached is None
    assert "clsact" not in net.run_in(net.host_ns, ["tc", "qdisc", "show", "dev", net.bridge]).stdout
    assert not (tmp_path / "bpf").exists()
