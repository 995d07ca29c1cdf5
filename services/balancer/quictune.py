"""The few aioquic internals the balancer tunes, kept in one place.

aioquic has no public knob for its ACK delay (it waits up to 1 ms before acknowledging, which
adds that much to every one-in-flight exchange for clients that wait for the ACK), no way to
put a pending ACK on an outgoing packet early, and no accessor for a stream's unacknowledged
backlog (needed for response backpressure). Both read or set private fields, so
they live here, guarded, and fall back to doing nothing if a future aioquic renames them.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.quic.connection import QuicConnection


def set_ack_delay(quic: QuicConnection, seconds: float) -> bool:
    """Set how long the connection may delay an ACK; False when this aioquic lacks the field."""
    if not hasattr(quic, "_ack_delay"):
        return False
    quic._ack_delay = seconds
    return True


def ack_with_next_packet(quic: QuicConnection, now: float) -> None:
    """Make a pending (delayed) ACK due now, so the packet about to be sent carries it.

    aioquic writes an ACK frame only once its delay expired, so a response sent within the
    delay leaves without one and a separate ACK-only packet follows later. Called just before
    sending a response, this puts the ACK on the response: one packet fewer per request, and
    the client learns at once that its request arrived.
    """
    spaces: dict[Any, Any] = getattr(quic, "_spaces", {})
    space = spaces.get(tls.Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and space.ack_at > now:
        space.ack_at = now


def stream_backlog(quic: QuicConnection, stream_id: int) -> int:
    """Bytes queued on a stream but not yet acknowledged by the peer (0 when unknown)."""
    streams: dict[int, Any] = getattr(quic, "_streams", {})
    stream = streams.get(stream_id)
    if stream is None:
        return 0
    buffer = getattr(stream.sender, "_buffer", b"")
    return len(buffer)
