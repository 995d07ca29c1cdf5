"""The NATS permission table and the generator of users, passwords and server blocks (ops.natsauth)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import bcrypt
import pytest
from pydantic import ValidationError

from ops.natsauth import (
    AUTH_FILE,
    OPERATOR,
    ROLES,
    ROUTE,
    SERVICE_ROLES,
    client_env,
    ensure_secrets,
    hash_password,
    inbox_prefix,
    main,
    node_configs,
    permission_table,
    prepare,
    render_users,
    route_block,
    table_markdown,
)
from shared.bus import connect_options
from shared.contract.events import VmState
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
S = Subjects()
TABLE = permission_table(S)


def allows(patterns: tuple[str, ...], subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    return any(_match(p.split("."), subject.split(".")) for p in patterns)


def _match(pattern: list[str], tokens: list[str]) -> bool:
    if pattern and pattern[-1] == ">":
        return len(tokens) >= len(pattern) and all(p in ("*", t) for p, t in zip(pattern[:-1], tokens, strict=False))
    return len(pattern) == len(tokens) and all(p in ("*", t) for p, t in zip(pattern, tokens, strict=True))


def test_every_role_has_a_row_and_only_services_answer_requests() -> None:
    """Balancer, metrics, scaler, provisioner and operator each get permissions; the operator answers nothing."""
    assert list(TABLE) == list(ROLES)
    assert [role for role, p in TABLE.items() if p.responds] == list(SERVICE_ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_no_user_may_read_the_replies_of_another(role: str) -> None:
    """Nobody may subscribe to `_INBOX.>`, `>` or another user's inbox; each may use its own."""
    subscribe = TABLE[role].subscribe
    assert not allows(subscribe, "_INBOX.abc.1") and ">" not in subscribe
    assert allows(subscribe, f"{inbox_prefix(role)}.abc") and allows(TABLE[role].publish, f"{inbox_prefix(role)}.abc")
    others = [other for other in ROLES if other != role]
    assert not any(allows(subscribe, f"{inbox_prefix(other)}.abc") for other in others)


def test_only_the_scaler_may_send_provisioner_commands() -> None:
    """Create (any host, one host), destroy and list reach the provisioner; only the scaler may send creates
    and destroys, and the balancer only the list it needs at start."""
    commands = [S.prov_create, S.prov_create_on("h1"), S.prov_destroy("h1"), S.prov_drain("h1")]
    for role, allowed in TABLE.items():
        assert all(allows(allowed.publish, c) for c in commands) == (role == "scaler"), role
    assert all(allows(TABLE["provisioner"].subscribe, c) for c in [*commands, S.prov_list])
    assert allows(TABLE["balancer"].publish, S.prov_list) and not allows(TABLE["metrics"].publish, S.prov_list)


def test_only_the_operator_sends_fleet_commands_and_only_the_scaler_takes_them() -> None:
    """Scale, policy, status and drain: published by the operator alone, subscribed by the scaler alone."""
    for command in (S.cmd_scale, S.cmd_policy, S.cmd_status, S.cmd_drain):
        assert [r for r, p in TABLE.items() if allows(p.publish, command)] == [OPERATOR]
        assert [r for r, p in TABLE.items() if allows(p.subscribe, command)] == ["scaler"]


def test_events_come_from_their_owner_only() -> None:
    """VM events (draining too) from the provisioner alone, reports from balancers, load from metrics."""
    owners = {S.vm(VmState.READY): ["provisioner"], S.vm(VmState.DRAINING): ["provisioner"],
              S.balancer_report: ["balancer"], S.balancer_drained: ["balancer"],
              S.load: ["metrics"], S.scaler_state: ["scaler"], S.scaler_decision: ["scaler"]}
    for subject, expected in owners.items():
        assert sorted(r for r, p in TABLE.items() if allows(p.publish, subject)) == sorted(expected), subject


def test_the_scaler_alone_reaches_its_bucket_and_nobody_other_jetstream() -> None:
    """KV reads and writes of the scaler's bucket are the scaler's; no user may touch another stream or delete."""
    kv = ["$KV.quicfleet_scaler.desired", "$JS.API.STREAM.INFO.KV_quicfleet_scaler",
          "$JS.API.DIRECT.GET.KV_quicfleet_scaler.$KV.quicfleet_scaler.lease"]
    assert [r for r, p in TABLE.items() if all(allows(p.publish, s) for s in kv)] == ["scaler"]
    for forbidden in ("$JS.API.STREAM.DELETE.KV_quicfleet_scaler", "$JS.API.STREAM.INFO.OTHER", "$KV.other.k"):
        assert not any(allows(p.publish, forbidden) for p in TABLE.values()), forbidden


def test_another_prefix_and_bucket_move_every_subject_with_them() -> None:
    """Derived from Subjects: with prefix `two.fleet` and bucket `b2`, no `fleet.` subject or old bucket is left."""
    table = permission_table(Subjects("two.fleet"), bucket="b2")
    subjects = [s for p in table.values() for s in (*p.publish, *p.subscribe)]
    assert not [s for s in subjects if s.startswith("fleet.") or "quicfleet_scaler" in s]
    assert allows(table["provisioner"].subscribe, "two.fleet.prov.h9.destroy")
    assert allows(table["scaler"].publish, "$KV.b2.desired")


def test_the_server_block_quotes_every_subject_and_grants_responses_to_services() -> None:
    """The rendered block names each user with its hash, quotes `$` subjects, and sets allow_responses for services."""
    block = render_users({role: f"$2b$10$hash-{role}" for role in ROLES}, TABLE)
    for role in ROLES:
        line = next(line for line in block.splitlines() if f'user: "{role}"' in line)
        assert f'password: "$2b$10$hash-{role}"' in line
        assert ("allow_responses: true" in line) == (role != OPERATOR)
    assert '"$SRV.PING"' in block and not re.search(r"[\[ ]\$SRV", block)


def test_passwords_are_bcrypt_hashed_for_the_server() -> None:
    """A hash nats-server accepts (`$2b$`), which checks against the password and against nothing else."""
    hashed = hash_password("secret-one")
    assert hashed.startswith("$2") and "secret-one" not in hashed
    assert bcrypt.checkpw(b"secret-one", hashed.encode()) and not bcrypt.checkpw(b"secret-two", hashed.encode())


def test_secrets_are_made_once_private_and_reused(tmp_path: Path) -> None:
    """The first run writes 0600 passwords; the next reuses them (a restart still logs in); rotate replaces them."""
    first = ensure_secrets(tmp_path, ["scaler", ROUTE])
    path = tmp_path / "scaler" / "password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_secrets(tmp_path, ["scaler", ROUTE]) == first
    rotated = ensure_secrets(tmp_path, ["scaler", ROUTE], rotate=True)
    assert rotated["scaler"] != first["scaler"] and len(rotated["scaler"]) >= 40


def test_prepare_writes_the_block_without_any_password(tmp_path: Path) -> None:
    """authorization.conf (0600) holds hashes only; every role's and the route's password is in its own file."""
    auth = prepare(tmp_path, S)
    text = (tmp_path / AUTH_FILE).read_text()
    assert text == auth.server_block and stat.S_IMODE((tmp_path / AUTH_FILE).stat().st_mode) == 0o600
    for name in (*ROLES, ROUTE):
        assert (tmp_path / name / "password").read_text().strip() not in text
    assert auth.env("metrics") == client_env("metrics", tmp_path)


def test_a_service_env_logs_in_with_its_file_and_its_inbox(tmp_path: Path) -> None:
    """The generated variables become nats-py's user, password (read from the file) and inbox prefix."""
    auth = prepare(tmp_path, S)
    env = auth.env("balancer")
    settings = ServiceSettings(nats_user=env["QUICFLEET_NATS_USER"],
                               nats_inbox_prefix=env["QUICFLEET_NATS_INBOX_PREFIX"],
                               nats_password_file=Path(env["QUICFLEET_NATS_PASSWORD_FILE"]))
    options = connect_options(settings, "t")
    assert options["user"] == "balancer" and options["inbox_prefix"] == "_INBOX_balancer"
    assert options["password"] == (tmp_path / "balancer" / "password").read_text().strip()


def test_routes_present_and_demand_the_secret() -> None:
    """A node's cluster block lists its peers with the route user and secret, and an authorization of its own."""
    block = route_block("quicfleet", "127.0.0.1:6222", ["127.0.0.1:6223"], "s3")
    assert '"nats-route://route:s3@127.0.0.1:6223"' in block
    assert 'authorization { user: route, password: "s3" }' in block
    assert "authorization" not in route_block("quicfleet", "127.0.0.1:6222", ["127.0.0.1:6223"], None)
    assert len(node_configs(["a:1", "b:2", "c:3"], "s3")) == 3


def test_compose_init_is_idempotent_and_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m ops.natsauth` keeps passwords across runs (world-readable only with --shared-volumes) and
    QUICFLEET_NATS_AUTH=off leaves an empty server block."""
    assert main(["--shared-volumes", str(tmp_path)]) == 0
    password = (tmp_path / "scaler" / "password").read_text()
    assert stat.S_IMODE((tmp_path / "scaler" / "password").stat().st_mode) == 0o444
    monkeypatch.setenv("QUICFLEET_NATS_AUTH", "off")
    assert main(["--shared-volumes", str(tmp_path)]) == 0
    assert (tmp_path / "scaler" / "password").read_text() == password
    assert "users" not in (tmp_path / AUTH_FILE).read_text()


def test_the_operations_guide_shows_the_table_of_the_code() -> None:
    """docs/operations.md carries exactly the permission table the code renders (regenerate it when this fails)."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert table_markdown(TABLE) in guide


def test_a_password_file_must_be_readable_and_a_password_wins_over_it(tmp_path: Path) -> None:
    """A password file that cannot be read is a bad setting; QUICFLEET_NATS_PASSWORD, when set, wins over the file."""
    with pytest.raises(ValidationError, match="nats_password_file"):
        ServiceSettings(nats_password_file=tmp_path / "missing")
    (tmp_path / "pw").write_text("from-file\n")
    both = ServiceSettings(nats_user="u", nats_password="direct", nats_password_file=tmp_path / "pw")
    assert connect_options(both, "t")["password"] == "direct"
    assert connect_options(ServiceSettings(), "t")["inbox_prefix"] == "_INBOX", "without a login, NATS's own prefix"


def _every_subject(s: Subjects) -> list[str]:
    """Every subject `Subjects` can name: its properties, and its per-state and per-host builders."""
    builders = {name for name in vars(Subjects) if not name.startswith("_") and callable(getattr(Subjects, name))}
    per_host = {"prov_create_on", "prov_destroy", "prov_drain", "prov_template_push", "prov_template_retire",
                "prov_template_protect"}
    assert builders == {"vm", *per_host}, "a new subject builder: add it here and to the table"
    properties = [getattr(s, name) for name, value in vars(Subjects).items() if isinstance(value, property)]
    return [*properties, *(s.vm(state) for state in VmState), *(getattr(s, name)("h1") for name in sorted(per_host))]


@pytest.mark.parametrize("subject", _every_subject(S))
def test_every_subject_has_a_sender_and_a_receiver(subject: str) -> None:
    """A subject added to Subjects without a row in the table fails here, not in production as a silent denial."""
    assert any(allows(p.publish, subject) for p in TABLE.values()), f"nobody may publish {subject}"
    assert any(allows(p.subscribe, subject) for p in TABLE.values()), f"nobody may subscribe to {subject}"
