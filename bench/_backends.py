"""Benchmark backends in their own process: an HTTP/1.1 server and/or an aioquic HTTP/3 server.

`python -m bench._backends --port P [--h1] [--h3] --workdir D` serves `Server Address: …` on TCP
and/or UDP port P (like a VM serving both on 443) until killed; prints `ready` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from services.balancer.sockets import grow_buffers
from tests.support.h1server import H1Backend
from tests.support.h3server import H3Backend


async def serve(args: argparse.Namespace) -> None:
    if args.h1:
        await H1Backend(port=args.port).start()
    if args.h3:
        h3 = H3Backend(Path(args.workdir), port=args.port)
        await h3.start()
        if h3._server is not None and h3._server._transport is not None:
            grow_buffers(h3._server._transport.get_extra_info("socket"), 4 * 1024 * 1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--h1", action="store_true")
    parser.add_argument("--h3", action="store_true")
    parser.add_argument("--workdir", default=".run/bench")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
