"""quicfleet metrics service."""
