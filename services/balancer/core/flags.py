"""Response flags of the access log: what the balancer did to a request besides passing it on.

A 502 the balancer made and a 502 a VM sent look the same to a client; the access line's
`flags` tell them apart, as Envoy's `%RESPONSE_FLAGS%` and HAProxy's termination state do. The
codes are Envoy's where Envoy has one, so an operator who knows those reads these; `RT`, `UI`
and `BT` are quicfleet's own. Several flags join with commas in the order they happened: `UF,RT`
is a connect failure retried on another VM (which then answered), `UF,RT,UT` one whose retry
timed out too (a 504).
"""

from __future__ import annotations

from services.balancer.core.upstream import CONNECT, IDENTITY, INVALID, PROTOCOL, RESET, TIMEOUT

NO_VM = "UH"
"""No VM could take the request: the balancer answered 503 (Envoy: no healthy upstream)."""
RETRIED = "RT"
"""The attempt failed before any response byte and the request went to another VM."""
CLIENT_RESET = "DC"
"""The client reset the stream or went away before the response ended (Envoy: downstream termination)."""
CLIENT_BODY = "DPE"
"""The request body broke its declared length: 400, or a stream reset once the response began."""
BODY_TOO_LARGE = "BT"
"""The request body went over `listen_max_body_bytes`: 413."""
UPSTREAM_OVERFLOW = "UO"
"""The VM stopped taking the request body while the client kept sending: 503."""
FOR_REASON = {CONNECT: "UF", TIMEOUT: "UT", RESET: "UR", PROTOCOL: "UPE", INVALID: "UPE", IDENTITY: "UI"}
"""An upstream failure's flag by its reason: connect failed, timed out, reset by the VM, a response that
broke HTTP's rules, a VM that answered as another one."""


def with_flag(flags: str, flag: str) -> str:
    """`flags` with `flag` appended (comma-separated; on the failure paths only, so the cost is theirs)."""
    return f"{flags},{flag}" if flags else flag


def for_reason(reason: str) -> str:
    """The flag of an upstream failure reason (`UR` for a reason this table does not know)."""
    return FOR_REASON.get(reason, FOR_REASON[RESET])
