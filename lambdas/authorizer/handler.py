"""API Gateway Lambda authorizer: the platform's first zero-trust check.

Events: REST ``TOKEN`` (``authorizationToken: "Bearer <jwt>"``), REST ``REQUEST`` (the
``Authorization`` header, any case) and WebSocket ``$connect`` ``REQUEST`` (``?token=<jwt>``: browsers
cannot set headers on a WebSocket). A valid token gets an Allow on every route of the API stage (so a
cached policy never causes a 403 on another route) and the tenant context; anything else raises
``Exception("Unauthorized")``, API Gateway's 401. One JSON log line per decision, never the token.

Bearer scheme: the scheme name is matched case-insensitively (RFC 7235 section 2.1), surrounding
whitespace is trimmed and one or more spaces may separate it from the token; a second token, or
anything after the token, is refused.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenantforge_lambda.config import Settings
from tenantforge_lambda.http import event_values
from tenantforge_lambda.jwks import JwksCache
from tenantforge_lambda.logs import get_logger, log_json, loggable
from tenantforge_lambda.tokens import MAX_TOKEN_BYTES, Claims, KeyLookup, TokenError, verify_token

LOGGER = get_logger("tenantforge.authorizer")
UNAUTHORIZED = "Unauthorized"
OPERATIONAL_REASONS = frozenset({"internal_error", "jwks_unavailable"})
# arn:<partition>:execute-api:<region>:<account>:<api-id>/<stage>/<method>/<path>
_METHOD_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):execute-api:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<api>[A-Za-z0-9]+)/(?P<stage>[A-Za-z0-9._~-]+)/.*",
    re.DOTALL,
)
_BEARER = re.compile(r"bearer +(?P<token>\S+)", re.IGNORECASE)
_WHITESPACE = " \t"


@dataclass(frozen=True)
class Credential:
    """What a parsed event carries: its kind, the bearer token (None when refused) and the method ARN."""

    kind: str
    token: str | None
    method_arn: Any
    refusal: str | None = None


class Denied(Exception):
    """A refusal decided from the event alone, before any token is looked at."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------------------------------- the event


def parse_event(event: Mapping[str, Any]) -> Credential:
    """The credential of a TOKEN, REQUEST or WebSocket ``$connect`` event (never raises)."""
    method_arn = event.get("methodArn")
    if event.get("type") == "TOKEN":
        return _bearer("TOKEN", [event.get("authorizationToken")], method_arn)
    if event.get("type") != "REQUEST":
        return Credential("UNKNOWN", None, method_arn, "bad_event")
    context = event.get("requestContext")
    if isinstance(context, Mapping) and (
        context.get("eventType") == "CONNECT" or context.get("routeKey") == "$connect"
    ):
        values = event_values(event, "queryStringParameters", "multiValueQueryStringParameters", "token")
        if len(values) > 1:
            return Credential("WEBSOCKET", None, method_arn, "multiple_credentials")
        raw = values[0] if values else None
        if not isinstance(raw, str) or not raw:
            return Credential("WEBSOCKET", None, method_arn, "missing_token")
        return Credential("WEBSOCKET", raw, method_arn)
    values = event_values(event, "headers", "multiValueHeaders", "authorization")
    if len(values) > 1:
        return Credential("REQUEST", None, method_arn, "multiple_credentials")
    return _bearer("REQUEST", values, method_arn)


def _bearer(kind: str, values: list[Any], method_arn: Any) -> Credential:
    raw = values[0] if values else None
    if raw is None or (isinstance(raw, str) and not raw.strip(_WHITESPACE)):
        return Credential(kind, None, method_arn, "missing_token")
    if not isinstance(raw, str):
        return Credential(kind, None, method_arn, "malformed_authorization")
    if len(raw) > MAX_TOKEN_BYTES + 64:
        return Credential(kind, None, method_arn, "token_too_large")
    value = raw.strip(_WHITESPACE)
    scheme = value.split(" ", 1)[0]
    if scheme.lower() != "bearer":
        return Credential(kind, None, method_arn, "bad_scheme")
    match = _BEARER.fullmatch(value)
    if match is None:
        return Credential(kind, None, method_arn, "malformed_authorization")
    return Credential(kind, match.group("token"), method_arn)


def stage_resource(method_arn: Any) -> str:
    """``arn:aws:execute-api:<region>:<account>:<api-id>/<stage>/*`` from a method ARN."""
    match = _METHOD_ARN.fullmatch(method_arn) if isinstance(method_arn, str) else None
    if match is None:
        raise Denied("bad_method_arn")
    return "arn:{partition}:execute-api:{region}:{account}:{api}/{stage}/*".format(**match.groupdict())


# ---------------------------------------------------------------------------------------- the policy


def allow_policy(claims: Claims, resource: str) -> dict[str, Any]:
    """The authorizer response for a verified token: string, number and boolean context values only."""
    return {
        "principalId": claims.sub,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}],
        },
        "context": {
            "org_id": claims.org_id,
            "org_slug": claims.org_slug,
            "user_id": claims.user_id,
            "permissions": ",".join(claims.permissions),
            "roles": ",".join(claims.roles),
            "token_exp": claims.exp,
            "jti": claims.jti,
        },
    }


# ------------------------------------------------------------------------------------ the authorizer


class Authorizer:
    """Settings and keys, built once per container and reused by the warm invocations."""

    def __init__(self, settings: Settings, keys: KeyLookup, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.keys = keys
        self.clock = clock

    @classmethod
    def from_env(cls) -> Authorizer:
        settings = Settings.from_env()
        return cls(settings, JwksCache.from_settings(settings).get)

    def authorize(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The Allow response, or ``Exception("Unauthorized")``; one log line either way."""
        fields: dict[str, Any] = {"event": None, "org_id": None, "sub": None, "jti": None}
        try:
            credential = parse_event(event)
            fields["event"] = credential.kind
            if credential.refusal is not None:
                raise Denied(credential.refusal)
            resource = stage_resource(credential.method_arn)
            claims = verify_token(credential.token or "", self.settings, self.keys, self.clock())
            response = allow_policy(claims, resource)
        except TokenError as error:
            fields.update(_who(error.payload), decision="deny", reason=error.reason)
        except Denied as error:
            fields.update(decision="deny", reason=error.reason)
        except Exception as error:
            # Fail closed; the class name only: a message or a traceback could quote the token.
            fields.update(decision="deny", reason="internal_error", error=type(error).__name__)
        else:
            fields.update(org_id=claims.org_id, sub=claims.sub, jti=claims.jti, decision="allow", reason=None)
            log_json(LOGGER, logging.INFO, **fields)
            return response
        # A refused token is routine; a failure of the authorizer itself is worth an operator's look.
        level = logging.WARNING if fields["reason"] in OPERATIONAL_REASONS else logging.INFO
        log_json(LOGGER, level, **fields)
        # The exact exception API Gateway maps to a 401; raised outside the except blocks, so it
        # carries no chained exception to the runtime's error report.
        raise Exception(UNAUTHORIZED)


def _who(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """Who a refused token was for, when its signature was verified (unverified claims are not logged)."""
    if payload is None:
        return {}
    return {name: loggable(payload.get(name)) for name in ("org_id", "sub", "jti")}


_authorizer: Authorizer | None = None


def get_authorizer() -> Authorizer:
    """The container's authorizer, built from the environment on the first call (import stays cheap)."""
    global _authorizer
    if _authorizer is None:
        _authorizer = Authorizer.from_env()
    return _authorizer


def reset(authorizer: Authorizer | None = None) -> None:
    """Forget the settings and cached keys (tests); the next call reads the environment again, or
    uses ``authorizer`` when one is given."""
    global _authorizer
    _authorizer = authorizer


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return get_authorizer().authorize(event)
