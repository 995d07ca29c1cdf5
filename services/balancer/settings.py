"""Settings of the balancer service (QUICFLEET_* environment variables).

Every field is prefixed (`balancer_`, `listen_`, `upstream_`, `health_`, `ejection_`, `quic_`) so
one environment can hold the settings of all four services without clashes.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from shared.settings import ServiceSettings

Policy = Literal["p2c", "round_robin", "least_outstanding", "hash"]


class BalancerSettings(ServiceSettings):
    """The balancer's settings on top of the shared NATS and logging ones."""

    listen_host: str = Field("127.0.0.1", description="UDP address clients connect to.")
    listen_port: int = Field(8443, ge=0, le=65535, description="UDP port (0 picks a free one).")
    advertise_address: str | None = Field(None, description="host:port reported to metrics (default listen).")
    tls_cert: Path | None = Field(None, description="Certificate chain (PEM); a dev cert is made when unset.")
    tls_key: Path | None = Field(None, description="Private key (PEM) of tls_cert.")
    balancer_state_dir: Path = Field(Path(".run/balancer"), description="Where the dev certificate is kept.")
    balancer_workers: int = Field(1, ge=1, le=64, description="Processes sharing the UDP port (SO_REUSEPORT).")
    balancer_policy: Policy = Field("p2c", description="How a backend is chosen.")
    balancer_hash_key: str = Field("client", description="`client` (address) or a request header name.")
    balancer_slow_start_s: float = Field(10.0, ge=0, le=3600, description="Ramp-up window of a new VM.")
    balancer_retry_budget: float = Field(0.2, ge=0, le=1, description="Retries allowed as a share of requests.")
    balancer_backend_header: bool = Field(True, description="Add x-quicfleet-backend naming the VM.")
    balancer_report_interval_s: float = Field(1.0, gt=0, le=3600, description="Seconds between load reports.")
    balancer_list_window_s: float = Field(1.0, gt=0, le=30, description="How long to gather fleet lists.")
    upstream_protocol: Literal["http1", "http3"] = Field("http1", description="Protocol spoken to VMs.")
    upstream_tls: bool = Field(False, description="TLS on HTTP/1.1 upstream connections.")
    upstream_verify_tls: bool = Field(False, description="Verify backend certificates.")
    upstream_ca_file: str | None = Field(
        None, description="PEM bundle of the CAs that sign VM certificates (HTTP/1.1 TLS and HTTP/3); replaces the "
        "system CAs and turns verification on.",
    )
    upstream_server_name: str | None = Field(
        None, description="Name sent (SNI) and verified in VM certificates (unset: the VM's address)."
    )
    upstream_port: int | None = Field(None, ge=1, le=65535, description="Override the port of VM addresses.")
    upstream_pool_size: int = Field(64, ge=1, le=10_000, description="Idle HTTP/1.1 connections kept per VM.")
    upstream_connect_timeout_s: float = Field(2.0, gt=0, le=300)
    upstream_first_byte_timeout_s: float = Field(30.0, gt=0, le=3600)
    upstream_try_timeout_s: float = Field(
        10.0, ge=0, le=3600, description="First-byte timeout of a retryable first attempt (0: off)."
    )
    upstream_idle_timeout_s: float = Field(60.0, gt=0, le=3600)
    health_interval_s: float = Field(2.0, gt=0, le=3600)
    health_timeout_s: float = Field(1.0, gt=0, le=300)
    health_rise: int = Field(2, ge=1, le=100)
    health_fall: int = Field(2, ge=1, le=100)
    health_path: str = Field("/", pattern=r"^/[\x21-\x7e]*$", max_length=512)
    ejection_consecutive: int = Field(3, ge=1, le=1000, description="Failures in a row that eject a VM.")
    ejection_base_s: float = Field(5.0, gt=0, le=3600, description="First ejection; doubles each time.")
    ejection_max_s: float = Field(60.0, gt=0, le=86400)
    # edge: outlier detection on 5xx, panic, forwarding trust, request log, metrics
    ejection_consecutive_5xx: int = Field(
        5, ge=0, le=1000, description="5xx responses in a row that eject a VM (0: off); counted apart from failures."
    )
    balancer_panic_threshold: float = Field(
        0.5, ge=0, le=1, description="Usable share of non-draining VMs below which all of them get requests (0: off)."
    )
    balancer_trusted_proxies: str = Field(
        "", description="Comma-separated CIDRs whose x-forwarded-for/forwarded/x-request-id are kept (default: none)."
    )
    balancer_access_log: bool = Field(True, description="One `balancer.access` log line per finished request.")
    balancer_access_log_sample: float = Field(
        1.0, ge=0, le=1, description="Share of successful requests logged (5xx and resets always are)."
    )
    balancer_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="TCP port of Prometheus /metrics (unset: off; 0 picks a free one)."
    )
    balancer_metrics_host: str = Field(
        "127.0.0.1", description="Address of /metrics: loopback unless told otherwise (0.0.0.0: any scraper)."
    )
    balancer_metrics_port_span: int = Field(
        16, ge=1, le=1024,
        description="Ports tried from balancer_metrics_port on when it is taken (replicas of one host: the next free).",
    )
    balancer_identity_check: bool = Field(
        True, description="A VM announced with `identity` gets requests only while it sends its UUID (x-quicfleet-vm)."
    )
    listen_max_connections: int = Field(10_000, ge=1, le=1_000_000)
    listen_max_connections_per_ip: int = Field(
        1_000, ge=1, le=1_000_000,
        description="Connections one client address may hold at once (QUIC and TCP together); more are refused.",
    )
    balancer_memory_trim_s: float = Field(
        10.0, ge=0, le=86_400,
        description="Shortest time between two returns of freed memory to the OS after a connection storm (0: never).",
    )
    listen_max_streams_per_connection: int = Field(128, ge=1, le=100_000)
    listen_max_header_bytes: int = Field(16_384, ge=256, le=1_048_576)
    listen_max_body_bytes: int = Field(64 * 1024 * 1024, ge=0, le=2**40)
    listen_max_request_buffer_bytes: int = Field(
        1024 * 1024, ge=65_536, le=2**30, description="Request-body bytes buffered per request (QUIC credit)."
    )
    listen_idle_timeout_s: float = Field(60.0, gt=0, le=3600)
    listen_http_idle_timeout_s: float = Field(
        300.0, gt=0, le=86_400,
        description="A client connection with no request in flight this long gets GOAWAY and is closed, whatever "
        "PINGs keep it alive (HTTP/3; on TCP the shorter of this and listen_idle_timeout_s applies).",
    )
    listen_ipv4_prefix: int = Field(
        32, ge=8, le=32, description="IPv4 prefix length one client is counted under for the per-address cap."
    )
    listen_ipv6_prefix: int = Field(
        64, ge=16, le=128,
        description="IPv6 prefix length one client is counted under for the per-address cap (a host owns a /64).",
    )
    listen_max_resets_per_s: int = Field(
        100, ge=1, le=100_000,
        description="Streams one client connection may reset per second (HTTP/2 and HTTP/3, rapid reset "
        "CVE-2023-44487); beyond it the connection gets GOAWAY (ENHANCE_YOUR_CALM / H3_EXCESSIVE_LOAD) and is closed.",
    )
    listen_tcp: bool = Field(
        True, description="Also listen on TCP (TLS, HTTP/2 and HTTP/1.1) on the same port number, for browsers."
    )
    listen_alt_svc_max_age_s: int = Field(
        86_400, ge=0, le=31_536_000, description="How long browsers may keep the HTTP/3 Alt-Svc of a TCP answer."
    )
    listen_tcp_handshake_timeout_s: float = Field(10.0, gt=0, le=300, description="TLS handshake limit on TCP.")
    quic_engine: Literal["aioquic", "qh3"] = Field(
        "aioquic", description="QUIC library: aioquic (pure Python), or qh3 (Rust core; extra `quicfleet[qh3]`)."
    )
    quic_retry: Literal["always", "threshold"] = Field("threshold", description="When to demand Retry.")
    quic_retry_threshold: int = Field(256, ge=0, le=1_000_000, description="Half-open handshakes before Retry.")
    quic_ack_delay_ms: float = Field(1.0, ge=0, le=25, description="Longest delay of a QUIC ACK (aioquic: 1).")
    quic_ack_with_response: bool = Field(True, description="Put a pending ACK on the response packet.")
    quic_coalesce_ms: float = Field(1.0, ge=0, le=25, description="Longest wait for a response to share a packet.")
    quic_max_datagram_size: int = Field(1350, ge=1200, le=65_000)
    quic_steering: bool = Field(
        True, description="Connection-ID steering: processes sharing the port forward each other's packets."
    )
    quic_lb_node: int = Field(
        0, ge=0, le=255, description="Node id in issued connection IDs (one per host behind a QUIC-LB router)."
    )
    quic_lb_config_id: int = Field(0, ge=0, le=6, description="QUIC-LB config rotation bits of issued IDs.")
    quic_steering_dir: Path | None = Field(
        None, description="Private (0700) directory of the steering sockets of the processes on one port; default "
        "/run/quicfleet/steering as root, else $XDG_RUNTIME_DIR/quicfleet/steering, else <balancer_state_dir>/steering."
    )

    balancer_hosts: str = Field(
        "", description="Comma-separated provisioner hosts whose VMs this balancer serves (unset: every host's). An "
        "l4 balancer must name its own host: its kernel can forward only to the VMs it routes to.",
    )
    balancer_mode: Literal["l7", "l4"] = Field(
        "l7", description="`l7`: terminate QUIC and proxy requests; `l4`: program the host's kernel (nftables DNAT and "
        "conntrack) to pass clients' QUIC to the VMs untouched (see docs/services/balancer.md, L4 passthrough).",
    )
    balancer_l4_netns: str | None = Field(
        None, description="l4: the netns whose kernel is programmed (unset: the balancer's own; the lab, tests)."
    )
    balancer_l4_address: str | None = Field(
        None, description="l4: the virtual address clients reach (the VIP, one of this host's; unset: listen_host)."
    )
    balancer_l4_buckets: int = Field(
        256, ge=1, le=65536, description="l4: hash buckets of the map; more spread new flows more evenly over the VMs."
    )
    balancer_l4_conntrack_timeout_s: int = Field(
        600, ge=10, le=86400, description="l4: how long conntrack keeps a silent flow on its VM. Must be longer than "
        "the VMs' QUIC idle timeout, or a live but quiet connection is re-hashed to another VM; a drain also waits "
        "up to this long after a VM's last packet (UDP has no close a router can see).",
    )
    balancer_l4_vm_network: str | None = Field(
        None, description="l4: the VMs' subnet (CIDR): no UDP from it on a VM's service port leaves un-NATed (unset: "
        "only the VMs in the map are guarded).",
    )
    balancer_l4_flow_live_s: int = Field(
        30, ge=1, le=3600, description="l4: a flow counts as open (drains, reports, the scaler's flows signal) while a "
        "packet passed within this many seconds; UDP has no close the kernel sees. Set it to the VMs' QUIC idle "
        "timeout (a drain then ends this long after its last flow's last packet, or at its deadline).",
    )
    balancer_l4_sync_interval_s: float = Field(
        0.2, gt=0, le=60, description="l4: seconds between two syncs of the VM map and reads of the per-VM flows."
    )
    balancer_l4_client_ifaces: str = Field(
        "", description="l4: comma-separated client-facing interfaces for connection-ID learning (unset: every "
        "interface but balancer_l4_vm_iface and lo).",
    )
    balancer_l4_vm_iface: str = Field(
        "virbr0", description="l4: the bridge the VMs are on (connection-ID learning watches their answers there)."
    )
    balancer_l4_cid_length: int = Field(
        20, ge=4, le=20, description="l4: length of the VMs' server connection IDs, learned by the tc program (a "
        "property of the template's QUIC server: nginx 20, aioquic 8, quic-go 4).",
    )
    balancer_l4_bpf_object: Path | None = Field(
        None, description="l4: the connection-ID learning program (unset: deploy/bpf/build/quic_cid.o of a source "
        "tree, else /opt/quicfleet/lib/bpf/quic_cid.o; missing: l4 runs without learning and says so at start).",
    )

    @field_validator("balancer_trusted_proxies")
    @classmethod
    def _cidrs_ok(cls, value: str) -> str:
        for cidr in value.split(","):
            if cidr.strip():
                ipaddress.ip_network(cidr.strip(), strict=False)  # ValueError names the bad entry
        return value

    @property
    def trusted_proxies(self) -> list[str]:
        """The trusted CIDRs as a list."""
        return [c.strip() for c in self.balancer_trusted_proxies.split(",") if c.strip()]

    @property
    def advertised(self) -> str:
        """The address reported to the fleet (where clients should connect)."""
        return self.advertise_address or f"{self.listen_host}:{self.listen_port}"
