"""The scaler's in-memory view of the fleet and the commands its pure core returns.

Everything here is plain frozen data; time is a float of seconds (the glue passes wall-clock
`time.time()`), so the core can be driven by hand in tests and in the replay benchmark.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from services.scaler.core.boottimes import BootTimes
from services.scaler.core.forecast import ForecastMemory
from services.scaler.core.history import LoadHistory
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy

GONE_KEPT = 1000
"""How many destroyed VM names the view remembers (names are never reused; this only bounds memory)."""

CAPACITY_STATES = frozenset({VmState.REQUESTED, VmState.CLONING, VmState.BOOTING, VmState.READY})
"""States of a VM that counts towards the fleet size (draining VMs are on their way out; pooled VMs serve nothing)."""

POOL_KIND = "p"
"""The kind letter in a pool create's request id (`<leader>-e<epoch>-p<seq>`, next to `c` for a create)."""
_POOL_REQUEST = re.compile(rf"-e\d+-{POOL_KIND}\d+$")
EN_ROUTE = frozenset({VmState.REQUESTED, VmState.CLONING, VmState.BOOTING})


def pool_request(request_id: str | None) -> bool:
    """Whether a request id is a pool create's.

    Events and lists carry the VM's request id, so every replica, and a leader elected later,
    tells a VM booting for the pool from one booting to serve without a record of its own: the
    id is the record. A take gives the VM the plain create's id, which moves it out of the pool.
    """
    return request_id is not None and _POOL_REQUEST.search(request_id) is not None


@dataclass(frozen=True)
class VmView:
    """One VM as the scaler knows it from provisioner events and lists."""

    name: str
    state: VmState
    since: float
    created: float
    ready_at: float | None = None
    host: str | None = None
    address: str | None = None
    request_id: str | None = None
    seen: float = 0.0
    """Local time of the last news about this VM (a list asked earlier must not undo it)."""
    paused: bool = False
    """Its provisioner says libvirt reports it paused (`liveness` treats a paused ready VM as sick)."""

    @property
    def in_pool(self) -> bool:
        """Pooled, or on its way there (made by a pool create and not taken yet): never capacity."""
        return self.state is VmState.POOLED or (self.state in EN_ROUTE and pool_request(self.request_id))

    @property
    def capacity(self) -> bool:
        """In a state that counts towards the fleet size, and not one of the pool's."""
        return self.state in CAPACITY_STATES and not self.in_pool


@dataclass(frozen=True)
class BalancerView:
    """One balancer from its last report: when we heard it and its in-flight count per VM."""

    id: str
    last_seen: float
    interval_s: float = 1.0
    address: str | None = None
    outstanding: Mapping[str, int] = field(default_factory=dict)
    unroutable: frozenset[str] = frozenset()
    """VMs this balancer does not route to for their health (ejected or failing checks; drains aside)."""

    def live(self, now: float) -> bool:
        """A balancer silent for about three report intervals is gone."""
        return now - self.last_seen <= 3 * self.interval_s + 0.5


@dataclass(frozen=True)
class DrainView:
    """A VM being drained: which balancers still have to say it is drained, and until when."""

    vm: str
    started: float
    deadline: float
    waiting: frozenset[str]
    destroy_sent_at: float | None = None


@dataclass(frozen=True)
class Failures:
    """Consecutive VM creation failures; the next create waits an exponentially growing delay."""

    count: int = 0
    last_at: float = 0.0

    def next_create_at(self, policy: ScalingPolicy) -> float:
        """When the next create may go out (at once when nothing failed)."""
        if self.count == 0:
            return 0.0
        delay = min(policy.failure_backoff_s * 2.0 ** min(self.count - 1, 60), policy.failure_backoff_max_s)
        return self.last_at + delay


@dataclass(frozen=True)
class AutoscaleMemory:
    """What the stabilization window, the rate limits and the churn budget need to remember."""

    recommendations: tuple[tuple[float, int], ...] = ()
    actions: tuple[tuple[float, int], ...] = ()
    """(time, signed size change) of each autoscaling action: the rate limits read minutes of them, the churn
    budget (`churn`) the last hour and a flap window."""
    observations: tuple[tuple[float, float], ...] = ()
    """(time, fleet-wide demand) per evaluation, over the scale-down window and its settle time."""

    @classmethod
    def seeded(cls, desired: int, now: float) -> AutoscaleMemory:
        """A fresh leader remembers the current size as a recommendation (its scale-up window starts there).

        Scale-in is held by the demand history instead: without a whole window of it (a follower
        keeps one, see `autoscale.witness`) there is none.
        """
        return cls(recommendations=((now, desired),))


@dataclass(frozen=True)
class VmLoadView:
    """The load of one VM, as the metrics service saw it."""

    rps: float = 0.0
    outstanding: float = 0.0
    p95_s: float | None = None
    flows: float = 0.0
    """Open flows (connections) to the VM, from balancers in `l4` mode."""


@dataclass(frozen=True)
class LoadView:
    """The latest fleet load snapshot, stamped with the local time it arrived."""

    at: float
    rps: float = 0.0
    outstanding: float = 0.0
    p95_s: float | None = None
    vms: Mapping[str, VmLoadView] = field(default_factory=dict)
    window_s: float = 1.0
    """The rates are averages over this many seconds (the metrics service's window)."""
    flows: float = 0.0
    """Open flows over the fleet (l4 balancers)."""


@dataclass(frozen=True)
class HostCapacity:
    """What a host's provisioner said about its room in its last list (None: not said), for `placement`."""

    free_memory_mib: int | None = None
    cpus: int | None = None
    vm_memory_mib: int | None = None
    vm_vcpus: int | None = None
    running: frozenset[str] = frozenset()
    """Our VMs that list showed running: their memory is already out of `free_memory_mib`, other VMs' is not."""


@dataclass(frozen=True)
class FleetState:
    """Everything `decide` reads: desired size, policy, VMs, drains, balancers, failures, memory."""

    desired: int
    policy: ScalingPolicy
    hold_until: float | None = None
    vms: Mapping[str, VmView] = field(default_factory=dict)
    pending: Mapping[str, float] = field(default_factory=dict)
    """Capacity creates sent and not answered yet (request id -> local time): they count towards the size."""
    pool_pending: Mapping[str, float] = field(default_factory=dict)
    """Pool creates sent and not answered yet: apart from `pending`, as they count towards a host's pool only."""
    drains: Mapping[str, DrainView] = field(default_factory=dict)
    drain_requests: frozenset[str] = frozenset()
    balancers: Mapping[str, BalancerView] = field(default_factory=dict)
    failures: Failures = Failures()
    memory: AutoscaleMemory = AutoscaleMemory()
    seq: int = 0
    epoch: int = 0
    leader: str = "scaler"
    desired_known: bool = True
    """False until a desired size was ever stored: a fresh scaler must not tear down a running fleet."""
    gone: Mapping[str, float] = field(default_factory=dict)
    """VMs known destroyed (name -> local time): final, so no late event, list or reply brings one back."""
    hosts: Mapping[str, int] = field(default_factory=dict)
    """Provisioners that answered the last list, and each one's `max_vms` (creates are placed on these)."""
    placed: Mapping[str, str] = field(default_factory=dict)
    """Pending creates, capacity or pool, sent to one host (request id -> host): they take room there until settled."""
    sick_since: Mapping[str, float] = field(default_factory=dict)
    """Ready VMs the balancers agree are unhealthy, or paused in libvirt, since when (local time; see `liveness`)."""
    last_replaced: float = float("-inf")
    """When the last unhealthy VM was replaced (the replacement rate limit)."""
    host_seen: Mapping[str, float] = field(default_factory=dict)
    """When each provisioner last answered a list (local time): a host silent far longer than the others is lost."""
    written_off: frozenset[str] = frozenset()
    """VMs counted out with their lost host: if it returns, they are the surplus and go first."""
    capacity: Mapping[str, HostCapacity] = field(default_factory=dict)
    """What each host that answered the last list said it has (placement fits creates into it; see `placement`)."""
    boots: BootTimes = field(default_factory=BootTimes)  # create/resume-to-ready times per host (`boottimes`)
    history: LoadHistory = field(default_factory=LoadHistory)
    """The load per minute for the last 14 days (`history`; persisted apart, so a new leader has it)."""
    history_at: float = float("-inf")
    """When the newest snapshot in `history` arrived (a snapshot is added once, however often it is evaluated)."""
    forecast: ForecastMemory = field(default_factory=ForecastMemory)
    """The forecast of the next minutes, its scores and whether it switched itself off (`forecast`, `predict`)."""
    retiring: frozenset[str] = frozenset()
    """VMs a rollout is replacing now (`rollout`): not counted, so their successors are made; serving till drained."""
    outdated: frozenset[str] = frozenset()
    """VMs of a version a rollout is replacing: a scale-in takes them first."""


def without_pool(state: FleetState) -> FleetState:
    """The state with the warm pool's VMs left out: what the autoscaler sizes from (they serve nothing).

    Pooled VMs are out of `CAPACITY_STATES` already; this also leaves out the VMs still booting
    for the pool, which the autoscaler would otherwise count as capacity on its way.
    """
    if not any(vm.in_pool for vm in state.vms.values()):
        return state
    return replace(state, vms={name: vm for name, vm in state.vms.items() if not vm.in_pool})


@dataclass(frozen=True)
class CreateCommand:
    """Ask a provisioner for one more VM: the one on `host`, or any one when no host is known.

    `pooled`: a VM for that host's warm pool (booted, checked, paused), not one to serve.
    """

    request_id: str
    host: str | None = None
    pooled: bool = False
    version: str | None = None
    """The template version to clone (a rollout's; None: the host's template domain)."""


@dataclass(frozen=True)
class DrainCommand:
    """Ask the VM's own provisioner to start draining it (`StartDrain`).

    The provisioner alone writes VM state: it marks the VM draining and publishes `fleet.vm.draining`
    with `deadline_s`, which every balancer drains on. `host` None: no provisioner is known for it yet.
    """

    vm: str
    deadline_s: float
    request_id: str
    host: str | None = None


@dataclass(frozen=True)
class DestroyCommand:
    """Ask the VM's own provisioner to destroy it."""

    vm: str
    host: str
    request_id: str


Command = CreateCommand | DrainCommand | DestroyCommand


@dataclass(frozen=True)
class Signals:
    """The numbers behind a decision, published with it."""

    signal: str
    observed: float | None = None
    target: float | None = None
    recommendation: int | None = None


@dataclass(frozen=True)
class Decision:
    """What `decide` returns: commands to send, why, and the state to keep."""

    commands: tuple[Command, ...]
    reason: str
    state: FleetState
    previous_desired: int
    signals: Signals

    @property
    def desired(self) -> int:
        return self.state.desired

    @property
    def changed(self) -> bool:
        """The desired size moved (worth a `ScalingDecided` event and a KV write)."""
        return self.state.desired != self.previous_desired
