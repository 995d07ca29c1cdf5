"""NATS authorisation: one user per service and one for operators, each allowed its own subjects only.

The permission table is derived from `Subjects` (a renamed subject or another prefix cannot drift
from what the services use) and rendered into nats-server's `authorization { users = [...] }`
block. Every user gets its own reply prefix (`_INBOX_<role>`), so none may subscribe to
`_INBOX.>` and read the replies meant for another; responders get `allow_responses`, which lets
them answer a request without being allowed to publish anywhere else.

Passwords are random (`secrets`), made once per directory and reused, so a restarted NATS or
service still logs in; the server's block holds only their bcrypt hashes, and is rendered again
from the passwords at every start. An auth directory holds:

    <role>/password       one line, 0600 (0444 with --shared-volumes: compose gives each service
                          only its own volume, so the volume is the fence)
    route/password        the secret cluster nodes use on their routes (`up --nats-cluster`)
    authorization.conf    the server block, 0600

`python -m ops.natsauth DIR` is compose's one-shot `nats-auth` service (`--off`: an empty block).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from shared.contract.subjects import Subjects

SERVICE_ROLES = ("balancer", "metrics", "scaler", "provisioner")
OPERATOR = "operator"
"""The CLI and dashboards: commands to the scaler, the public events, health pings."""
ROLES = (*SERVICE_ROLES, OPERATOR)
ROUTE = "route"
"""Not a client: the user cluster nodes present to each other on their routes."""
SCALER_BUCKET = "quicfleet_scaler"
"""The scaler's KV bucket (ScalerSettings.scaler_bucket's default)."""
AUTH_FILE = "authorization.conf"
PASSWORD_FILE = "password"
BCRYPT_COST = 6
"""nats-server checks the hash on every connect (cost 10 measured 130 ms a connect here, cost 6 a few). A
high cost slows the guessing of a weak human password; ours are 256 random bits, which no guessing
reaches at any cost, so the hash only has to hide them, and every CLI command and reconnect stays fast."""
_ANY_HOST = "QUICFLEETANYHOST"
NODE_INCLUDE = "../nats.conf"
"""From the auth volume (/etc/quicfleet/auth) to the image's config (/etc/quicfleet/nats.conf)."""
SRV_STATS = "$SRV.STATS"
"""Every micro service's counters: metrics gathers the rejected-input counts from them."""
JS_INFO = "$JS.API.INFO"
"""JetStream account info: `quicfleet health nats` (every container's healthcheck may run it)."""


def inbox_prefix(role: str) -> str:
    """A user's own reply prefix: nats-py's `inbox_prefix`, and what its permissions allow."""
    return f"_INBOX_{role}"


@dataclass(frozen=True)
class Permissions:
    """What one user may publish and subscribe to; `responds`: it may answer requests it receives."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responds: bool


def permission_table(subjects: Subjects, bucket: str = SCALER_BUCKET) -> dict[str, Permissions]:
    """Every role's permissions, from the subjects each service really uses (see each service's on_start)."""
    s = subjects
    prov_commands = [s.prov_create, _any_host(s.prov_create_on), _any_host(s.prov_destroy), _any_host(s.prov_drain)]
    templates = [_any_host(s.prov_template_push), _any_host(s.prov_template_retire), s.prov_template_list]
    """What `quicfleet template push/retire/list` sends; protecting a version is the rollout's (the scaler's)."""
    commands = [s.cmd_status, s.cmd_scale, s.cmd_policy, s.cmd_drain, s.cmd_rollout_start, s.cmd_rollout_pause,
                s.cmd_rollout_resume, s.cmd_rollout_abort, s.cmd_rollout_status]
    return {
        "balancer": _service("balancer", [s.prov_list, s.balancer_report, s.balancer_drained], [s.vm_all]),
        "metrics": _service("metrics", [s.load, SRV_STATS],
                            [s.balancer_report, s.vm_all, s.scaler_decision, s.scaler_state, s.scaler_forecast]),
        "scaler": _service(
            "scaler",
            [*prov_commands, s.prov_list, s.scaler_state, s.scaler_decision, s.scaler_forecast, s.scaler_rollout,
             _any_host(s.prov_template_protect), *kv_api(bucket)],
            [*commands, s.vm_all, s.load, s.balancer_report, s.balancer_drained, s.scaler_state, s.scaler_rollout],
        ),
        "provisioner": _service("provisioner", [s.vm_all, s.template_ready, s.template_retired],
                                [*prov_commands, s.prov_list, *templates, _any_host(s.prov_template_protect)]),
        OPERATOR: Permissions(
            publish=(*commands, *templates, "$SRV.>", JS_INFO, f"{inbox_prefix(OPERATOR)}.>"),
            subscribe=(s.vm_all, s.scaler_decision, s.scaler_forecast, s.scaler_rollout, s.load, s.scaler_state,
                       s.template_ready, s.template_retired, f"{inbox_prefix(OPERATOR)}.>"),
            responds=False,
        ),
    }


def _service(name: str, publish: Sequence[str], subscribe: Sequence[str]) -> Permissions:
    """A service's own subjects, plus what every service needs: its micro endpoints (`$SRV.PING`,
    `INFO`, `STATS`, for all and by its own name), a health ping, and its own inbox."""
    inbox = f"{inbox_prefix(name)}.>"
    micro = ("$SRV.*", f"$SRV.*.{name}", f"$SRV.*.{name}.*")
    return Permissions(publish=(*publish, "$SRV.PING", JS_INFO, inbox), subscribe=(*subscribe, *micro, inbox),
                       responds=True)


def kv_api(bucket: str) -> tuple[str, ...]:
    """The JetStream API subjects that open, raise, read and write one KV bucket (shared/kv.py)."""
    stream = f"KV_{bucket}"
    verbs = ("INFO", "CREATE", "UPDATE", "MSG.GET")
    return (*(f"$JS.API.STREAM.{verb}.{stream}" for verb in verbs), f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>", f"$KV.{bucket}.>")


def _any_host(build: Callable[[str], str]) -> str:
    """A per-host subject with `*` for the host token (any provisioner's host)."""
    return ".".join("*" if token == _ANY_HOST else token for token in build(_ANY_HOST).split("."))


def render_users(passwords: Mapping[str, str], table: Mapping[str, Permissions]) -> str:
    """nats-server's `authorization` block: each role's user, password (or its hash) and permissions."""
    lines = ["authorization {", "  users = ["]
    for role, allowed in table.items():
        permissions = (f"publish: {{allow: {_list(allowed.publish)}}}, "
                       f"subscribe: {{allow: {_list(allowed.subscribe)}}}")
        if allowed.responds:
            permissions += ", allow_responses: true"
        lines.append(f"    {{user: {json.dumps(role)}, password: {json.dumps(passwords[role])}, "
                     f"permissions: {{{permissions}}}}}")
    return "\n".join([*lines, "  ]", "}", ""])


def _list(subjects: Sequence[str]) -> str:
    """A NATS config list of quoted strings (quoted: `$` would otherwise start a variable)."""
    return "[" + ", ".join(json.dumps(subject) for subject in subjects) + "]"


def table_markdown(table: Mapping[str, Permissions]) -> str:
    """The table as docs/operations.md shows it (a unit test keeps the two equal)."""
    lines = ["| user | may publish | may subscribe | answers requests |", "|---|---|---|---|"]
    for role, allowed in table.items():
        cells = [role, _cell(allowed.publish), _cell(allowed.subscribe), "yes" if allowed.responds else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(subjects: Sequence[str]) -> str:
    return " ".join(f"`{subject}`" for subject in subjects)


def route_block(name: str, listen: str, peers: Sequence[str], secret: str | None) -> str:
    """A node's `cluster` block: its route listener and routes to `peers` (`host:port`), with `secret` both
    demanded of the routes it accepts and presented on the ones it makes.

    A route carries every message of every user: an open route port, even on loopback, lets any local
    process read and publish everything, past the client permissions. (A `--cluster` flag on the
    command line would drop the authorization, so the whole block lives in the config.)
    """
    login = f"{ROUTE}:{secret}@" if secret else ""
    routes = ", ".join(json.dumps(f"nats-route://{login}{peer}") for peer in peers)
    auth = f"\n  authorization {{ user: {ROUTE}, password: {json.dumps(secret)} }}" if secret else ""
    return f"""
cluster {{
  name: {name}
  listen: {json.dumps(listen)}{auth}
  routes: [{routes}]
}}
"""


def node_configs(routes: Sequence[str], secret: str, cluster: str = "quicfleet") -> list[str]:
    """compose.cluster.yaml's node configs (`node-<i>.conf` beside the image's nats.conf): the image's
    config, then node i's routed, authorised cluster block."""
    return [f'include "{NODE_INCLUDE}"\n' + route_block(cluster, me, [p for p in routes if p != me], secret)
            for me in routes]


def client_env(role: str, directory: Path) -> dict[str, str]:
    """The variables that log a service (or the CLI) in as `role` with the password in `directory`."""
    return {
        "QUICFLEET_NATS_USER": role,
        "QUICFLEET_NATS_PASSWORD_FILE": str(directory / role / PASSWORD_FILE),
        "QUICFLEET_NATS_INBOX_PREFIX": inbox_prefix(role),
    }


# --- the files --------------------------------------------------------------------------------


def new_secret() -> str:
    """A random password: 256 bits, URL-safe (it goes into route URLs too), under bcrypt's 72 bytes."""
    return secrets.token_urlsafe(32)


def hash_password(secret: str) -> str:
    """The bcrypt hash nats-server accepts (`$2b$…`): the server's config never holds a password."""
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` so that it is never readable by others, not even for a moment (made 0600, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if mode == 0o600 else 0o755)
    partial = path.with_name(path.name + ".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(partial, mode)
    os.replace(partial, path)


def ensure_secrets(directory: Path, names: Sequence[str], rotate: bool = False, mode: int = 0o600) -> dict[str, str]:
    """Each name's password: the one already in `directory`, else (or with `rotate`) a new one written there."""
    found: dict[str, str] = {}
    for name in names:
        path = directory / name / PASSWORD_FILE
        current = "" if rotate or not path.exists() else path.read_text().strip()
        if not current:
            current = new_secret()
            write_private(path, current + "\n", mode)
        found[name] = current
    return found


@dataclass(frozen=True)
class Auth:
    """One run's NATS users: where the passwords are, the server's block, the routes' secret."""

    directory: Path
    server_block: str
    route_secret: str

    def env(self, role: str) -> dict[str, str]:
        return client_env(role, self.directory)


def prepare(
    directory: Path, subjects: Subjects, bucket: str = SCALER_BUCKET, rotate: bool = False, mode: int = 0o600,
) -> Auth:
    """Make (or reuse) every password in `directory` and write the server block (hashes) next to them."""
    found = ensure_secrets(directory, [*ROLES, ROUTE], rotate, mode)
    block = render_users({role: hash_password(found[role]) for role in ROLES}, permission_table(subjects, bucket))
    write_private(directory / AUTH_FILE, block)
    return Auth(directory, block, found[ROUTE])


def main(argv: Sequence[str] | None = None) -> int:
    """compose's `nats-auth` service: passwords (kept from the last run) and the server block, in DIR."""
    parser = argparse.ArgumentParser(prog="python -m ops.natsauth", description=main.__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--off", action="store_true",
                        help="No authorisation (also QUICFLEET_NATS_AUTH=off): write an empty server block.")
    parser.add_argument("--rotate", action="store_true",
                        help="New passwords for every user (also QUICFLEET_NATS_AUTH_ROTATE=1).")
    parser.add_argument("--shared-volumes", action="store_true",
                        help="Passwords 0444: each lies in a volume only its own service mounts.")
    parser.add_argument("--cluster-routes", default="",
                        help="HOST:PORT of every node's routes: write node-<i>.conf for each (a cluster).")
    args = parser.parse_args(argv)
    subjects = Subjects(os.environ.get("QUICFLEET_SUBJECT_PREFIX", "fleet"))
    bucket = os.environ.get("QUICFLEET_SCALER_BUCKET", SCALER_BUCKET)
    off = args.off or os.environ.get("QUICFLEET_NATS_AUTH", "on") == "off"
    rotate = args.rotate or os.environ.get("QUICFLEET_NATS_AUTH_ROTATE", "") == "1"
    auth = prepare(args.directory, subjects, bucket, rotate, 0o444 if args.shared_volumes else 0o600)
    if off:
        write_private(args.directory / AUTH_FILE, "# NATS authorisation is off (QUICFLEET_NATS_AUTH=off)\n", 0o644)
    else:
        os.chmod(args.directory / AUTH_FILE, 0o644 if args.shared_volumes else 0o600)
    routes = [route.strip() for route in args.cluster_routes.split(",") if route.strip()]
    for index, config in enumerate(node_configs(routes, auth.route_secret)):
        write_private(args.directory / f"node-{index + 1}.conf", config, 0o644 if args.shared_volumes else 0o600)
    print(f"NATS users in {auth.directory}: {', '.join(ROLES)} (authorisation {'off' if off else 'on'})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
