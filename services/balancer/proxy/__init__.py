"""The middle of the balancer: from a client's request to a VM's answer and back.

- `exchange`: one proxied request, client stream on one side and an upstream call on the other;
  it owns its retry decision.
- `router`: chooses a backend, keeps the books (in flight, drains, retry budget, telemetry).
- `membership`: the provisioner's VM events and fleet listing applied to the backend table.
- `accesslog`: one structured line per finished request, written off the request path.
- `ids`: request ids, the one place a request's randomness is drawn.
"""
