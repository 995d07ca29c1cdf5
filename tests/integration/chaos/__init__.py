"""The reliability matrix's bad-input rows (B1-B5) against the real services; see tests/support/chaos.py."""
