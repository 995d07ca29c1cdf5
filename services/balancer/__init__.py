"""quicfleet balancer service."""
