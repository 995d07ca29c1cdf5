"""The public and internal NATS contract: subjects and one pydantic model per subject."""
