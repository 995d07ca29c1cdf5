"""Per-VM flows read from conntrack, and a left VM's leftover entries expired.

`conntrack -L` filtered on the original destination lists every client flow of the service; the
reply direction's source is the VM the flow was DNAT'ed to, so the count survives map changes:
a draining VM's flows are counted here until the clients close them (or conntrack times them out).

UDP has no close: a finished flow's entry outlives it by up to the conntrack timeout (600 s), and a
client that reuses that source port for a new connection is steered by the entry, not by the map,
so it would reach a VM that has left (and may be destroyed) and time out. So once a VM out of the
map has no live flow left, its leftover entries are deleted (IPVS's `expire_nodest_conn`, by hand).
"""

from __future__ import annotations

from services.balancer.core.passthrough import L4Target, Plan, TableSpec
from services.balancer.core.passthrough_reading import count_flows
from services.balancer.l4.tool import ToolError, run_tool


def _service(spec: TableSpec) -> list[str]:
    """The service's flows: UDP to VIP:port (the family from the VIP)."""
    family = "ipv6" if spec.ip == "ip6" else "ipv4"
    return ["-f", family, "-p", "udp", "--orig-dst", spec.vip, "--orig-port-dst", str(spec.port)]


async def conntrack_lines(spec: TableSpec, plan: Plan, netns: str | None, tool: str = "conntrack") -> dict[str, int]:
    """Open (live) flows per member VM of the service (an empty table counts 0 for each)."""
    return count_flows(await run_tool([tool, "-L", *_service(spec)], netns), plan, spec)


async def expire_entries(spec: TableSpec, member: L4Target, netns: str | None, tool: str = "conntrack") -> None:
    """Delete every entry of the service DNAT'ed to `member` (none left is fine: conntrack exits 1 then)."""
    argv = [tool, "-D", *_service(spec), "--reply-src", member.address, "--reply-port-src", str(member.port)]
    try:
        await run_tool(argv, netns)
    except ToolError as error:
        if "0 flow entries" not in str(error):
            raise
