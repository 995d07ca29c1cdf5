"""quicfleet provisioner service."""
