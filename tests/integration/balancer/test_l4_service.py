"""The balancer service in `l4` mode on a real kernel: namespaces, nftables, conntrack, HTTP/3 servers as VMs, NATS.

Where things run: the topology (tests/support/l4net.py) is a client namespace, a host namespace
(the VIP, the VMs' bridge) and one namespace per VM. The balancer runs in this process on a
thread inside the host namespace (tests/support/netns.py), as it runs on a KVM host: it
programs that kernel and its HTTP/3 health checks reach the VMs over the bridge. Its NATS is
a real nats-server (the `nats_server` fixture's `NatsServer`) started from that thread, so it
listens on the host namespace's loopback: the fixture's own, on this namespace's loopback, is
out of the host namespace's reach. The client is a subprocess in the client namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from ops.natsserver import NatsServer
from services.balancer.bootstrap import bootstrap
from services.balancer.l4.cid import default_object
from services.balancer.l4.service import L4Service
from services.balancer.settings import BalancerSettings
from shared.bus import Bus, connect
from shared.contract.draining import BackendDrained
from shared.contract.events import VmState, VmStateChanged
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.integration.balancer.harness import announce
from tests.support import wait_until
from tests.support.l4client import L4Client
from tests.support.l4net import L4Net
from tests.support.netns import run_in_netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "nft", "conntrack")),
    reason="needs root, iproute2, nftables and conntrack (network namespaces and the kernel's NAT)",
)

CONNTRACK_TIMEOUT_S = 10
"""Short, so a drained VM's flows age out within the test (UDP has no close the kernel sees)."""
HEALTH: dict[str, Any] = {"health_interval_s": 0.5, "health_timeout_s": 0.5, "health_fall": 2, "health_rise": 1}
HEALTH_WINDOW_S = 0.5 * 3 + 0.5 * 2 + 0.2 + 1.0
"""Two failed checks (interval + timeout each, one interval of phase), one sync, a second of slack."""
SCENARIO_S = 120.0


@pytest.fixture
def quic_engine() -> str:
    """One engine: in l4 the balancer terminates no client QUIC, the engine only carries its health checks."""
    return "aioquic"


def _settings(net: L4Net, nats_url: str, tmp: Path) -> BalancerSettings:
    return BalancerSettings(
        nats_url=nats_url, instance="l4test", balancer_mode="l4", listen_host=net.vip, listen_port=net.port,
        balancer_l4_netns=net.host_ns, balancer_l4_vm_iface=net.bridge, balancer_l4_bpf_object=tmp / "absent.o",
        balancer_l4_conntrack_timeout_s=CONNTRACK_TIMEOUT_S, upstream_protocol="http3",
        balancer_list_window_s=0.2, balancer_slow_start_s=0, balancer_report_interval_s=0.5,
        balancer_state_dir=tmp / "balancer", balancer_metrics_port=0, **HEALTH,
    )


@asynccontextmanager
async def _stack(net: L4Net, tmp: Path, **overrides: Any) -> AsyncIterator[tuple[Bus, L4Service]]:
    """A nats-server, a test client on it and the l4 balancer, all in the host namespace (the caller's thread)."""
    (tmp / "nats").mkdir(exist_ok=True)
    server = NatsServer(tmp / "nats")
    server.start()
    try:
        bus = Bus(await connect(ServiceSettings(nats_url=server.url), "quicfleet-test"), Subjects())
        try:
            settings = _settings(net, server.url, tmp).model_copy(update=overrides)
            async with bootstrap(settings) as service:
                assert isinstance(service, L4Service)
                yield bus, service
        finally:
            await bus.drain()
    finally:
        server.stop()


def _in_host(net: L4Net, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async scenario on a thread inside the topology's host namespace, with an overall deadline."""

    async def bounded() -> None:
        async with asyncio.timeout(SCENARIO_S):
            await scenario()

    run_in_netns(net.host_ns, lambda: asyncio.run(bounded()))


def _tables(net: L4Net) -> list[str]:
    listing = json.loads(net.run_in(net.host_ns, ["nft", "-j", "list", "tables"]).stdout or "{}")
    return [entry["table"]["name"] for entry in listing.get("nftables", []) if "table" in entry]


async def _drains(bus: Bus) -> list[BackendDrained]:
    """Every `BackendDrained` published from now on, as it comes."""
    seen: list[BackendDrained] = []

    async def took(message: BackendDrained, _msg: Msg) -> None:
        seen.append(message)

    await bus.subscribe(bus.subjects.balancer_drained, BackendDrained, took)
    return seen


async def _mapped(service: L4Service, *vms: str, timeout: float = 10.0) -> None:
    await wait_until(lambda: service.plane.mapped == vms, timeout=timeout, what=f"the kernel's map holding {vms}")


def test_scale_out_and_drain_under_load_fail_nothing_and_keep_established_flows(tmp_path: Path) -> None:
    """Under a steady load, a VM added and one drained fail no request; the drained VM's open connection stays
    on it; its drain ends (not timed out) once its flows are gone; stopping leaves no table."""
    with L4Net(vms=2) as net:
        _in_host(net, lambda: _scale_out_and_drain(net, tmp_path))
        assert "quicfleet_l4" not in _tables(net)


async def _scale_out_and_drain(net: L4Net, tmp: Path) -> None:
    vm0, vm1 = net.vms
    async with _stack(net, tmp) as (bus, lb), L4Client(net) as client:
        drained = await _drains(bus)
        await announce(bus, lb, "vm0", vm0.address)
        await _mapped(lb, "vm0")
        assert (await client.call(op="open", conn="kept")).get("ok")
        assert vm0.address in (await client.call(op="get", conn="kept"))["body"]
        await client.call(op="load_start", workers=2)
        await announce(bus, lb, "vm1", vm1.address)
        await _mapped(lb, "vm0", "vm1")
        spread = await client.call(op="fresh", count=12)
        assert spread["errors"] == [] and {vm0.address, vm1.address} <= {b.split()[-1] for b in spread["bodies"]}
        await bus.publish(bus.subjects.vm(VmState.DRAINING), VmStateChanged(
            vm="vm0", state=VmState.DRAINING, deadline_s=60, request_id="drain-vm0"))
        await _mapped(lb, "vm1")
        after = await client.call(op="fresh", count=6)
        assert after["errors"] == [] and {b.split()[-1] for b in after["bodies"]} == {vm1.address}
        assert vm0.address in (await client.call(op="get", conn="kept"))["body"]  # established: still on vm0
        assert not drained  # its flows are still there
        assert lb.report().backends[0].packets > 0
        page = await _page(lb, "/metrics")
        assert 'quicfleet_balancer_vm_flows{vm="vm0"}' in page
        assert 'quicfleet_balancer_vm_packets_total{vm="vm1"}' in page
        await client.call(op="close", conn="kept")
        load = await client.call(op="load_stop")
        assert load["failed"] == 0, load["errors"]
        assert load["ok"] > 0 and set(load["bodies"]) == {f"Server Address: {vm0.address}",
                                                         f"Server Address: {vm1.address}"}
        await wait_until(lambda: drained, timeout=CONNTRACK_TIMEOUT_S + 15, what="vm0 drained")
        assert [(d.vm, d.timed_out, d.request_id) for d in drained] == [("vm0", False, "drain-vm0")]


def test_killed_vm_leaves_the_map_within_the_health_window(tmp_path: Path) -> None:
    """A VM whose server dies is out of the kernel's map within the health window; new flows all reach the other."""
    with L4Net(vms=2) as net:
        _in_host(net, lambda: _killed_vm(net, tmp_path))
        assert "quicfleet_l4" not in _tables(net)


async def _killed_vm(net: L4Net, tmp: Path) -> None:
    vm0, vm1 = net.vms
    readiness_at_close: list[str | None] = []
    async with _stack(net, tmp) as (bus, lb), L4Client(net) as client:
        await announce(bus, lb, "vm0", vm0.address)
        await announce(bus, lb, "vm1", vm1.address)
        await _mapped(lb, "vm0", "vm1")
        assert json.loads(await _page(lb, "/readyz")) == {"ready": True}
        await asyncio.to_thread(net.remove_vm, vm1)
        await _mapped(lb, "vm0", timeout=HEALTH_WINDOW_S)
        after = await client.call(op="fresh", count=6)
        assert after["errors"] == [] and {b.split()[-1] for b in after["bodies"]} == {vm0.address}
        assert lb.report().backends[1].routable is False
        _spy_on_close(lb, readiness_at_close)
    assert readiness_at_close == ["draining"]  # /readyz said 503 draining before the table went


def _spy_on_close(service: L4Service, seen: list[str | None]) -> None:
    """Record what `/readyz` says at the moment the plane starts removing the table."""
    close = service.plane.close

    async def recorded() -> None:
        seen.append(service._not_ready())
        await close()

    service.plane.close = recorded  # type: ignore[method-assign]


async def _page(service: L4Service, path: str) -> str:
    """GET a page of the admin port (host namespace loopback); its body, whatever the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.metrics_port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    body = (await reader.read()).decode().partition("\r\n\r\n")[2]
    writer.close()
    return body


@pytest.mark.skipif(not default_object().is_file(), reason="no BPF object (make bpf)")
def test_learning_is_attached_on_the_client_side_and_stop_removes_filters_and_maps(tmp_path: Path) -> None:
    """With the BPF object built, learning attaches to the client-facing interface; stopping removes its tc
    filters, its pinned maps and the table."""
    with L4Net(vms=1) as net:
        _in_host(net, lambda: _learning(net, tmp_path))
        assert "quicfleet_l4" not in _tables(net)
        assert net.run_in(net.host_ns, ["tc", "filter", "show", "dev", net.host_client_iface, "ingress"]).stdout == ""
        pins = tmp_path / "balancer" / "bpf"
        assert not pins.exists() or not any(pins.rglob("*"))


async def _learning(net: L4Net, tmp: Path) -> None:
    learning: dict[str, Any] = {"balancer_l4_bpf_object": None, "balancer_l4_cid_length": 8}  # aioquic: 8-byte IDs
    async with _stack(net, tmp, **learning) as (bus, lb), L4Client(net) as client:
        assert lb.plane.cid is not None, lb.plane.cid_note
        filters = net.run_in(net.host_ns, ["tc", "filter", "show", "dev", net.host_client_iface, "ingress"])
        assert "bpf" in filters.stdout
        await announce(bus, lb, "vm0", net.vms[0].address)
        await _mapped(lb, "vm0")
        served = await client.call(op="fresh", count=2)
        assert served["errors"] == [] and lb.plane.cid.learned() > 0


def test_run_in_netns_runs_inside_the_namespace(tmp_path: Path) -> None:
    """The helper's thread sees the namespace's interfaces, not the test process's."""
    with L4Net(vms=0) as net:
        names = run_in_netns(net.host_ns, lambda: subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout)
        assert net.bridge in names and net.host_client_iface in names
