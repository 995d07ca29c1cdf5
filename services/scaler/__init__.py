"""quicfleet scaler service."""
