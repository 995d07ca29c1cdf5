"""`quicfleet up` with `QUICFLEET_BALANCER_MODE=l4`: the lab's client side and the balancer's lab settings."""

from __future__ import annotations

from ops.stack.plan import Mode, Plan, hints, l4_lab_env, service_env, wants_l4


def test_l4_is_asked_for_by_the_balancer_mode_variable() -> None:
    """Only `QUICFLEET_BALANCER_MODE=l4` (any case) asks for the lab's client side."""
    assert wants_l4({"QUICFLEET_BALANCER_MODE": "L4"})
    assert not wants_l4({"QUICFLEET_BALANCER_MODE": "l7"}) and not wants_l4({})


def test_the_balancer_gets_the_lab_side_and_the_callers_variables_win() -> None:
    """The balancer (and no other service) gets the VIP, bridge and wire; a variable the caller set is kept."""
    plan = Plan(Mode.LAB, namespace="lab", balancer_env=l4_lab_env("10.75.0.10", "10.77.0"), client_namespace="lab-c")
    caller = {"QUICFLEET_BALANCER_MODE": "l4", "QUICFLEET_BALANCER_L4_CID_LENGTH": "20"}
    balancer = service_env(caller, "balancer", "nats://127.0.0.1:1", plan, tty=False)
    scaler = service_env(caller, "scaler", "nats://127.0.0.1:1", plan, tty=False)
    assert balancer["QUICFLEET_LISTEN_HOST"] == "10.75.0.10" and balancer["QUICFLEET_LISTEN_PORT"] == "443"
    assert balancer["QUICFLEET_BALANCER_L4_VM_IFACE"] == "qfbr0"
    assert balancer["QUICFLEET_BALANCER_L4_VM_NETWORK"] == "10.77.0.0/24"
    assert balancer["QUICFLEET_BALANCER_L4_CID_LENGTH"] == "20"
    assert "QUICFLEET_LISTEN_HOST" not in scaler


def test_the_get_hint_runs_from_the_client_side_to_the_vip() -> None:
    """In l4 the third-party GET runs in the client namespace against the VIP; the CLI stays in the lab."""
    plan = Plan(Mode.LAB, namespace="lab", balancer_env=l4_lab_env("10.75.0.10", "10.77.0"), client_namespace="lab-c")
    lines = hints(plan, "/v/bin", "nats://127.0.0.1:4222", {})
    get = next(line for line in lines if "niquests" in line)
    assert get.strip().startswith("ip netns exec lab-c /v/bin/python") and "https://10.75.0.10:443/" in get
    assert any("ip netns exec lab /v/bin/quicfleet scale 2" in line for line in lines)
