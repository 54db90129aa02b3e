"""API Gateway REST proxy events and responses: JSON bodies, stable error codes, bearer tokens."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

RETRY_AFTER_SECONDS = 5


class HttpError(Exception):
    """An answer other than success: ``status``, the stable ``error`` code, a ``reason`` for the log
    (never sent), and extra body fields."""

    def __init__(self, status: int, error: str, reason: str | None = None, **extra: Any) -> None:
        super().__init__(reason or error)
        self.status, self.error, self.reason, self.extra = status, error, reason or error, extra

    def response(self) -> dict[str, Any]:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else None
        return json_response(self.status, {"error": self.error, **self.extra}, headers)


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A proxy integration response; never cached (tokens and tenant data)."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
        "isBase64Encoded": False,
    }


def event_values(event: Mapping[str, Any], single: str, multiple: str, name: str) -> list[Any]:
    """Every distinct value of a header or query parameter ``name`` (any case), from the event's
    single-value section and its multi-value one (``headers``/``multiValueHeaders``, ...)."""
    found: list[Any] = []
    for section, many in ((single, False), (multiple, True)):
        mapping = event.get(section)
        if not isinstance(mapping, Mapping):
            continue
        for key, value in mapping.items():
            if isinstance(key, str) and key.lower() == name:
                for item in value if many and isinstance(value, list) else [value]:
                    if item not in found:
                        found.append(item)
    return found


def header_values(event: Mapping[str, Any], name: str) -> list[Any]:
    """Every distinct value of header ``name`` (any case)."""
    return event_values(event, "headers", "multiValueHeaders", name)


def bearer_token(event: Mapping[str, Any], max_length: int) -> str:
    """The token of the one ``Authorization: Bearer <token>`` header; 401 otherwise."""
    values = header_values(event, "authorization")
    if len(values) != 1 or not isinstance(values[0], str):
        raise HttpError(401, "invalid_token", "missing_token" if not values else "multiple_credentials")
    parts = values[0].strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or len(parts[1]) > max_length:
        raise HttpError(401, "invalid_token", "malformed_authorization")
    return parts[1]


def json_body(event: Mapping[str, Any], max_bytes: int) -> Any:
    """The request's JSON body: 400 when absent or not JSON, 413 when over ``max_bytes``."""
    raw = event.get("body")
    if not isinstance(raw, str) or not raw:
        raise HttpError(400, "invalid_request", "no_body")
    if len(raw) > max_bytes * 2:  # before decoding anything (base64 is 4/3 of the bytes)
        raise HttpError(413, "payload_too_large", "body_too_large")
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
    except (binascii.Error, ValueError):
        raise HttpError(400, "invalid_request", "bad_base64") from None
    if len(data) > max_bytes:
        raise HttpError(413, "payload_too_large", "body_too_large")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise HttpError(400, "invalid_request", "not_json") from None
