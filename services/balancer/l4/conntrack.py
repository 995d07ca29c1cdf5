"""Per-VM flows read from conntrack: the entries of the service (VIP:port) counted by the VM that answers.

`conntrack -L` filtered on the original destination lists every client flow of the service; the
reply direction's source is the VM the flow was DNAT'ed to, so the count survives map changes:
a draining VM's flows are counted here until the clients close them (or conntrack times them out).
"""

from __future__ import annotations

from services.balancer.core.passthrough import Plan, TableSpec
from services.balancer.core.passthrough_reading import count_flows
from services.balancer.l4.tool import run_tool


async def conntrack_lines(spec: TableSpec, plan: Plan, netns: str | None, tool: str = "conntrack") -> dict[str, int]:
    """Open (live) flows per member VM of the service (an empty table counts 0 for each)."""
    family = "ipv6" if spec.ip == "ip6" else "ipv4"
    argv = [tool, "-L", "-f", family, "-p", "udp", "--orig-dst", spec.vip, "--orig-port-dst", str(spec.port)]
    return count_flows(await run_tool(argv, netns), plan, spec)
