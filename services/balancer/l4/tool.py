"""Running the kernel's command-line tools (nft, conntrack) from the event loop, in a namespace if set."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence

TOOL_TIMEOUT_S = 10.0


class ToolError(RuntimeError):
    """A tool failed or hung; the message names the command and holds its stderr."""


async def run_tool(argv: Sequence[str], netns: str | None, stdin: str = "") -> str:
    """Run a tool (inside `netns` through `ip netns exec` when set) and return its stdout."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    # stdin from a file, not a pipe: uvloop's "pipes" are sockets, which `nft -f -` cannot open as /dev/stdin (ENXIO)
    with tempfile.TemporaryFile() as source:
        source.write(stdin.encode())
        source.seek(0)
        try:
            process = await asyncio.create_subprocess_exec(
                *full, stdin=source, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except FileNotFoundError:
            raise ToolError(f"{full[0]} not found: install Debian's nftables, conntrack and iproute2") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(), TOOL_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ToolError(f"{' '.join(full)} timed out") from None
    if process.returncode != 0:
        raise ToolError(f"{' '.join(full)} failed ({process.returncode}): {err.decode(errors='replace')[:400]}")
    return out.decode(errors="replace")
