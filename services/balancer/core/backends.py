"""The backend set as this balancer sees it: membership, drain flags, health, identity, slow start, counters.

Membership comes from the provisioner's events; routability combines them with health, identity
and drains. Counters live on the record itself so the request path touches one object per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.balancer.core.health import Health, HealthPolicy
from services.balancer.core.identity import Verification
from shared.contract.load import LATENCY_BOUNDS_S
from shared.histogram import bucket_of

MIN_WEIGHT = 0.05
"""A VM in slow start still gets a trickle, so its first requests warm it up."""


@dataclass(slots=True, eq=False)
class Backend:
    """One VM: where it listens, whether it may get requests, and what it has served."""

    vm: str
    host: str
    port: int
    ready_since: float
    health: Health
    verification: Verification = field(default_factory=Verification)
    draining: bool = False
    outstanding: int = 0
    requests: int = 0
    errors: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_S) + 1))
    latency_sum_s: float = 0.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def identity(self) -> str | None:
        """The domain UUID the VM must send in `x-quicfleet-vm` (None: not checked)."""
        return self.verification.uuid

    def routable(self, now: float) -> bool:
        return not self.draining and self.verification.trusted and self.health.usable(now)

    def weight(self, now: float, slow_start_s: float) -> float:
        """Share multiplier in (0, 1]: ramps linearly over the slow-start window."""
        if slow_start_s <= 0:
            return 1.0
        return max(MIN_WEIGHT, min(1.0, (now - self.ready_since) / slow_start_s))

    def began(self) -> None:
        self.outstanding += 1

    def ended(self, seconds: float, failed: bool) -> None:
        """Count a finished request (a failure still counts its latency)."""
        self.outstanding -= 1
        self.requests += 1
        if failed:
            self.errors += 1
        self.latency_counts[bucket_of(seconds)] += 1
        self.latency_sum_s += max(0.0, seconds)


def split_address(address: str, port_override: int | None = None) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) into parts, with an optional port override."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host, port_override or int(port)


class BackendTable:
    """Every known VM by name; the only place that decides who is a candidate."""

    def __init__(
        self, health: HealthPolicy, slow_start_s: float = 0.0, port_override: int | None = None,
        panic_threshold: float = 0.5,
    ) -> None:
        self.health_policy = health
        self.slow_start_s = slow_start_s
        self.port_override = port_override
        self.panic_threshold = panic_threshold
        """Share of the non-draining VMs that must be usable; below it every one is a candidate (0: off)."""
        self.backends: dict[str, Backend] = {}
        self.panic = False
        """Whether the last `candidates` call found the table in panic."""

    def __len__(self) -> int:
        return len(self.backends)

    def get(self, vm: str) -> Backend | None:
        return self.backends.get(vm)

    def ready(self, vm: str, address: str, now: float, fresh: bool = True, identity: str | None = None) -> Backend:
        """A VM is ready at `address`; a known one keeps its counters and leaves any drain.

        `fresh=False` (learned from a fleet listing at start) skips slow start: those VMs
        were already serving before this balancer started. `identity` is the UUID the VM
        must prove (None: not checked); a new address or another UUID starts unverified,
        since whatever answered before proves nothing about what answers now.
        """
        host, port = split_address(address, self.port_override)
        backend = self.backends.get(vm)
        if backend is None or (backend.host, backend.port) != (host, port):
            since = now if fresh else now - self.slow_start_s
            verification = Verification.of(identity, self.health_policy.rise)
            backend = Backend(vm, host, port, since, Health(self.health_policy), verification)
            if vm in self.backends:
                old = self.backends[vm]
                backend.requests, backend.errors = old.requests, old.errors
                backend.latency_counts, backend.latency_sum_s = old.latency_counts, old.latency_sum_s
            self.backends[vm] = backend
        elif backend.identity != identity:
            backend.verification = Verification.of(identity, self.health_policy.rise)
        backend.draining = False
        return backend

    def drain(self, vm: str) -> Backend | None:
        """Stop new requests to a VM at once; in-flight ones continue."""
        backend = self.backends.get(vm)
        if backend is not None:
            backend.draining = True
        return backend

    def remove(self, vm: str) -> Backend | None:
        return self.backends.pop(vm, None)

    def candidates(self, now: float) -> list[Backend]:
        """Backends that may take a new request right now (every non-draining one in panic).

        Panic (Envoy's healthy_panic_threshold): when fewer than `panic_threshold` of the
        non-draining VMs are usable, the checks or ejections are more likely wrong (or the
        whole fleet is overloaded) than most VMs dead, and sending the load to the few left
        would topple them too; spreading it over all of them serves what can be served
        instead of answering 503 to everyone. Draining VMs stay out: they are leaving. So do
        VMs whose identity is unverified or wrong, panic or not: what answers there may be
        another machine, and they do not count towards the threshold either.
        """
        known = [b for b in self.backends.values() if not b.draining and b.verification.trusted]
        usable = [b for b in known if b.health.usable(now)]
        self.panic = len(usable) < self.panic_threshold * len(known)
        return (known if self.panic else usable) or self._bridge(now)

    def _bridge(self, now: float) -> list[Backend]:
        """Draining VMs, only while no other VM may take a request and a replacement is proving its identity.

        A scale-in drains the oldest VM as soon as the new one is `ready`, and this balancer's own
        identity check of the new one is still a round trip away: for that moment the drained VM, up
        and trusted, answers instead of a 503. It ends with the check (or the drain's deadline); a
        drain with no replacement on its way (a scale to zero) still refuses at once.
        """
        if not any(b.verification.pending for b in self.backends.values() if not b.draining):
            return []
        return [b for b in self.backends.values() if b.draining and b.verification.trusted and b.health.usable(now)]
