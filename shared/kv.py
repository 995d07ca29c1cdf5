"""JetStream key-value helpers: buckets that hold desired state across restarts and NATS node losses.

A bucket is a stream (`KV_<bucket>`) with `replicas` copies, one per NATS node: with three
nodes and three replicas, desired size, policy and the leader lease survive the loss of any one
node. The replica count comes from `QUICFLEET_NATS_REPLICAS`; a bucket made before it was raised
is raised in place (JetStream copies the data to the new peers), never lowered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from dataclasses import replace
from typing import TypeVar

import structlog
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig, StorageType, StreamInfo
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from shared.settings import SettingsError

log = structlog.get_logger("shared.kv")
T = TypeVar("T")

PLACEMENT_ERRORS = frozenset({10005, 10023, 10074})
"""JetStream's answers when it cannot place the copies: no suitable peers (fewer servers up than
replicas), insufficient resources, replicas > 1 on a server that is not clustered."""
JETSTREAM_WAIT_S = 30.0
"""How long to wait for JetStream to answer at start (a cluster electing its meta leader)."""
PROBE_KEY = "quicfleet-probe"
"""A key read (never written) to learn that a bucket answers."""
PROBE_TIMEOUT_S = 0.5


class ReplicasUnavailable(SettingsError):
    """NATS cannot keep the copies `QUICFLEET_NATS_REPLICAS` asks for: a setting to fix.

    The service exits 2, as for any refused setting, so `quicfleet up` leaves it down with the
    message instead of restarting it in a loop; nothing waits for peers that will not come.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 2


def stream_name(bucket: str) -> str:
    """The stream behind a KV bucket (nats-py's and the server's naming)."""
    return f"KV_{bucket}"


def placement_problem(bucket: str, want: int, error: APIError) -> str | None:
    """Words for a failure to place `want` copies of `bucket`, or None when `error` is something else."""
    if error.err_code not in PLACEMENT_ERRORS:
        return None
    return (f"JetStream cannot keep {want} replicas of KV bucket {bucket!r}: {error.description} "
            f"(err_code {error.err_code}). Set QUICFLEET_NATS_REPLICAS to at most the number of JetStream "
            "servers in the NATS cluster (1 for a single server); a bucket is made or raised only while "
            "that many servers are up.")


async def open_bucket(
    nc: NATS, bucket: str, history: int = 5, ttl_s: float | None = None, replicas: int = 1
) -> KeyValue:
    """Bind to a KV bucket with at least `replicas` copies, creating it (file storage) the first time.

    Raises `ReplicasUnavailable` when NATS cannot hold that many copies.
    """
    js = nc.jetstream()
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((ServiceUnavailableError, NatsTimeoutError)),
        stop=stop_after_delay(JETSTREAM_WAIT_S), wait=wait_exponential_jitter(multiplier=0.2, max=2), reraise=True,
        before_sleep=lambda state: log.warning("kv.jetstream_unavailable", bucket=bucket,
                                               attempt=state.attempt_number),
    ):
        with attempt:
            try:
                info = await js.stream_info(stream_name(bucket))
            except NotFoundError:
                config = KeyValueConfig(
                    bucket=bucket, history=history, ttl=ttl_s, storage=StorageType.FILE, replicas=replicas
                )
                kv = await _placed(bucket, replicas, js.create_key_value(config))
            else:
                await _ensure_replicas(js, bucket, info, replicas)
                kv = await js.key_value(bucket)
            await _answering(nc, bucket)
            return kv
    raise AssertionError("unreachable")  # pragma: no cover


async def _answering(nc: NATS, bucket: str) -> None:
    """Return once the bucket answers a read (each try waits at most PROBE_TIMEOUT_S).

    When two replicas of a service create a replicated bucket at the same moment, JetStream drops
    the first read that follows on the slower one (measured: one lost request, then answers): with
    the default 5 s timeout that read would fail the service's start.
    """
    probe = await nc.jetstream(timeout=PROBE_TIMEOUT_S).key_value(bucket)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(NatsTimeoutError), stop=stop_after_delay(JETSTREAM_WAIT_S), reraise=True,
    ):
        with attempt, contextlib.suppress(KeyNotFoundError):
            await probe.get(PROBE_KEY)


async def _ensure_replicas(js: JetStreamContext, bucket: str, info: StreamInfo, want: int) -> None:
    """Raise an existing bucket's copies to `want` (one warning line says it); never lower them."""
    have = info.config.num_replicas or 1
    if have >= want:
        return
    log.warning("kv.too_few_replicas", bucket=bucket, have=have, want=want)
    await _placed(bucket, want, js.update_stream(replace(info.config, num_replicas=want)))
    log.info("kv.replicas_raised", bucket=bucket, replicas=want)


async def _placed(bucket: str, want: int, request: Awaitable[T]) -> T:
    """Await a create or update, turning a placement refusal into `ReplicasUnavailable`."""
    try:
        return await request
    except APIError as error:
        problem = placement_problem(bucket, want, error)
        if problem is None:
            raise
        log.error("kv.replicas_unavailable", bucket=bucket, want=want, error=problem)
        raise ReplicasUnavailable(problem) from None
