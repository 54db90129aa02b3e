"""The token function: sign-in exchange and refresh for the front-end, behind API Gateway (REST proxy
integration, no authorizer: these routes are how a caller gets a token).

* ``POST /auth/sign-in`` with a JSON body ``{"org": "<slug>", "email": "...", "password": "..."}``
* ``POST /auth/refresh`` with ``Authorization: Bearer <token>`` (a still-valid one)

Both answer 200 with ``{"access_token", "token_type": "Bearer", "expires_in", "expires_at"}`` and
``Cache-Control: no-store`` (RFC 6749 section 5.1). Errors are JSON ``{"error": "<code>"}``:

========  ====================================================================================
status    ``error``
========  ====================================================================================
400       ``invalid_request`` (not JSON, a field missing or not a string)
401       ``invalid_credentials`` (unknown organization or user, no password set, wrong password:
          one answer, one cost), ``invalid_token`` (refresh of an invalid or expired token),
          ``session_expired`` (``auth_time`` + ``JWT_MAX_SESSION_SECONDS`` reached: sign in again)
403       ``organization_suspended``, ``user_disabled`` (told only after the right password or
          a valid token)
404/405   ``not_found``, ``method_not_allowed``
413       ``payload_too_large`` (a body over 4 KiB)
503       ``unavailable`` (database or Secrets Manager), with ``Retry-After``
========  ====================================================================================

One JSON log line per request with the route, the outcome, the reason and who it was for when known;
never a password, a token or a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tenantforge_lambda.database import DatabaseUnavailable
from tenantforge_lambda.http import HttpError, bearer_token, json_body, json_response
from tenantforge_lambda.issuing import Issued, IssueError, Issuer, from_env
from tenantforge_lambda.logs import get_logger, log_json
from tenantforge_lambda.signing import SigningKeyError
from tenantforge_lambda.tokens import MAX_TOKEN_BYTES

LOGGER = get_logger("tenantforge.token")
MAX_BODY_BYTES = 4096
ROUTES = {"/auth/sign-in": "sign_in", "/auth/refresh": "refresh"}
# IssueError reasons -> (status, error code). invalid_token:<reason> is 401 invalid_token.
REFUSALS = {
    "invalid_credentials": (401, "invalid_credentials"),
    "unknown_user": (401, "invalid_token"),
    "session_expired": (401, "session_expired"),
    "organization_suspended": (403, "organization_suspended"),
    "user_disabled": (403, "user_disabled"),
}


def token_response(issued: Issued, now: float) -> dict[str, Any]:
    return json_response(
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
    route = ROUTES.get(path.rstrip("/") or "/") if isinstance(path, str) else None
    if route is None:
        raise HttpError(404, "not_found", "unknown_route")
    if event.get("httpMethod") != "POST":
        raise HttpError(405, "method_not_allowed", "bad_method")
    return route


def _credentials(event: Mapping[str, Any]) -> dict[str, str]:
    document = json_body(event, MAX_BODY_BYTES)
    if not isinstance(document, dict):
        raise HttpError(400, "invalid_request", "not_an_object")
    fields = {}
    for name in ("org", "email", "password"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise HttpError(400, "invalid_request", f"bad_field:{name}")
        fields[name] = value
    return fields


class TokenFunction:
    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"route": None, "org_id": None, "sub": None}
        try:
            route = fields["route"] = _route(event)
            if route == "sign_in":
                body = _credentials(event)
                issued = self.issuer.sign_in(body["org"], body["email"], body["password"])
            else:
                issued = self.issuer.refresh(bearer_token(event, MAX_TOKEN_BYTES))
        except HttpError as error:
            fields.update(outcome="refused", reason=error.reason, status=error.status)
            result = error.response()
        except IssueError as error:
            status, code = REFUSALS.get(error.reason, (401, "invalid_token"))
            if error.subject is not None:
                fields.update(org_id=error.subject.org_id, sub=error.subject.user_id)
            fields.update(outcome="refused", reason=error.reason, status=status)
            result = HttpError(status, code).response()
        except (DatabaseUnavailable, SigningKeyError) as error:
            fields.update(outcome="error", reason=type(error).__name__, status=503)
            result = HttpError(503, "unavailable").response()
        except Exception as error:
            fields.update(outcome="error", reason="internal_error", error=type(error).__name__, status=500)
            result = HttpError(500, "internal_error").response()
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
