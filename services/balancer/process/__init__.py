"""The process around the data plane: what a balancer process runs beside its requests.

- `workers`: extra processes sharing the UDP port (SO_REUSEPORT), started and stopped with the parent.
- `telemetry`: the counters the data plane updates, rendered for Prometheus at scrape time.
- `endpoint`: the `/metrics` HTTP server (loopback by default, the next free port when taken).
- `reclaim`: giving memory back to the OS after a connection storm.
- `sockets`: socket options of the UDP sockets.
"""
