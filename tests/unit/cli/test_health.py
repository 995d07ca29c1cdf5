"""Parsing `$SRV.PING` answers and choosing what `quicfleet health` checks."""

from __future__ import annotations

import json

import pytest

from ops.cli.client import CliError
from ops.cli.health import SERVICES, Pong, missing, parse_pong, targets


def test_pong_is_read_from_a_micro_ping_response() -> None:
    """Name, id and the instance metadata come from the micro ping JSON."""
    data = json.dumps({"name": "scaler", "id": "abc", "type": "io.nats.micro.v1.ping_response",
                       "metadata": {"instance": "host1"}}).encode()
    assert parse_pong(data) == Pong("scaler", "abc", "host1")


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"id": "x"}'])
def test_garbage_is_not_a_pong(data: bytes) -> None:
    """Anything that is not a ping response is ignored rather than crashing the check."""
    assert parse_pong(data) is None


def test_missing_names_the_silent_services() -> None:
    """Services with no pong are reported; extra replicas do not matter."""
    pongs = [Pong("scaler", "1", ""), Pong("scaler", "2", ""), Pong("metrics", "3", "")]
    assert missing(["scaler", "balancer", "metrics"], pongs) == ["balancer"]


def test_no_names_means_nats_and_every_service() -> None:
    """`quicfleet health` alone checks NATS and all four services; `health nats` only NATS."""
    assert targets([]) == (True, list(SERVICES))
    assert targets(["nats"]) == (True, [])
    assert targets(["scaler"]) == (False, ["scaler"])


def test_unknown_names_are_a_usage_error() -> None:
    """A misspelt service name exits 2 with the known names."""
    with pytest.raises(CliError) as caught:
        targets(["scalr"])
    assert caught.value.code == 2 and "scaler" in caught.value.message
