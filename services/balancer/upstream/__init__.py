"""The back of the balancer: connections to VMs.

- `h1`: pooled HTTP/1.1 (TLS or clear) keep-alive connections, one pool per VM.
- `h3`: one multiplexed HTTP/3 connection per VM on the chosen QUIC engine.
- `checks`: the active health and identity checks, through the same upstreams.

What the proxy needs of an upstream (`Upstream`, `Sink`, `Call`) is a port in `core.upstream`.
"""
