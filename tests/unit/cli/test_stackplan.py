"""What `quicfleet up` decides to run before it runs anything."""

from __future__ import annotations

import pytest

from ops.stack.plan import Mode, Plan, balancer_url, choose_mode, hints, lab_env, service_argv, service_env


def test_named_libvirt_wins_over_the_lab() -> None:
    """QUICFLEET_LIBVIRT_URI set means a real KVM host: no lab, no warning."""
    assert choose_mode({"QUICFLEET_LIBVIRT_URI": "qemu:///system"}, True, (True, "")) == (Mode.LIBVIRT, None)


def test_lab_when_possible_and_wanted() -> None:
    """Without a named libvirt the lab is used where it can run."""
    assert choose_mode({}, True, (True, "")) == (Mode.LAB, None)


@pytest.mark.parametrize(("wanted", "possible", "why"), [(False, True, "--no-lab"), (True, False, "needs root")])
def test_test_driver_comes_with_a_loud_warning(wanted: bool, possible: bool, why: str) -> None:
    """Falling back to the test driver says why and that no VM will answer."""
    mode, warning = choose_mode({}, wanted, (possible, "the lab needs root"))
    assert mode is Mode.TEST
    assert warning is not None and why in warning and "none will boot" in warning


def test_only_the_provisioner_gets_the_libvirt_variables() -> None:
    """Every service gets the NATS URL; only the provisioner is told about libvirt."""
    plan = Plan(Mode.LAB, lab_env("qemu+unix:///system?socket=/x", "net", "tpl"), namespace="ns")
    prov = service_env({"PATH": "/bin"}, "provisioner", "nats://127.0.0.1:1", plan, tty=False)
    scaler = service_env({"QUICFLEET_LOG_FORMAT": "console"}, "scaler", "nats://127.0.0.1:1", plan, tty=False)
    assert prov["QUICFLEET_TEMPLATE"] == "tpl" and prov["QUICFLEET_LOG_FORMAT"] == "json" and prov["PATH"] == "/bin"
    assert "QUICFLEET_LIBVIRT_URI" not in scaler and scaler["QUICFLEET_LOG_FORMAT"] == "console"
    assert scaler["QUICFLEET_NATS_URL"] == "nats://127.0.0.1:1"


def test_service_argv_refuses_unknown_services() -> None:
    """Only the four services can be started."""
    assert service_argv("/py", "scaler") == ["/py", "-m", "services.scaler"]
    with pytest.raises(ValueError):
        service_argv("/py", "sh")


def test_hints_run_inside_the_lab_namespace() -> None:
    """In lab mode every suggested command is prefixed with `ip netns exec <ns>`."""
    lines = hints(Plan(Mode.LAB, namespace="quicfleet-lab"), "/v/bin", "nats://127.0.0.1:4222", {})
    commands = [line for line in lines if "/v/bin/" in line]
    assert commands and all("ip netns exec quicfleet-lab /v/bin/" in line for line in commands)
    assert any("scale 2" in line for line in commands)


def test_balancer_url_follows_its_listen_variables() -> None:
    """The GET hint targets the balancer's configured address (a wildcard becomes loopback)."""
    assert balancer_url({}) == "https://127.0.0.1:8443/"
    assert balancer_url({"QUICFLEET_LISTEN_HOST": "0.0.0.0", "QUICFLEET_LISTEN_PORT": "443"}) == "https://127.0.0.1:443/"
    assert balancer_url({"QUICFLEET_LISTEN_HOST": "::1"}) == "https://[::1]:8443/"


def test_real_vms_get_a_tls_upstream_unless_the_caller_says_otherwise() -> None:
    """Lab and KVM-host modes default the balancer to TLS upstream and cap lab VMs; given variables win."""
    lab = Plan(Mode.LAB, namespace="ns")
    assert service_env({}, "balancer", "nats://x:1", lab, tty=False)["QUICFLEET_UPSTREAM_TLS"] == "true"
    assert service_env({}, "provisioner", "nats://x:1", lab, tty=False)["QUICFLEET_MAX_VMS"] == "3"
    mine = service_env({"QUICFLEET_UPSTREAM_TLS": "false"}, "balancer", "nats://x:1", Plan(Mode.LIBVIRT), tty=False)
    assert mine["QUICFLEET_UPSTREAM_TLS"] == "false"
    assert "QUICFLEET_MAX_VMS" not in service_env({}, "provisioner", "nats://x:1", Plan(Mode.LIBVIRT), tty=False)
    assert "QUICFLEET_UPSTREAM_TLS" not in service_env({}, "balancer", "nats://x:1", Plan(Mode.TEST), tty=False)
