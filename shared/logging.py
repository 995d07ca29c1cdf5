"""structlog, configured once per process: JSON when not on a terminal, readable when on one.

The standard library's loggers (asyncio, nats, aiohttp, aioquic, libvirt) go through the same
processors and renderer (`structlog.stdlib.ProcessorFormatter`), so a journal or a log shipper
reads one format, and credentials are masked in their lines too.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from shared.redact import mask_event

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto", service: str | None = None) -> None:
    """Set up structlog, and route stdlib logging (nats, asyncio, aiohttp, libvirt) through the same renderer."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    common: list[Any] = [
        _ServiceName(service),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        mask_event,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *common, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *common],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), handlers=[handler], force=True)


def bind_message(**context: Any) -> None:
    """Start a fresh per-message log context (clears what the previous message bound)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**{k: v for k, v in context.items() if v is not None})


class _ServiceName:
    """Processor stamping every line with the service name (survives per-message context clears)."""

    def __init__(self, service: str | None) -> None:
        self.service = service

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        if self.service:
            event.setdefault("service", self.service)
        return event
