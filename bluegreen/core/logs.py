"""Structured logging: console lines for people, JSON lines for log pipelines.

Every service binds the fields operators filter on (service, partition, task_id,
phase). A processor masks values under secret-looking keys and passwords inside
URLs, so a DSN passed by mistake still never reaches a log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from bluegreen.core.config import LogSettings

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|dsn|credential)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)
MASK = "***"


def redact(text: str) -> str:
    """Mask passwords in URLs (``user:pw@``) and ``password=...`` pairs."""
    return _KV_PASSWORD.sub(rf"\g<1>{MASK}", _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text))


def _mask_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key):
            event[key] = MASK
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


def configure(settings: LogSettings, *, stream: Any = None) -> None:
    """Configure structlog and the stdlib root logger once, at the CLI edge."""
    level = getattr(logging, settings.level)
    renderer: Any
    if settings.format == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=stream or sys.stderr, format="%(message)s")


def get_logger(**fields: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger().bind(**fields)
    return logger
