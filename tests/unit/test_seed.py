"""ops.seed's pure readers: nginx.conf's `# [h3]` lines and the units origin.ks writes."""

from __future__ import annotations

from ops.seed import KICKSTART, nginxconf
from ops.seed.kickstart import exec_start, units

SMALL = """worker_processes 1;
http {
    server {
        listen 8443 quic;  # [h3]
        listen 8443 ssl;
        http3 on;  # [h3]
        ssl_protocols TLSv1.3;
        add_header Alt-Svc 'h3=":8443"; ma=60' always;
        add_header QUIC-Status $quic always;  # [h3] => add_header QUIC-Status "" always;
        include /etc/nginx/quicfleet-vm.conf;
        return 200 "Server Address: $server_addr:$server_port";
    }
}
"""


def test_a_small_marked_file_holds() -> None:
    """One worker, QUIC beside TLS on 8443, Alt-Svc naming 8443: nothing to report."""
    assert nginxconf.problems(SMALL) == []


def test_the_copy_keeps_line_numbers_and_uses_the_replacement() -> None:
    """Marked lines become comments or their replacement on the same line; the others stay byte for byte."""
    copy = nginxconf.copy_for_old_nginx(SMALL).splitlines()
    assert len(copy) == len(SMALL.splitlines())
    assert copy[3] == "        # [h3] left out for nginx < 1.25: listen 8443 quic;"
    assert copy[8].startswith('        add_header QUIC-Status "" always;  # [h3] stands in for:')
    assert copy[4] == SMALL.splitlines()[4]


def test_several_workers_need_reuseport_on_each_quic_listener() -> None:
    """With `worker_processes auto` a QUIC listener without reuseport is reported."""
    found = nginxconf.problems(SMALL.replace("worker_processes 1;", "worker_processes auto;"))
    assert found == ["line 4: QUIC listener without `reuseport` while several workers run"]


def test_alt_svc_must_name_a_quic_port() -> None:
    """Alt-Svc pointing at a port nothing serves QUIC on is reported with the ports that do."""
    found = nginxconf.problems(SMALL.replace('h3=":8443"', 'h3=":443"'))
    assert found == ["line 8: Alt-Svc must name h3 on a QUIC listener's port (8443): "
                     "`add_header Alt-Svc 'h3=\":443\"; ma=60' always;`"]


def test_a_hash_inside_quotes_is_not_a_comment() -> None:
    """`#` in a quoted value is code, so a marker-like text there marks nothing."""
    assert nginxconf.split_comment("return 200 'a # [h3]'; # note") == ("return 200 'a # [h3]'; ", " note")


def test_a_quic_variable_in_an_unmarked_line_is_reported() -> None:
    """`$http3` outside a marked line would break nginx 1.22's parse of the copy: named with its line."""
    found = nginxconf.problems(SMALL.replace("ssl_protocols TLSv1.3;", "add_header X $http3 always;"))
    assert found[0] == "line 7: the $http3 or $quic variable without the `# [h3]` marker: `add_header X $http3 always;`"


def test_the_kickstart_units_are_read_as_systemd_reads_them() -> None:
    """The cert unit's continued ExecStart is one command; `%%` in the identity unit is a literal `%`."""
    found = units(KICKSTART.read_text())
    assert sorted(found) == ["quicfleet-cert.service", "quicfleet-identity.service"]
    cert = exec_start(found["quicfleet-cert.service"])
    assert cert[0] == "/usr/bin/openssl" and cert[-2:] == ["-out", "/etc/pki/nginx/server.crt"]
    identity = exec_start(found["quicfleet-identity.service"])
    assert identity[:2] == ["/bin/sh", "-c"] and 'x-quicfleet-vm %s always;' in identity[2]
