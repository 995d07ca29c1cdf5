"""JetStream key-value helpers: buckets that hold desired state across restarts."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue


async def open_bucket(nc: NATS, bucket: str, history: int = 5, ttl_s: float | None = None) -> KeyValue:
    """Bind to a KV bucket, creating it (file storage) the first time."""
    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        config = KeyValueConfig(bucket=bucket, history=history, ttl=ttl_s, storage=StorageType.FILE)
        return await js.create_key_value(config)
