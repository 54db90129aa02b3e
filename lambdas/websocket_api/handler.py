"""The WebSocket API's routes: ``$connect``, ``$disconnect`` and ``subscribe``.

``$connect`` is authorized by the authorizer (the token in ``?token=``, browsers cannot set headers on
a WebSocket); this function checks the token again with the same code (zero trust: the context alone
is not trusted, and one that differs from the token is refused) and stores the connection with its
organization, user and expiry (the token's ``exp``). API Gateway passes the ``$connect`` context on to
the connection's later events; ``$disconnect`` removes the row, ``subscribe`` records what the
connection wants: ``{"action": "subscribe", "all": true}`` (every task of its organization, with
``tasks:read``) or ``{"action": "subscribe", "task_ids": [...]}`` (at most 100). Every statement runs
as ``tenantforge_app`` with the connection's organization set, so a connection can only ever be
stored, changed or found under its own organization. The notifier is to send each status event to
the subscribed, unexpired connections of the task's organization only, found the same way.

Answers: ``{"statusCode": 200}``, or 400/401/403/410 with ``{"error": code}`` (a refused ``$connect``
closes the handshake); 503 when the database is down.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from tenantforge_lambda import tasks
from tenantforge_lambda.config import Settings
from tenantforge_lambda.database import Database, DatabaseUnavailable
from tenantforge_lambda.http import HttpError
from tenantforge_lambda.logs import get_logger, log_json, loggable
from tenantforge_lambda.tokens import KeyLookup, TokenError, verify_token

LOGGER = get_logger("tenantforge.websocket")
MAX_SUBSCRIBED_TASKS = 100
MAX_BODY_BYTES = 8 * 1024


def answer(status: int, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"statusCode": status}
    if body is not None:
        result["body"] = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return result


class WebSocketRoutes:
    def __init__(
        self, settings: Settings, keys: KeyLookup, database: Database, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.database = database
        self.clock = clock

    @classmethod
    def from_env(cls) -> WebSocketRoutes:
        from tenantforge_lambda.jwks import JwksCache

        settings = Settings.from_env()
        return cls(settings, JwksCache.from_settings(settings).get, Database.from_env())

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        context = event.get("requestContext")
        context = context if isinstance(context, Mapping) else {}
        route = context.get("routeKey")
        connection_id = context.get("connectionId")
        fields: dict[str, Any] = {"route": loggable(route), "connection_id": loggable(connection_id)}
        fields.update(org_id=None, user_id=None)
        try:
            if not isinstance(connection_id, str) or not 0 < len(connection_id) <= 128:
                raise HttpError(400, "invalid_request", "bad_connection_id")
            authorizer = _authorizer(context)
            fields.update(
                org_id=loggable(authorizer.get("org_id")), user_id=loggable(authorizer.get("user_id"))
            )
            if route == "$connect":
                result = self.connect(event, connection_id, authorizer)
            elif route == "$disconnect":
                result = self.disconnect(connection_id, authorizer)
            elif route == "subscribe":
                result = self.subscribe(event, connection_id, authorizer)
            else:
                raise HttpError(400, "unknown_route")
        except HttpError as error:
            fields.update(status=error.status, reason=error.reason)
            result = answer(error.status, {"error": error.error})
        except DatabaseUnavailable:
            fields.update(status=503, reason="DatabaseUnavailable")
            result = answer(503, {"error": "unavailable"})
        except Exception as error:
            fields.update(status=500, reason="internal_error", error=type(error).__name__)
            result = answer(500, {"error": "internal_error"})
        else:
            fields.update(status=result["statusCode"], reason=None)
        log_json(LOGGER, logging.WARNING if fields["status"] >= 500 else logging.INFO, **fields)
        return result

    def connect(
        self, event: Mapping[str, Any], connection_id: str, authorizer: Mapping[str, Any]
    ) -> dict[str, Any]:
        query = event.get("queryStringParameters")
        token = query.get("token") if isinstance(query, Mapping) else None
        if not isinstance(token, str) or not token:
            raise HttpError(401, "invalid_token", "missing_token")
        try:
            claims = verify_token(token, self.settings, self.keys, self.clock())
        except TokenError as error:
            raise HttpError(401, "invalid_token", f"token:{error.reason}") from None
        if authorizer.get("org_id") != claims.org_id or authorizer.get("user_id") != claims.sub:
            raise HttpError(403, "context_mismatch")
        with self.database.transaction(claims.org_id) as connection:
            connection.execute(
                "INSERT INTO websocket_connections (connection_id, organization_id, user_id, expires_at) "
                "VALUES (%s, %s, %s, to_timestamp(%s) AT TIME ZONE 'UTC') "
                "ON CONFLICT (connection_id) DO NOTHING",
                (connection_id, claims.org_id, claims.sub, claims.exp),
            )
        return answer(200)

    def disconnect(self, connection_id: str, authorizer: Mapping[str, Any]) -> dict[str, Any]:
        with self.database.transaction(str(authorizer["org_id"])) as connection:
            connection.execute("DELETE FROM websocket_connections WHERE connection_id = %s", (connection_id,))
        return answer(200)

    def subscribe(
        self, event: Mapping[str, Any], connection_id: str, authorizer: Mapping[str, Any]
    ) -> dict[str, Any]:
        permissions = str(authorizer.get("permissions", "")).split(",")
        if "tasks:read" not in permissions:
            raise HttpError(403, "forbidden", "missing_permission:tasks:read")
        subscribed_all, task_ids = _subscription(event)
        with self.database.transaction(str(authorizer["org_id"])) as connection:
            row = connection.execute(
                "UPDATE websocket_connections SET subscribed_all = %s, task_ids = %s::uuid[] "
                "WHERE connection_id = %s AND expires_at > (now() AT TIME ZONE 'UTC') RETURNING connection_id",
                (subscribed_all, task_ids, connection_id),
            ).fetchone()
        if row is None:  # gone, expired, or (under row-level security) another organization's
            raise HttpError(410, "gone", "no_connection")
        return answer(200, {"subscribed": "all" if subscribed_all else task_ids})


def _authorizer(context: Mapping[str, Any]) -> Mapping[str, Any]:
    """The authorizer's context of the connection: an organization and a user are required."""
    authorizer = context.get("authorizer")
    if not isinstance(authorizer, Mapping):
        raise HttpError(401, "unauthorized", "no_authorizer_context")
    for name in ("org_id", "user_id"):
        value = authorizer.get(name)
        if not isinstance(value, str) or not tasks.is_uuid(value):
            raise HttpError(401, "unauthorized", f"bad_context:{name}")
    return authorizer


def _subscription(event: Mapping[str, Any]) -> tuple[bool, list[str]]:
    raw = event.get("body")
    if not isinstance(raw, str) or len(raw) > MAX_BODY_BYTES:
        raise HttpError(400, "invalid_request", "bad_body")
    try:
        document = json.loads(raw)
    except ValueError:
        raise HttpError(400, "invalid_request", "not_json") from None
    if not isinstance(document, dict) or document.get("action") != "subscribe":
        raise HttpError(400, "invalid_request", "bad_action")
    if document.get("all") is True and "task_ids" not in document:
        return True, []
    task_ids = document.get("task_ids")
    if (
        "all" in document
        or not isinstance(task_ids, list)
        or not 0 < len(task_ids) <= MAX_SUBSCRIBED_TASKS
        or not all(isinstance(item, str) and tasks.is_uuid(item) for item in task_ids)
    ):
        raise HttpError(400, "invalid_request", "bad_subscription")
    return False, sorted({item.lower() for item in task_ids})


_routes: WebSocketRoutes | None = None


def reset(routes: WebSocketRoutes | None = None) -> None:
    """Forget the container's state (tests); the next call builds it again, or uses ``routes``."""
    global _routes
    _routes = routes


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _routes
    if _routes is None:
        _routes = WebSocketRoutes.from_env()
    return _routes.handle(event)
