"""Operator tools: what drives quicfleet's processes rather than being one of them.

The `quicfleet` CLI (`ops.cli`), the local stack behind `quicfleet up` (`ops.stack`), the
network-namespace lab (`ops.lab`), the nats-server helper (`ops.natsserver`) and the
configuration reference generator (`ops.configdocs`). This package sits above `services/`: it may
start or import services; no service and nothing in `shared/` imports it
(`tests/unit/test_layers.py` checks).
"""
