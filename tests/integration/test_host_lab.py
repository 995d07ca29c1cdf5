"""The host install exercised as far as a machine without systemd allows: `install-host.sh --root` with its real
virtualenv, the service users on this host, and the balancer and metrics units started by hand from their
`ExecStart=` lines as those users, ready for systemd and outside probes, then stopped cleanly by SIGTERM.

Not reproduced: the units' sandboxing (`ProtectSystem=` and the rest need systemd). The users are made by
`systemd-sysusers` from the project's own file on this host and removed after (those that existed are kept);
the staging root's /etc/passwd starts as a copy of this host's so its files carry the same ids.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from ops.natsserver import NatsServer, free_port
from shared.bus import Bus
from shared.contract.events import VmState, VmStateChanged
from tests.support import wait_until
from tests.support.h1server import H1Backend
from tests.support.tools import require_tool
from tests.support.units import Unit, read_unit, setpriv_argv

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
USERS = ("quicfleet-balancer", "quicfleet-metrics", "quicfleet-scaler", "quicfleet-provisioner")
GROUPS = ("quicfleet", "libvirt")
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    message = "NOT ROOT: the host-install lab test makes system users and switches to them (run as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a skipped check is a failure)", pytrace=False)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


def _exists(lookup: object, name: str) -> bool:
    try:
        lookup(name)  # type: ignore[operator]
    except KeyError:
        return False
    return True


@pytest.fixture
def host_users() -> Iterator[None]:
    """The service users and groups of deploy/systemd/sysusers-quicfleet.conf on this host; the ones made here are
    deleted after the test."""
    _require_root()
    tool = require_tool("systemd-sysusers", "systemd")
    require_tool("setpriv", "util-linux")
    users = [u for u in USERS if not _exists(pwd.getpwnam, u)]
    groups = [g for g in GROUPS if not _exists(grp.getgrnam, g)]
    subprocess.run([tool, str(DEPLOY / "systemd" / "sysusers-quicfleet.conf")], check=True, timeout=60)
    try:
        yield
    finally:
        for user in users:
            subprocess.run(["userdel", user], check=False, timeout=30)
        for group in groups:
            subprocess.run(["groupdel", group], check=False, timeout=30, stderr=subprocess.DEVNULL)


@pytest.fixture
def staged(host_users: None) -> Iterator[Path]:
    """`install-host.sh --root DIR` (virtualenv included) into a directory the service users may enter."""
    root = Path(tempfile.mkdtemp(prefix="quicfleet-lab-", dir="/var/tmp"))
    try:
        root.chmod(0o755)
        (root / "etc").mkdir(mode=0o755)
        for name in ("passwd", "group", "shadow", "gshadow"):
            if Path("/etc", name).exists():
                shutil.copy2(Path("/etc", name), root / "etc" / name)
        leak = os.environ | {"PIP_PREFIX": str(root / "usr" / "local")}  # a root shell's setting must not win
        result = subprocess.run(["bash", str(DEPLOY / "install-host.sh"), "--root", str(root)], env=leak,
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def low_free_port() -> int:
    """A port below 1024 free on 127.0.0.1 for TCP and UDP: the balancer binds it with CAP_NET_BIND_SERVICE only."""
    for port in range(1000, 800, -1):
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port between 801 and 1000")


def configure(config: Path, settings: dict[str, str]) -> None:
    """Set keys in the installed /etc/quicfleet/quicfleet.toml as an operator would (commented or not)."""
    text = config.read_text()
    for key, value in settings.items():
        text, count = re.subn(rf"(?m)^#?\s*{key}\s*=.*$", f"{key} = {value}", text, count=1)
        assert count == 1, f"{key} not in {config}"
    config.write_text(text)


class NotifySocket:
    """systemd's side of `Type=notify`: a datagram socket the service user may write to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o666)
        self.seen: list[str] = []

    def _wait(self, wanted: str, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        while not any(wanted in message for message in self.seen):
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return False
        return True

    async def wait(self, wanted: str, timeout: float = 60.0) -> bool:
        return await asyncio.to_thread(self._wait, wanted, timeout)


@asynccontextmanager
async def started(unit: Unit, notify: NotifySocket, log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The unit's command run as its user with its environment (and nothing of ours), killed if left running."""
    if unit.state_directory is not None:  # StateDirectory=: systemd makes it, owned by the unit's user
        state = Path(unit.state_directory)
        state.mkdir(parents=True, exist_ok=True, mode=0o750)
        shutil.chown(state, unit.user, unit.group)
    env = unit.environment | {"PATH": SYSTEMD_PATH, "NOTIFY_SOCKET": str(notify.path), "USER": unit.user,
                              "LOGNAME": unit.user, "HOME": pwd.getpwnam(unit.user).pw_dir}
    with log.open("wb") as out:
        proc = subprocess.Popen(setpriv_argv(unit), env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, await r.text()
    except (aiohttp.ClientError, OSError):
        return 0, ""


async def test_units_started_by_hand_as_their_users_become_ready_and_stop_on_sigterm(
    staged: Path, nats_server: NatsServer, bus: Bus
) -> None:
    """The installed venv runs the balancer and metrics units' ExecStart= as quicfleet-balancer/-metrics with the
    units' Environment= and the installed config: READY=1, /readyz and /metrics answer, SIGTERM gives STOPPING=1
    and exit 0; the venv holds ops, services and shared (PIP_PREFIX in root's environment notwithstanding), and
    the system's Python does not see them."""
    listen, admin, metrics_port = low_free_port(), free_port(), free_port()
    configure(staged / "etc/quicfleet/quicfleet.toml", {
        "nats_url": f'"{nats_server.url}"', "listen_host": '"127.0.0.1"', "listen_port": str(listen),
        "balancer_metrics_port": str(admin), "metrics_port": str(metrics_port),
    })
    units = DEPLOY / "systemd"
    balancer = read_unit(units / "quicfleet-balancer@.service", staged, instance="1")
    metrics = read_unit(units / "quicfleet-metrics.service", staged)
    assert balancer.argv[0] == f"{staged}/opt/quicfleet/bin/python" and balancer.user == "quicfleet-balancer"
    notify = {name: NotifySocket(staged / f"run/notify-{name}.sock") for name in ("balancer", "metrics")}
    async with H1Backend() as vm, started(balancer, notify["balancer"], staged / "balancer.log") as lb, \
            started(metrics, notify["metrics"], staged / "metrics.log") as mx:
        for name, proc in (("balancer", lb), ("metrics", mx)):
            ready = await notify[name].wait("READY=1")
            assert ready, (name, proc.poll(), (staged / f"{name}.log").read_text()[-3000:])
        assert (await get(f"http://127.0.0.1:{admin}/readyz"))[0] == 503  # no VM yet: reachable, not ready
        event = VmStateChanged(vm="vm-1", state=VmState.READY, address=vm.address)
        await bus.publish(bus.subjects.vm(VmState.READY), event)
        await wait_until(lambda: _answers(f"http://127.0.0.1:{admin}/readyz", 200), 15, what="balancer ready")
        assert await get(f"http://127.0.0.1:{metrics_port}/readyz") == (200, '{"ready": true}')
        status, text = await get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and "quicfleet_build_info" in text
        assert _owner(lb.pid) == "quicfleet-balancer" and _owner(mx.pid) == "quicfleet-metrics"
        for name, proc in (("balancer", lb), ("metrics", mx)):
            proc.send_signal(signal.SIGTERM)
            assert await notify[name].wait("STOPPING=1", 30), name
            assert await asyncio.to_thread(proc.wait, 40) == 0, (staged / f"{name}.log").read_text()[-3000:]
    system = subprocess.run(["/usr/bin/python3", "-I", "-c", "import services"], capture_output=True, timeout=30,
                            check=False, cwd="/")
    assert system.returncode != 0, "the system's python3 imports quicfleet's `services`"
    assert not (staged / "usr" / "local").exists(), "PIP_PREFIX sent files outside /opt/quicfleet"
    assert sorted(p.name for p in staged.glob("opt/quicfleet/lib/python3*/site-packages/*")
                  if p.name in {"ops", "services", "shared"}) == ["ops", "services", "shared"]


async def _answers(url: str, status: int) -> bool:
    return (await get(url))[0] == status


def _owner(pid: int) -> str:
    """The user a process runs as (its real uid, from /proc)."""
    uid = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Uid:")).split()[1])
    return pwd.getpwuid(uid).pw_name
