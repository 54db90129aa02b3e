"""Structured logs: one JSON object per line, through :mod:`logging` (the Lambda runtime's handler)."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

# Attacker-controlled values (a kid, a sub) are logged truncated, so a log line stays small.
MAX_VALUE_LENGTH = 128


def get_logger(name: str) -> logging.Logger:
    """A logger at ``LOG_LEVEL`` (default INFO): the Lambda runtime leaves the root logger at WARNING."""
    logger = logging.getLogger(name)
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    return logger


def log_to_stderr() -> None:
    """For the long-running programs (the worker, the notifier), which have no Lambda runtime to give
    the root logger a handler: the JSON lines on standard error, at ``LOG_LEVEL``."""
    logging.basicConfig(
        stream=sys.stderr, format="%(message)s", level=os.environ.get("LOG_LEVEL", "INFO").upper()
    )


def loggable(value: Any) -> str | int | bool | None:
    """A value fit for a log field: short strings, numbers and booleans; anything else becomes None."""
    if isinstance(value, str):
        return value[:MAX_VALUE_LENGTH]
    if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**63):
        return value
    return None


def log_json(logger: logging.Logger, level: int, **fields: Any) -> None:
    """Log ``fields`` as one JSON object. Callers pass only what may be logged: never a token or secret."""
    if logger.isEnabledFor(level):
        logger.log(level, json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str))
