"""The token function: sign-in exchange and refresh for the front-end, behind API Gateway (REST proxy
integration, no authorizer: these routes are how a caller gets a token).

* ``POST /auth/sign-in`` with a JSON body ``{"org": "<slug>", "email": "...", "password": "..."}``
* ``POST /auth/refresh`` with ``Authorization: Bearer <token>`` (a still-valid one)

Both answer 200 with ``{"access_token", "token_type": "Bearer", "expires_in", "expires_at"}`` and
``Cache-Control: no-store`` (RFC 6749 section 5.1). Errors are JSON ``{"error": "<code>"}``:

========  ====================================================================================
status    ``error``
========  ====================================================================================
400       ``invalid_request`` (not JSON, a field missing or not a string, body over 4 KiB)
401       ``invalid_credentials`` (unknown organization or user, no password set, wrong password:
          one answer, one cost), ``invalid_token`` (refresh of an invalid or expired token),
          ``session_expired`` (``auth_time`` + ``JWT_MAX_SESSION_SECONDS`` reached: sign in again)
403       ``organization_suspended``, ``user_disabled`` (told only after the right password or
          a valid token)
404/405   ``not_found``, ``method_not_allowed``
503       ``unavailable`` (database or Secrets Manager), with ``Retry-After``
========  ====================================================================================

One JSON log line per request with the route, the outcome, the reason and who it was for when known;
never a password, a token or a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

from tenantforge_lambda.database import DatabaseUnavailable
from tenantforge_lambda.issuing import Issued, IssueError, Issuer, from_env
from tenantforge_lambda.logs import get_logger, log_json
from tenantforge_lambda.signing import SigningKeyError
from tenantforge_lambda.tokens import MAX_TOKEN_BYTES

LOGGER = get_logger("tenantforge.token")
MAX_BODY_BYTES = 4096
RETRY_AFTER_SECONDS = 5
ROUTES = {"/auth/sign-in": "sign_in", "/auth/refresh": "refresh"}
# IssueError reasons -> (status, error code). invalid_token:<reason> is 401 invalid_token.
REFUSALS = {
    "invalid_credentials": (401, "invalid_credentials"),
    "unknown_user": (401, "invalid_token"),
    "session_expired": (401, "session_expired"),
    "organization_suspended": (403, "organization_suspended"),
    "user_disabled": (403, "user_disabled"),
}


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400, error: str = "invalid_request") -> None:
        super().__init__(reason)
        self.reason, self.status, self.error = reason, status, error


def response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def token_response(issued: Issued, now: float) -> dict[str, Any]:
    return response(
        200,
        {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": max(0, issued.expires_at - int(now)),
            "expires_at": issued.expires_at,
        },
    )


def _route(event: Mapping[str, Any]) -> str:
    path = event.get("path")
    if not isinstance(path, str):
        raise BadRequest("no_path", 404, "not_found")
    route = ROUTES.get(path.rstrip("/") or "/")
    if route is None:
        raise BadRequest("unknown_route", 404, "not_found")
    if event.get("httpMethod") != "POST":
        raise BadRequest("bad_method", 405, "method_not_allowed")
    return route


def _body(event: Mapping[str, Any]) -> dict[str, str]:
    raw = event.get("body")
    if not isinstance(raw, str) or not raw:
        raise BadRequest("no_body")
    if len(raw) > MAX_BODY_BYTES * 2:
        raise BadRequest("body_too_large")
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
    except (binascii.Error, ValueError):
        raise BadRequest("bad_base64") from None
    if len(data) > MAX_BODY_BYTES:
        raise BadRequest("body_too_large")
    try:
        document = json.loads(data)
    except ValueError:
        raise BadRequest("not_json") from None
    if not isinstance(document, dict):
        raise BadRequest("not_an_object")
    fields = {}
    for name in ("org", "email", "password"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise BadRequest(f"bad_field:{name}")
        fields[name] = value
    return fields


def _bearer(event: Mapping[str, Any]) -> str:
    headers = event.get("headers")
    values = []
    if isinstance(headers, Mapping):
        values = [
            value for key, value in headers.items() if isinstance(key, str) and key.lower() == "authorization"
        ]
    if len(values) != 1 or not isinstance(values[0], str):
        raise BadRequest("missing_token", 401, "invalid_token")
    parts = values[0].strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or len(parts[1]) > MAX_TOKEN_BYTES:
        raise BadRequest("malformed_authorization", 401, "invalid_token")
    return parts[1]


class TokenFunction:
    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"route": None, "org_id": None, "sub": None}
        try:
            route = fields["route"] = _route(event)
            if route == "sign_in":
                body = _body(event)
                issued = self.issuer.sign_in(body["org"], body["email"], body["password"])
            else:
                issued = self.issuer.refresh(_bearer(event))
        except BadRequest as error:
            fields.update(outcome="refused", reason=error.reason, status=error.status)
            result = response(error.status, {"error": error.error})
        except IssueError as error:
            status, code = REFUSALS.get(error.reason, (401, "invalid_token"))
            if error.subject is not None:
                fields.update(org_id=error.subject.org_id, sub=error.subject.user_id)
            fields.update(outcome="refused", reason=error.reason, status=status)
            result = response(status, {"error": code})
        except (DatabaseUnavailable, SigningKeyError) as error:
            fields.update(outcome="error", reason=type(error).__name__, status=503)
            result = response(503, {"error": "unavailable"}, {"Retry-After": str(RETRY_AFTER_SECONDS)})
        except Exception as error:
            fields.update(outcome="error", reason="internal_error", error=type(error).__name__, status=500)
            result = response(500, {"error": "internal_error"})
        else:
            claims = issued.claims
            fields.update(
                org_id=claims["org_id"], sub=claims["sub"], jti=claims["jti"], outcome="issued", status=200
            )
            log_json(LOGGER, logging.INFO, **fields)
            return token_response(issued, claims["iat"])
        level = logging.WARNING if fields["status"] >= 500 else logging.INFO
        log_json(LOGGER, level, **fields)
        return result


_function: TokenFunction | None = None


def reset(function: TokenFunction | None = None) -> None:
    """Forget the container's state (tests); the next call builds it again, or uses ``function``."""
    global _function
    _function = function


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _function
    if _function is None:
        _function = TokenFunction(from_env())
    return _function.handle(event)
