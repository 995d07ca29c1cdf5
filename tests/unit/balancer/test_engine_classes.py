"""Each engine declares the balancer's classes on its library plainly; its client H3 layer bounds field sections."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.balancer.quic import ENGINES, load_engine
from services.balancer.quic.connection import ClientConnection
from services.balancer.quic.lifecycle import NEXT, Phase, moved
from services.balancer.quic.qpack import MAX_FIELD_SECTION_SIZE, REFUSED_REQUEST, BoundedFields
from services.balancer.quic.server import ProxyServer
from services.balancer.upstream.h3 import H3Client, HeadSafeH3
from shared.certs import make_self_signed


@pytest.mark.parametrize("name", ENGINES)
def test_the_engine_hands_out_classes_declared_in_its_module(name: str) -> None:
    """The server, its connections and the upstream client are classes of the engine's module, each a glue
    mixin on the library's own class (nothing is built at run time)."""
    engine = load_engine(name)  # type: ignore[arg-type]
    module = f"services.balancer.quic.{name}_engine"
    server, connection, upstream = engine.Server, engine.Server.protocol, engine.UpstreamClient
    assert {server.__module__, connection.__module__, upstream.__module__, connection.h3.__module__} == {module}
    assert issubclass(server, ProxyServer) and issubclass(server, engine.QuicServer)
    assert issubclass(connection, ClientConnection) and issubclass(connection, engine.QuicConnectionProtocol)
    assert issubclass(connection.h3, BoundedFields) and issubclass(connection.h3, engine.H3Connection)
    assert issubclass(upstream, H3Client) and issubclass(upstream.h3, HeadSafeH3)
    assert server.engine.name == connection.engine.name == upstream.engine.name == name


def test_importing_the_aioquic_engine_does_not_import_qh3() -> None:
    """qh3 is optional: the default engine loads without it."""
    code = "import sys, services.balancer.quic.aioquic_engine; sys.exit('qh3' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("name", ENGINES)
def test_the_client_h3_layer_advertises_the_limit_and_refuses_a_big_section_undecoded(
    name: str, tmp_path: Path
) -> None:
    """SETTINGS carry MAX_FIELD_SECTION_SIZE (the header limit) and no blocked streams; a section over the limit
    is not decoded: it reads as a stand-in request whose stream is marked too large."""
    engine = load_engine(name)  # type: ignore[arg-type]
    make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem")
    config = engine.QuicConfiguration(is_client=False, alpn_protocols=engine.H3_ALPN)
    config.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    quic = engine.QuicConnection(configuration=config, original_destination_connection_id=bytes(8))
    http = engine.Server.protocol.h3(quic, 4096)
    assert http._sent_settings[MAX_FIELD_SECTION_SIZE] == 4096 and http._blocked_streams == 0
    assert http._decode_headers(0, b"\x00\x00" + b"\x5f\x1d" * 2100) == REFUSED_REQUEST  # encoded over 4096
    assert http.too_large == {0}


def test_every_phase_can_reach_closed_and_wrong_moves_are_refused() -> None:
    """From each phase but CLOSED the connection can end; a move not in the table is a bug that raises."""
    assert all(Phase.CLOSED in NEXT[phase] or phase in (Phase.CLOSED,) or Phase.CLOSING in NEXT[phase]
               for phase in Phase)
    assert moved(Phase.HANDSHAKING, Phase.OPEN) is Phase.OPEN
    with pytest.raises(ValueError):
        moved(Phase.CLOSED, Phase.OPEN)
    with pytest.raises(ValueError):
        moved(Phase.REFUSED, Phase.OPEN)
