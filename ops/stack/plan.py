"""What `quicfleet up` will run, decided without running anything (pure, unit-tested).

Three ways to reach libvirt, in order: the libvirt the user named (`QUICFLEET_LIBVIRT_URI`, a
real KVM host), the namespaced QEMU lab when this machine can run it, else libvirt's test
driver, where VMs exist only on paper and no request will ever be answered.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ops.cli.health import SERVICES

TEST_URI = "test:///default"
SERVICE_STYLES = {
    "nats": "blue", "balancer": "green", "metrics": "magenta", "scaler": "yellow", "provisioner": "cyan", "up": "bold",
}


REAL_VM_DEFAULTS: dict[str, dict[str, str]] = {
    "balancer": {"QUICFLEET_UPSTREAM_TLS": "true"},
}
"""With real VMs (lab or KVM host) the backends serve HTTPS on 443 (caddy or nginx), so the
balancer's HTTP/1.1 upstream speaks TLS. The caller's own variables still win."""
LAB_DEFAULTS: dict[str, dict[str, str]] = {
    "provisioner": {"QUICFLEET_MAX_VMS": "3", "QUICFLEET_BOOT_TIMEOUT_S": "240"},
}
"""The lab runs QEMU without KVM on a small machine: at most 3 VMs (~280 MB each), slow boots."""


class Mode(StrEnum):
    LIBVIRT = "libvirt"
    LAB = "lab"
    TEST = "test"


@dataclass(frozen=True)
class Plan:
    """How the stack reaches libvirt and what the provisioner is told about it."""

    mode: Mode
    provisioner_env: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None
    warning: str | None = None
    balancer_env: dict[str, str] = field(default_factory=dict)
    """Defaults for the balancer (the caller's own variables win): an `l4` balancer's lab side."""
    client_namespace: str | None = None
    """An `l4` lab's client namespace: where clients reach the balancer's VIP from."""


def choose_mode(env: Mapping[str, str], lab_wanted: bool, lab_ok: tuple[bool, str]) -> tuple[Mode, str | None]:
    """Pick the libvirt to use; the second item is a warning to show loudly, if any."""
    if env.get("QUICFLEET_LIBVIRT_URI"):
        return Mode.LIBVIRT, None
    possible, why = lab_ok
    if lab_wanted and possible:
        return Mode.LAB, None
    reason = "--no-lab was given" if not lab_wanted else f"the QEMU lab cannot run here: {why}"
    return Mode.TEST, (f"{reason}. Using libvirt's test driver ({TEST_URI}): VMs exist only on paper, "
                       "none will boot or answer a request. Set QUICFLEET_LIBVIRT_URI for a real KVM host.")


def lab_env(libvirt_uri: str, network: str, template: str) -> dict[str, str]:
    """The provisioner's variables for the lab's libvirt, network and template."""
    return {"QUICFLEET_LIBVIRT_URI": libvirt_uri, "QUICFLEET_NETWORK": network, "QUICFLEET_TEMPLATE": template}


def wants_l4(env: Mapping[str, str]) -> bool:
    """Whether the caller runs the balancer in `l4` mode (`QUICFLEET_BALANCER_MODE=l4`): the lab then needs a
    client side (`ops.lab.edge`), since the kernel's DNAT sees only packets that arrive on an interface."""
    return env.get("QUICFLEET_BALANCER_MODE", "").strip().lower() == "l4"


def l4_lab_env(vip: str, subnet: str) -> dict[str, str]:
    """An `l4` balancer's variables in the lab: the VIP on the guests' port, the lab's bridge and wire, the guests'
    subnet, and the test template's connection-ID length (Caddy 2.6.2, quic-go: 4 bytes)."""
    return {
        "QUICFLEET_LISTEN_HOST": vip, "QUICFLEET_LISTEN_PORT": "443", "QUICFLEET_BALANCER_L4_VM_IFACE": "qfbr0",
        "QUICFLEET_BALANCER_L4_CLIENT_IFACES": "qfedge", "QUICFLEET_BALANCER_L4_VM_NETWORK": f"{subnet}.0/24",
        "QUICFLEET_BALANCER_L4_CID_LENGTH": "4",
    }


def style_of(child: str) -> str:
    """A child's colour: a cluster node (`nats-2`) is coloured like `nats`."""
    return SERVICE_STYLES.get(child, SERVICE_STYLES.get(child.partition("-")[0], ""))


def nats_children(size: int) -> list[str]:
    """The nats-server children of `up`: `nats` alone, or `nats-1` ... `nats-<size>` for a cluster."""
    return ["nats"] if size == 1 else [f"nats-{i + 1}" for i in range(size)]


NATS_LOGIN = ("QUICFLEET_NATS_USER", "QUICFLEET_NATS_PASSWORD", "QUICFLEET_NATS_PASSWORD_FILE",
              "QUICFLEET_NATS_TOKEN", "QUICFLEET_NATS_CREDS", "QUICFLEET_NATS_INBOX_PREFIX")
"""The variables that say how to log in to NATS: with authorisation on, `up`'s own replace the caller's."""


def with_login(base: Mapping[str, str], login: Mapping[str, str] | None) -> dict[str, str]:
    """`base` logging in with `login` (a user of `up`'s NATS) instead of any login of the caller's."""
    if login is None:
        return dict(base)
    return {k: v for k, v in base.items() if k not in NATS_LOGIN} | dict(login)


def service_env(
    base: Mapping[str, str], service: str, nats_url: str, plan: Plan, tty: bool, replicas: int = 1,
    login: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A service's environment: the caller's, plus where NATS is (every node's URL, and as many bucket
    replicas as nodes unless the caller says otherwise), its own NATS user when authorisation is on,
    the libvirt plan and a log format."""
    env = with_login(base, login)
    env["QUICFLEET_NATS_URL"] = nats_url
    if replicas > 1:
        env.setdefault("QUICFLEET_NATS_REPLICAS", str(replicas))
    env.setdefault("QUICFLEET_LOG_FORMAT", "console" if tty else "json")
    env.setdefault("PYTHONUNBUFFERED", "1")
    for defaults in _defaults(plan.mode):
        for key, value in defaults.get(service, {}).items():
            env.setdefault(key, value)
    if service == "provisioner":
        env.update(plan.provisioner_env)
    if service == "balancer":
        for key, value in plan.balancer_env.items():
            env.setdefault(key, value)
    return env


def _defaults(mode: Mode) -> list[dict[str, dict[str, str]]]:
    if mode is Mode.TEST:
        return []
    return [REAL_VM_DEFAULTS, LAB_DEFAULTS] if mode is Mode.LAB else [REAL_VM_DEFAULTS]


def service_argv(python: str, service: str) -> list[str]:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    return [python, "-m", f"services.{service}"]


def balancer_url(env: Mapping[str, str]) -> str:
    """Where the balancer listens, from its variables (defaults as in its settings)."""
    host = env.get("QUICFLEET_LISTEN_HOST", "127.0.0.1")
    port = env.get("QUICFLEET_LISTEN_PORT", "8443")
    host = f"[{host}]" if ":" in host else host
    return f"https://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/"


def hints(plan: Plan, bindir: str, nats_url: str, env: Mapping[str, str]) -> list[str]:
    """What to type next, from another shell (inside the lab's namespace when there is one)."""
    pre = f"ip netns exec {plan.namespace} " if plan.namespace else ""
    cli = f"{pre}{bindir}/quicfleet"
    client = f"ip netns exec {plan.client_namespace} " if plan.client_namespace else pre
    get = (f"import niquests; r = niquests.Session(disable_http1=True, disable_http2=True)"
           f".get({balancer_url({**plan.balancer_env, **env})!r}, verify=False); print(r.http_version, r.text)")
    lines = [
        f"quicfleet is up: NATS at {nats_url}, libvirt via {plan.mode.value}",
        "from another shell:",
        f"  {cli} status              # desired vs actual, VMs, balancers",
        f"  {cli} scale 2             # clone two VMs and wait until they are ready",
        f"  {cli} watch               # live VM events, decisions and load",
        f"  {cli} get --count 4       # HTTP/3 GETs through the balancer: which VM answered",
        "or with a third-party HTTP/3 client" + (" (l4: from the lab's client side)" if plan.client_namespace else "")
        + ":",
        f"  {client}{bindir}/python -c {shlex.quote(get)}",
        "Ctrl-C stops everything.",
    ]
    if plan.warning:
        lines.insert(1, f"WARNING: {plan.warning}")
    return lines
