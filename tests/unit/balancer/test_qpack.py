"""The balancer's QPACK encoder never makes a client wait for a table entry, on either engine."""

from __future__ import annotations

from typing import Any

import pytest

from services.balancer.quic import ENGINES, load_engine
from services.balancer.quic.qpack import NonBlockingEncoder, safe_qpack

RESPONSE = [(b":status", b"200"), (b"via", b"3 quicfleet-a"), (b"x-quicfleet-backend", b"qf-1"),
            (b"content-length", b"27")]
PEER = {"max_table_capacity": 4096, "blocked_streams": 100}
"""What nghttp3 (h2load, curl) advertises: a table, and up to 100 streams that may block on it."""


def _h3(engine_name: str) -> Any:
    """An engine's H3 connection on a (client) QUIC core that never sends anything anywhere."""
    engine = load_engine(engine_name)  # type: ignore[arg-type]
    quic = engine.QuicConnection(configuration=engine.QuicConfiguration(is_client=True, alpn_protocols=["h3"]))
    return engine.H3Connection(quic)


def _encoder(engine_name: str) -> Any:
    """A fresh encoder of the kind the engine's H3 connection uses."""
    return type(_h3(engine_name)._encoder)()


def _apply(encoder: Any, engine_name: str) -> None:
    extra = {"dyn_table_capacity": PEER["max_table_capacity"]} if engine_name == "qh3" else {}
    encoder.apply_settings(**PEER, **extra)


def _required_insert_count(block: bytes) -> int:
    """The first byte of a header block: 0 when it references no dynamic-table entry."""
    return block[0]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_the_plain_encoder_references_entries_the_peer_may_not_have(engine_name: str) -> None:
    """Without the wrapper, a second response references fresh inserts (the case that fails nghttp3)."""
    encoder = _encoder(engine_name)
    _apply(encoder, engine_name)
    blocks = [encoder.encode(stream_id, RESPONSE)[1] for stream_id in (0, 4, 8)]
    assert any(_required_insert_count(block) for block in blocks)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_the_wrapped_encoder_references_no_unacknowledged_entry(engine_name: str) -> None:
    """Wrapped, no response before any acknowledgment references the table, yet inserts still go out."""
    encoder = NonBlockingEncoder(_encoder(engine_name))
    _apply(encoder, engine_name)
    results = [encoder.encode(stream_id, RESPONSE) for stream_id in (0, 4, 8)]
    assert [_required_insert_count(block) for _, block in results] == [0, 0, 0]
    assert sum(len(inserts) for inserts, _ in results) > 0


@pytest.mark.parametrize("engine_name", ENGINES)
def test_safe_qpack_wraps_an_h3_connections_encoder(engine_name: str) -> None:
    """`safe_qpack` replaces the encoder of a real H3 connection of the engine; a thing without one is left alone."""
    http = _h3(engine_name)
    assert safe_qpack(http)
    assert isinstance(http._encoder, NonBlockingEncoder)
    assert not safe_qpack(object())
