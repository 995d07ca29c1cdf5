"""Credentials never reach a message: URLs are masked in CLI errors and in every log line, stdlib's too."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from shared.logging import configure_logging
from shared.redact import mask_credentials


@pytest.mark.parametrize(("text", "shown"), [
    ("cannot reach NATS at nats://svc:hunter2@nats:4222", "cannot reach NATS at nats://svc:***@nats:4222"),
    ("nats://a:b@h1:4222,tls://c:d@h2:4222", "nats://a:***@h1:4222,tls://c:***@h2:4222"),
    ("nats://s3cr3ttoken@h:4222", "nats://***@h:4222"),
    ("nats://127.0.0.1:4222 and mail@example.org", "nats://127.0.0.1:4222 and mail@example.org"),
])
def test_passwords_and_tokens_in_urls_are_masked(text: str, shown: str) -> None:
    """user:password@ keeps the user, token@ is masked whole, text without credentials is unchanged."""
    assert mask_credentials(text) == shown


def test_stdlib_and_structlog_lines_are_json_and_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """A nats-py (stdlib) warning and a structlog line both come out as JSON with the service and no password."""
    configure_logging("info", "json", service="metrics")
    try:
        logging.getLogger("nats.aio.client").warning("cannot connect to %s", "nats://u:hunter2@h:1")
        structlog.get_logger("t").info("t.event", url="nats://u:hunter2@h:1")
    finally:
        structlog.reset_defaults()
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["cannot connect to nats://u:***@h:1", "t.event"]
    assert lines[0]["logger"] == "nats.aio.client" and lines[0]["level"] == "warning"
    assert {line["service"] for line in lines} == {"metrics"} and lines[1]["url"] == "nats://u:***@h:1"
