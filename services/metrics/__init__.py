"""quicfleet's metrics: one view of the fleet's load for the scaler, Prometheus and people.

Flat, as it is small. The core: `state` (advanced once per tick) over `aggregate` (balancer
reports into per-VM load), `window` (one balancer run's reports over the window), `fleet` (VM states, history,
decisions) and `rejections` (rejected-input counts gathered from every service). The views:
`exposition` (Prometheus), `dashboard` (the page's JSON), `http` (aiohttp: `/metrics`,
`/healthz`, the dashboard, `static/`). `bootstrap` builds the parts; `service` is the NATS side
and the tickers; `settings` the QUICFLEET_* variables.
"""
