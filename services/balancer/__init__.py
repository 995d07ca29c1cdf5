"""quicfleet's balancer: HTTP/3 (and TLS on TCP for browsers) in front of the fleet's VMs.

Its rooms, front to back:

- `core/`: the pure decisions (backend table, policies, health, drains, retry budget,
  admission, request model, headers, framing); they take `now` and touch no socket or clock.
- `quic/`: the QUIC front on UDP, behind the engine seam (aioquic or qh3).
- `tcp/`: the TLS front on TCP for browsers (HTTP/2, HTTP/1.1), answers carrying Alt-Svc.
- `steering/`: connection-ID steering between the processes that share the UDP port.
- `proxy/`: the middle: a request's exchange, the router that chooses and accounts,
  membership (VM events into the table) and the access log.
- `upstream/`: the back: HTTP/1.1 and HTTP/3 connections to VMs, health and identity checks.
- `process/`: the process around them: worker processes, telemetry and its `/metrics`
  endpoint, memory reclaim, socket options.
- `bootstrap`: the composition root: settings into built parts (tests pass fakes here).
- `service`: the NATS side (fleet events, drains, load reports) and the start/stop order.
- `settings`: the QUICFLEET_* variables.
"""
