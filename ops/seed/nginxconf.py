"""The origin's nginx.conf: its HTTP/3 lines checked by hand, the rest made parseable by an nginx without HTTP/3.

Debian's nginx (1.22) has no HTTP/3, so `nginx -t` there rejects `listen ... quic` and everything after it. The
file therefore marks every line that needs nginx >= 1.25 with its HTTP/3 module with a trailing `# [h3]`
comment, optionally `# [h3] => <directive>;` naming what an older nginx gets instead. `copy_for_old_nginx`
writes what 1.22 parses (marked lines left out or replaced, line numbers kept, so nginx -t's messages point at
the real file); `problems` checks what 1.22 cannot: each marked line is well formed, no HTTP/3 line is
unmarked (it would break the copy) and no marker hides an ordinary line, and the origin's contract holds (a
QUIC listener beside each TLS one, `http3 on`, Alt-Svc naming the QUIC port, QUIC-Status, TLS 1.3, the
Server Address body). Pure: text in, text out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER = "[h3]"
ARROW = "=>"

H3_TOKENS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a QUIC listener", re.compile(r"^listen\s[^;]*\bquic\b")),
    ("an http3 directive", re.compile(r"^http3(_\w+)?\s")),
    ("a quic_* directive", re.compile(r"^quic_\w+\s")),
    ("the $http3 or $quic variable", re.compile(r"\$\{?(http3|quic)\b")),
    ("`http2 on` (the nginx >= 1.25.1 spelling)", re.compile(r"^http2\s")),
)
"""What an nginx without the HTTP/3 module rejects; each is allowed only on a marked line."""

_ON_OFF = r"(on|off)"
_ADDRESS = r"(\[[0-9A-Fa-f:]+\]:|[\w.*-]+:)?(?P<port>\d+)"
WELL_FORMED: dict[str, re.Pattern[str]] = {
    "listen": re.compile(rf"listen {_ADDRESS} quic( (reuseport|default_server|bind|ipv6only={_ON_OFF}"
                         r"|backlog=\d+|rcvbuf=\w+|sndbuf=\w+))*;"),
    "http3": re.compile(rf"http3 {_ON_OFF};"),
    "http3_hq": re.compile(rf"http3_hq {_ON_OFF};"),
    "http3_max_concurrent_streams": re.compile(r"http3_max_concurrent_streams \d+;"),
    "http3_stream_buffer_size": re.compile(r"http3_stream_buffer_size \d+[kKmM]?;"),
    "http2": re.compile(rf"http2 {_ON_OFF};"),
    "quic_retry": re.compile(rf"quic_retry {_ON_OFF};"),
    "quic_gso": re.compile(rf"quic_gso {_ON_OFF};"),
    "quic_bpf": re.compile(rf"quic_bpf {_ON_OFF};"),
    "quic_host_key": re.compile(r"quic_host_key \S+;"),
    "quic_active_connection_id_limit": re.compile(r"quic_active_connection_id_limit \d+;"),
    "add_header": re.compile(r"add_header [\w-]+ (\"[^\"]*\"|'[^']*'|\S+)( always)?;"),
}
"""The exact shape each HTTP/3 directive may take (nginx 1.25's ngx_http_v3_module and listen parameters)."""


@dataclass(frozen=True)
class Line:
    """One line of nginx.conf: its directive (comment and surrounding blanks cut off) and its marker, if any."""

    number: int
    indent: str
    code: str
    marked: bool
    replacement: str | None


def split_comment(raw: str) -> tuple[str, str]:
    """Code and comment of one line; a `#` inside quotes (the Alt-Svc value has none, but it could) is code."""
    quote = ""
    for index, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            return raw[:index], raw[index + 1:]
    return raw, ""


def parse(text: str) -> list[Line]:
    """Every line of the file, numbered from 1 as nginx numbers them."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        code, comment = split_comment(raw)
        note = comment.strip()
        marked = note.startswith(MARKER)
        rest = note.removeprefix(MARKER).strip() if marked else ""
        replacement = rest.removeprefix(ARROW).strip() if rest.startswith(ARROW) else None
        indent = raw[:len(raw) - len(raw.lstrip())]
        lines.append(Line(number, indent, " ".join(code.split()), marked, replacement))
    return lines


def h3_token(code: str) -> str | None:
    """What makes this directive HTTP/3-only, or None for one any nginx parses."""
    return next((what for what, pattern in H3_TOKENS if pattern.search(code)), None)


def copy_for_old_nginx(text: str) -> str:
    """The file as an nginx without HTTP/3 parses it: marked lines replaced or left out, numbering kept."""
    out = []
    for line in parse(text):
        if not line.marked:
            out.append(text.splitlines()[line.number - 1])
        elif line.replacement:
            out.append(f"{line.indent}{line.replacement}  # {MARKER} stands in for: {line.code}")
        else:
            out.append(f"{line.indent}# {MARKER} left out for nginx < 1.25: {line.code}")
    return "\n".join(out) + "\n"


def marker_problems(line: Line) -> list[str]:
    """A marked line must be one well-formed HTTP/3 directive; a replacement must be plain HTTP/1 nginx."""
    where = f"line {line.number}"
    if not line.marked:
        token = h3_token(line.code)
        return [f"{where}: {token} without the `# {MARKER}` marker: `{line.code}`"] if token else []
    if not h3_token(line.code):
        return [f"{where}: `# {MARKER}` on a line that needs no HTTP/3 (nginx -t would never see it): `{line.code}`"]
    name = line.code.split(" ", 1)[0]
    shape = WELL_FORMED.get(name)
    found = [] if shape and shape.fullmatch(line.code) else [f"{where}: malformed HTTP/3 directive: `{line.code}`"]
    if line.replacement is not None and (h3_token(line.replacement) or not line.replacement.endswith(";")):
        found.append(f"{where}: the replacement must be one directive without HTTP/3: `{line.replacement}`")
    return found


def problems(text: str) -> list[str]:
    """Everything wrong with the file that nginx 1.22's `nginx -t` cannot see; empty when it holds."""
    lines = parse(text)
    found = [problem for line in lines for problem in marker_problems(line)]
    return found + contract_problems(lines)


def listen_addresses(lines: list[Line], parameter: str) -> dict[str, Line]:
    """`address:port` (or port) of each `listen` carrying `parameter` (`ssl` or `quic`)."""
    found = {}
    for line in lines:
        words = line.code.rstrip(";").split()
        if words[:1] == ["listen"] and len(words) > 1 and parameter in words[2:]:
            found[words[1]] = line
    return found


def port_of(address: str) -> str:
    """The port of a listen address (`443`, `[::]:443`, `10.0.0.1:443`)."""
    return address.rsplit(":", 1)[-1]


def contract_problems(lines: list[Line]) -> list[str]:
    """The origin's promises: QUIC beside TLS on each address, Alt-Svc naming its port, the headers and body."""
    tls, quic = listen_addresses(lines, "ssl"), listen_addresses(lines, "quic")
    found = [] if quic else ["no QUIC listener (`listen 443 quic reuseport;  # [h3]`)"]
    found += [f"line {line.number}: `{line.code}` has no QUIC listener on {address} beside it"
              for address, line in tls.items() if address not in quic]
    found += reuseport_problems(lines, quic)
    codes = {line.code: line for line in lines}
    found += [f"missing `{code}`" for code in REQUIRED if code not in codes]
    found += [f"line {codes[code].number}: `{code}` must carry `# {MARKER}`"
              for code in REQUIRED_MARKED if code in codes and not codes[code].marked]
    return found + alt_svc_problems(lines, {port_of(address) for address in quic})


REQUIRED = (
    "http3 on;",
    "add_header QUIC-Status $quic always;",
    "ssl_protocols TLSv1.3;",
    'return 200 "Server Address: $server_addr:$server_port";',
    "include /etc/nginx/quicfleet-vm.conf;",
)
"""Directives the origin's answers depend on (README: body, QUIC-Status, TLS 1.3, the x-quicfleet-vm include)."""
REQUIRED_MARKED = ("http3 on;", "add_header QUIC-Status $quic always;")


def reuseport_problems(lines: list[Line], quic: dict[str, Line]) -> list[str]:
    """With several workers, nginx steers a QUIC connection's packets to its worker only through reuseport."""
    single = any(line.code == "worker_processes 1;" for line in lines)
    return [] if single else [f"line {line.number}: QUIC listener without `reuseport` while several workers run"
                              for line in quic.values() if "reuseport" not in line.code.rstrip(";").split()]


ALT_SVC = re.compile(r"""add_header Alt-Svc '(?P<value>[^']*)' always;""")
ALT_SVC_PORT = re.compile(r'h3=":(?P<port>\d+)"')


def alt_svc_problems(lines: list[Line], quic_ports: set[str]) -> list[str]:
    """Alt-Svc must send clients to a port nginx really serves QUIC on (or they never upgrade to HTTP/3)."""
    headers = [(line, ALT_SVC.fullmatch(line.code)) for line in lines if line.code.startswith("add_header Alt-Svc")]
    if not headers:
        return ["missing `add_header Alt-Svc 'h3=\":443\"; ma=86400' always;`"]
    found = []
    for line, match in headers:
        ports = set(ALT_SVC_PORT.findall(match.group("value"))) if match else set()
        if not ports or not ports <= quic_ports:
            found.append(f"line {line.number}: Alt-Svc must name h3 on a QUIC listener's port "
                         f"({', '.join(sorted(quic_ports)) or 'none'}): `{line.code}`")
    return found
