"""The balancer's sans-I/O core: pure decisions that take `now` and never touch a socket or clock.

- Backends: `backends` (the table: membership, drains, health, slow start, panic), `health`,
  `identity`, `policy` (p2c, round robin, least outstanding, hash), `drain`, `retry`, `reporting`.
- Requests: `request` (the one request model), `fields` and `fieldsize` (field grammar and the
  decoded-size limit), `intake` (a header block into an upstream request or a refusal),
  `headers` (hop-by-hop, forwarding, via), `framing` (upstream body framing), `upstream` (the
  port an upstream implements).
- Clients: `admission` (who may open a connection), `resets` (rapid-reset budget), `options`
  (knobs from settings), `trim` (when to give memory back).
"""
