"""Header rules, the backend table and the load report built from it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.balancer.core.backends import BackendTable, split_address
from services.balancer.core.headers import TrustedProxies, end_to_end, forwarding, header_bytes, response_headers
from services.balancer.core.health import HealthPolicy
from services.balancer.core.reporting import build_report
from services.balancer.proxy.ids import new_request_id
from shared.contract.load import LATENCY_BOUNDS_S

ID = new_request_id()


def test_end_to_end_drops_hop_by_hop_pseudo_and_connection_listed_headers() -> None:
    """Hop-by-hop headers, pseudo-headers and those named in `connection` are removed, names lower-cased."""
    headers = [(b":path", b"/"), (b"Connection", b"close, X-Secret"), (b"X-Secret", b"1"),
               (b"Keep-Alive", b"5"), (b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"text/plain")]
    assert end_to_end(headers) == [(b"content-type", b"text/plain")]


def test_forwarding_appends_a_trusted_peer_to_its_chain() -> None:
    """From a trusted peer, x-forwarded-for keeps earlier hops and adds the peer; forwarded names peer and host."""
    proxies = TrustedProxies(["192.0.2.0/24"])
    chain = [(b"x-forwarded-for", b"10.0.0.1")]
    out = dict(forwarding(chain, "192.0.2.7", b"example.org", b"3 lb", proxies, fresh_id=ID))
    assert out[b"x-forwarded-for"] == b"10.0.0.1, 192.0.2.7"
    assert out[b"forwarded"] == b'for=192.0.2.7;proto=https;host="example.org"'
    assert out[b"via"] == b"3 lb" and out[b"x-forwarded-proto"] == b"https"


def test_forwarding_quotes_ipv6_clients() -> None:
    """An IPv6 client appears bracketed and quoted in `forwarded`."""
    out = dict(forwarding([], "::1", b"", b"3 lb", fresh_id=ID))
    assert out[b"forwarded"] == b'for="[::1]";proto=https'


def test_response_headers_add_status_via_and_backend_name() -> None:
    """The HTTP/3 response block starts with :status and carries via and the backend header."""
    out = response_headers(200, [(b"Connection", b"keep-alive"), (b"Server", b"nginx")], b"3 lb", b"vm-a")
    assert out == [(b":status", b"200"), (b"server", b"nginx"), (b"via", b"3 lb"), (b"x-quicfleet-backend", b"vm-a")]


def test_header_bytes_counts_like_qpack() -> None:
    """Header size is name + value + 32 per field."""
    assert header_bytes([(b"ab", b"cde")]) == 37


def test_split_address_handles_ipv6_and_port_override() -> None:
    """Addresses split into host and port; an override replaces the port; junk is refused."""
    assert split_address("[::1]:443") == ("::1", 443)
    assert split_address("10.0.0.5:443", 8080) == ("10.0.0.5", 8080)
    with pytest.raises(ValueError, match="host:port"):
        split_address("nonsense")


def test_table_candidates_exclude_draining_ejected_and_unhealthy() -> None:
    """Without panic, only backends that are not draining, not ejected and pass their checks are candidates."""
    table = BackendTable(HealthPolicy(fall=1, ejection_consecutive=1), panic_threshold=0)
    for vm in ("a", "b", "c", "d"):
        table.ready(vm, f"127.0.0.1:{9000 + ord(vm)}", now=0.0)
    table.drain("a")
    table.get("b").health.request_failed(1.0)  # type: ignore[union-attr]
    table.get("c").health.check_failed()  # type: ignore[union-attr]
    assert [b.vm for b in table.candidates(1.5)] == ["d"]


def test_ready_again_keeps_counters_and_ends_a_drain() -> None:
    """A VM announced ready at a new address keeps its counters and is no longer draining."""
    table = BackendTable(HealthPolicy())
    first = table.ready("a", "127.0.0.1:9000", now=0.0)
    first.began()
    first.ended(0.002, failed=True)
    table.drain("a")
    second = table.ready("a", "127.0.0.1:9001", now=1.0)
    assert second is not first and second.port == 9001
    assert (second.requests, second.errors, second.draining) == (1, 1, False)


def test_listed_backends_skip_slow_start() -> None:
    """A VM learned from the fleet listing at start gets a full share at once."""
    table = BackendTable(HealthPolicy(), slow_start_s=30)
    listed = table.ready("a", "127.0.0.1:9000", now=100.0, fresh=False)
    fresh = table.ready("b", "127.0.0.1:9001", now=100.0)
    assert listed.weight(100.0, 30) == 1.0 and fresh.weight(100.0, 30) < 0.1


def test_report_carries_counters_and_histogram() -> None:
    """The load report holds each backend's outstanding, requests, errors and latency buckets."""
    table = BackendTable(HealthPolicy())
    backend = table.ready("vm-a", "127.0.0.1:9000", now=0.0)
    for seconds, failed in ((0.0004, False), (0.003, False), (0.2, True)):
        backend.began()
        backend.ended(seconds, failed)
    backend.began()
    report = build_report("lb-1", "127.0.0.1:8443", datetime.now(UTC), 1.0, 7, table.backends.values(), 1.0)
    (load,) = report.backends
    assert (report.connections, load.outstanding, load.requests, load.errors) == (7, 1, 3, 1)
    assert sum(load.latency.counts) == 3 and len(load.latency.counts) == len(LATENCY_BOUNDS_S) + 1
    assert load.latency.counts[0] == 1 and load.latency.sum_s == pytest.approx(0.2034)
