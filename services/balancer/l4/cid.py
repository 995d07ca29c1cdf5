"""Connection-ID learning: load deploy/bpf/quic_cid.o with tc, fill its maps, take it all away again.

Why: in l4 mode conntrack keeps a QUIC flow on its VM only while its entry lives and the client
keeps its address and port. The tc program learns each server's connection ID from its plaintext
handshake packets and marks later client packets carrying it, so nftables sends a flow that looks
new (idle-out, NAT rebinding) to the VM that owns the connection instead of hashing it.

Loading needs no clang at run time: iproute2's `tc ... bpf da obj` reads the object built at install
time and pins its maps by name under `<pin_dir>/tc/globals` (`TC_BPF_MNT`, a bpffs this module
mounts at `pin_dir` when none is there: `ip netns exec` hides /sys/fs/bpf). The maps are then
written with bpf(2) (services/balancer/l4/bpfmap.py); their layouts are in core/cidmaps.py.
Where any of this is missing, `attach` says why in a warning and returns None: the mode then
works without learning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from services.balancer.core import cidmaps
from services.balancer.l4.bpfmap import BpfMap, bpf_available

log = structlog.get_logger("balancer.l4.cid")

PREF = 3101
"""The tc filter priority of this program's filters (so detach removes them and nothing else)."""
SECTIONS = {"vm": "learn", "client": "steer"}
"""The object's program sections: `learn` on the VM-side interfaces, `steer` on the client-side ones."""
COMMAND_TIMEOUT_S = 15.0
_SOURCE_OBJECT = Path(__file__).resolve().parents[3] / "deploy" / "bpf" / "build" / "quic_cid.o"
INSTALLED_OBJECT = Path("/opt/quicfleet/lib/bpf/quic_cid.o")
"""Where `make install` puts the object (a source checkout's deploy/bpf/build/quic_cid.o is tried first)."""


def default_object() -> Path:
    """The object to load when the setting names none: the source tree's build, else the installed one."""
    return _SOURCE_OBJECT if _SOURCE_OBJECT.is_file() else INSTALLED_OBJECT


def _unavailable(
    bpf_object: Path, client_ifaces: Sequence[str], vm_ifaces: Sequence[str], pin_dir: Path, netns: str | None
) -> str | None:
    """Why learning cannot start here, or None."""
    if not client_ifaces or not vm_ifaces:
        return "no client-side or no VM-side interface to attach to"
    if not bpf_object.is_file():
        return f"no BPF object at {bpf_object} (build it with `make bpf`: clang, llvm and libbpf-dev)"
    if netns and Path(os.path.realpath(pin_dir)).is_relative_to("/sys"):
        return f"pin dir {pin_dir} is under /sys, which `ip netns exec {netns}` hides: choose one outside it"
    for tool in ("tc", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2, mount)"
    return bpf_available()


def _fs_type(path: Path) -> str:
    """The file system type `path` lives on: that of the longest mount point above it (/proc/self/mountinfo)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # mountinfo writes a space as \040
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fields[fields.index("-") + 1]
    return kind


class CidSteering:
    """The attached program: its filters, its pinned maps, and what it added (so detach takes only that)."""

    def __init__(self, pin_dir: Path, netns: str | None) -> None:
        self.pin_dir = pin_dir
        self.netns = netns
        self._mounted = False
        self._made_dir = False
        self._filters: list[tuple[str, bool]] = []
        """(interface, whether we added its clsact qdisc) per attached interface."""
        self._maps: dict[str, BpfMap] = {}
        self._slots: dict[str, int] = {}

    @classmethod
    def attach(
        cls, client_ifaces: Sequence[str], vm_ifaces: Sequence[str], cid_length: int, pin_dir: Path,
        netns: str | None = None, *, vip: str | None = None, port: int = 0, bpf_object: Path | None = None,
    ) -> CidSteering | None:
        """Load the program on the interfaces and configure it; None (and a warning saying why) when BPF,
        the object or tc is not available here. `vip`/`port`: the service clients reach (None/0: any)."""
        config = cidmaps.config_value(cid_length, vip, port)  # a bad length or VIP is a configuration error
        obj = bpf_object or default_object()
        why = _unavailable(obj, client_ifaces, vm_ifaces, pin_dir, netns)
        if why is not None:
            log.warning("balancer.l4.cid_learning_off", reason=why)
            return None
        steering = cls(pin_dir, netns)
        try:
            steering._load(obj, client_ifaces, vm_ifaces, config)
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            steering.detach()
            log.warning("balancer.l4.cid_learning_off", reason=str(error)[:400])
            return None
        log.info("balancer.l4.cid_learning_on", client=list(client_ifaces), vm=list(vm_ifaces),
                 cid_length=cid_length, pin_dir=str(pin_dir))
        return steering

    @property
    def globals_dir(self) -> Path:
        """Where tc pins the object's maps."""
        return self.pin_dir / "tc" / "globals"

    def _load(self, obj: Path, client_ifaces: Sequence[str], vm_ifaces: Sequence[str], config: bytes) -> None:
        self._mount()
        self._unpin()  # a crashed run's maps would be reused by name, with its slots and CIDs
        for iface in vm_ifaces:
            self._add_filter(iface, obj, SECTIONS["vm"])
        for iface in client_ifaces:
            self._add_filter(iface, obj, SECTIONS["client"])
        for name in cidmaps.MAP_NAMES:
            self._maps[name] = BpfMap.open_pinned(
                self.globals_dir / name, cidmaps.KEY_SIZES[name], cidmaps.VALUE_SIZES[name]
            )
        self._maps["qf_config"].update(cidmaps.u32(0), config)

    def _mount(self) -> None:
        """A bpffs at pin_dir: a folder of one that is mounted already (/sys/fs/bpf), else our own mount."""
        if not self.pin_dir.exists():
            self.pin_dir.mkdir(parents=True, mode=0o700)
            self._made_dir = True
        if _fs_type(self.pin_dir) != "bpf":
            self._run(["mount", "-t", "bpf", "bpf", str(self.pin_dir)], netns=False)
            self._mounted = True

    def _run(self, argv: list[str], check: bool = True, netns: bool = True) -> subprocess.CompletedProcess[str]:
        """A command, inside the namespace when there is one, with tc's pin root set to our bpffs."""
        if netns and self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        env = os.environ | {"TC_BPF_MNT": str(self.pin_dir)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
        return done

    def _add_filter(self, iface: str, obj: Path, section: str) -> None:
        added = self._run(["tc", "qdisc", "add", "dev", iface, "clsact"], check=False).returncode == 0
        if not added:  # there already, or no such device: the filter says which
            self._run(["tc", "filter", "del", "dev", iface, "ingress", "pref", str(PREF)], check=False)
        self._filters.append((iface, added))
        self._run(["tc", "filter", "add", "dev", iface, "ingress", "pref", str(PREF), "bpf", "da",
                   "obj", str(obj), "sec", section])

    def set_slots(self, slots: Mapping[str, int]) -> None:
        """Which VM address is which slot (the nft mark of its flows); CIDs of slots gone are forgotten."""
        changes = cidmaps.slot_changes(self._slots, slots)
        table = self._maps["qf_slots"]
        for key in changes.deletes:
            table.delete(key)
        for key, slot in changes.upserts.items():
            table.update(key, cidmaps.u32(slot))
        cids = self._maps["qf_cids"]
        for key in cidmaps.stale_cids(cids.items(), changes.gone):
            cids.delete(key)
        self._slots = dict(slots)

    def _stat(self, index: int) -> int:
        raw = self._maps["qf_stats"].lookup(cidmaps.u32(index))
        return cidmaps.read_u64(raw) if raw is not None else 0

    def learned(self) -> int:
        """How many connection IDs the program has learned (or moved to another VM) since attach."""
        return self._stat(cidmaps.STAT_LEARNED)

    def counters(self) -> dict[str, int]:
        """learned, steered (client packets marked) and unknown (short headers to the VIP with no known CID)."""
        return {"learned": self.learned(), "steered": self._stat(cidmaps.STAT_STEERED),
                "unknown": self._stat(cidmaps.STAT_UNKNOWN)}

    def detach(self) -> None:
        """Remove the filters (and each clsact qdisc we added), the pinned maps and our bpffs. Idempotent."""
        for iface, added in reversed(self._filters):
            if added:
                self._run(["tc", "qdisc", "del", "dev", iface, "clsact"], check=False)
            else:
                self._run(["tc", "filter", "del", "dev", iface, "ingress", "pref", str(PREF)], check=False)
        self._filters.clear()
        for table in self._maps.values():
            table.close()
        self._maps.clear()
        self._unpin()
        if self._mounted:
            self._run(["umount", str(self.pin_dir)], check=False, netns=False)
            self._mounted = False
        if self._made_dir:
            with contextlib.suppress(OSError):
                self.pin_dir.rmdir()
            self._made_dir = False

    def _unpin(self) -> None:
        """Our pinned maps, and the empty folders tc made for them."""
        for name in cidmaps.MAP_NAMES:
            (self.globals_dir / name).unlink(missing_ok=True)
        for folder in (self.globals_dir, self.pin_dir / "tc"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if not (self.pin_dir / "tc").exists():  # tc also made `ip` and `xdp`, links to its folder
            for link in (self.pin_dir / "ip", self.pin_dir / "xdp"):
                if link.is_symlink():
                    link.unlink()
