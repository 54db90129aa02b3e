"""The Agent Orchestrator: the task API behind API Gateway (REST proxy events for ``/api/*``).

The second zero-trust check: the token of the ``Authorization`` header is verified again with the
authorizer's own code (the authorizer's context is not trusted alone), and a context whose ``org_id``
or ``user_id`` differs from the token's is refused (403 ``context_mismatch``). Then the route's
permission, from the token. Every statement runs as ``tenantforge_app`` with the token's organization
set for the transaction, so row-level security backs every query: another organization's task is a
404, exactly like one that does not exist.

Routes: ``POST /api/tasks`` (``tasks:create``) -> 202 ``{"task_id", "status"}``; ``GET /api/tasks/{id}``
and ``GET /api/tasks`` (``tasks:read``; ``?limit=1..100&cursor=...&status=...``, newest first);
``POST /api/tasks/{id}/cancel`` (``tasks:cancel``; 409 once finished); ``GET /api/me``.

Dispatch ties the row and the message: the task is inserted (status ``queued``) holding a
transaction-level advisory lock on its id, the message is published and confirmed, and only then is
the transaction committed; a failed publish rolls the row back (503, nothing queued). If the commit
itself fails after the confirm, the message has no row: the worker takes the same lock before
reading the row, so it waits for the transaction's outcome and drops a message whose row never
appeared (see the worker).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tenantforge_lambda import tasks
from tenantforge_lambda.broker import Broker, BrokerUnavailable
from tenantforge_lambda.config import Settings
from tenantforge_lambda.database import Database, DatabaseUnavailable
from tenantforge_lambda.http import HttpError, bearer_token, json_body, json_response
from tenantforge_lambda.logs import get_logger, log_json, loggable
from tenantforge_lambda.tokens import MAX_TOKEN_BYTES, Claims, KeyLookup, TokenError, verify_token

LOGGER = get_logger("tenantforge.orchestrator")
# A payload of at most 256 KiB, and the rest of the body (its type, JSON escapes) around it.
MAX_BODY_BYTES = tasks.MAX_PAYLOAD_BYTES + 16 * 1024
DEFAULT_PAGE, MAX_PAGE = 20, 100
Handler = Callable[[Claims, Mapping[str, Any], Any], dict[str, Any]]
Routes = dict[str, tuple[str, Handler, str | None]]
SELECT_TASK = sql.SQL("SELECT {} FROM tasks").format(sql.SQL(tasks.COLUMNS))
_TASK_PATH = re.compile(r"/api/tasks/(?P<task_id>[^/]+)(?P<cancel>/cancel)?")


class Orchestrator:
    def __init__(
        self,
        settings: Settings,
        keys: KeyLookup,
        database: Database,
        broker: Broker,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.database = database
        self.broker = broker
        self.clock = clock

    @classmethod
    def from_env(cls) -> Orchestrator:
        from tenantforge_lambda.jwks import JwksCache

        settings = Settings.from_env()
        return cls(settings, JwksCache.from_settings(settings).get, Database.from_env(), Broker.from_env())

    # --------------------------------------------------------------------------------------- dispatch

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"method": loggable(event.get("httpMethod")), "route": None}
        fields.update(org_id=None, sub=None, jti=None, task_id=None)
        try:
            claims = self.authenticate(event)
            fields.update(org_id=claims.org_id, sub=claims.sub, jti=claims.jti)
            self.check_context(claims, event)
            route, handler, permission, task_id = self.route(event)
            fields.update(route=route, task_id=task_id)
            if permission is not None and permission not in claims.permissions:
                raise HttpError(403, "forbidden", f"missing_permission:{permission}", missing=permission)
            response = handler(claims, event, task_id)
        except HttpError as error:
            fields.update(status=error.status, reason=error.reason)
            response = error.response()
        except (DatabaseUnavailable, BrokerUnavailable) as error:
            fields.update(status=503, reason=type(error).__name__)
            response = HttpError(503, "unavailable").response()
        except Exception as error:
            fields.update(status=500, reason="internal_error", error=type(error).__name__)
            response = HttpError(500, "internal_error").response()
        else:
            fields.update(status=response["statusCode"], reason=None)
        level = logging.WARNING if fields["status"] >= 500 else logging.INFO
        log_json(LOGGER, level, **fields)
        return response

    def authenticate(self, event: Mapping[str, Any]) -> Claims:
        token = bearer_token(event, MAX_TOKEN_BYTES)
        try:
            claims = verify_token(token, self.settings, self.keys, self.clock())
        except TokenError as error:
            raise HttpError(401, "invalid_token", f"token:{error.reason}") from None
        return claims

    @staticmethod
    def check_context(claims: Claims, event: Mapping[str, Any]) -> None:
        """The authorizer's context, when there is one, must say what the token says: one that does
        not was forged or belongs to another request. (Without one, as on a direct invocation, the
        token alone decides.)"""
        context = event.get("requestContext")
        authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
        if not isinstance(authorizer, Mapping) or not authorizer:
            return
        if authorizer.get("org_id") != claims.org_id or authorizer.get("user_id") != claims.sub:
            raise HttpError(403, "context_mismatch")

    def route(self, event: Mapping[str, Any]) -> tuple[str, Handler, str | None, str | None]:
        path = event.get("path")
        method = event.get("httpMethod")
        path = path.rstrip("/") if isinstance(path, str) else ""
        routes: Routes
        task_id: str | None = None
        if path == "/api/tasks":
            routes = {
                "POST": ("create_task", self.create_task, "tasks:create"),
                "GET": ("list_tasks", self.list_tasks, "tasks:read"),
            }
        elif path == "/api/me":
            routes = {"GET": ("me", self.me, None)}
        elif (match := _TASK_PATH.fullmatch(path)) is not None:
            task_id = match.group("task_id")
            if match.group("cancel"):
                routes = {"POST": ("cancel_task", self.cancel_task, "tasks:cancel")}
            else:
                routes = {"GET": ("get_task", self.get_task, "tasks:read")}
        else:
            raise HttpError(404, "not_found", "unknown_route")
        if method not in routes:
            raise HttpError(405, "method_not_allowed", "bad_method")
        name, handler, permission = routes[method]
        return name, handler, permission, task_id

    # ------------------------------------------------------------------------------------------ routes

    def me(self, claims: Claims, event: Mapping[str, Any], task_id: None) -> dict[str, Any]:
        return json_response(
            200,
            {
                "user_id": claims.sub,
                "org_id": claims.org_id,
                "org_slug": claims.org_slug,
                "roles": list(claims.roles),
                "permissions": list(claims.permissions),
                "token_exp": claims.exp,
            },
        )

    def create_task(self, claims: Claims, event: Mapping[str, Any], task_id: None) -> dict[str, Any]:
        try:
            task_type, payload = tasks.check_submission(json_body(event, MAX_BODY_BYTES))
        except tasks.InvalidSubmission as error:
            status = 413 if error.reason == "payload_too_large" else 400
            raise HttpError(status, error.reason, error.reason, message=str(error)) from None
        new_id = str(uuid.uuid4())
        try:
            with self.database.transaction(claims.org_id) as connection:
                _lock_task(connection, new_id)
                connection.execute(
                    "INSERT INTO tasks (id, organization_id, creator_id, type, payload) VALUES (%s, %s, %s, %s, %s)",
                    (new_id, claims.org_id, claims.sub, task_type, Jsonb(payload)),
                )
                connection.execute(
                    "INSERT INTO audit_events (organization_id, actor_id, action, target_type, target_id) "
                    "VALUES (%s, %s, 'task.create', 'task', %s)",
                    (claims.org_id, claims.sub, new_id),
                )
                # Confirmed before the commit: a publish that fails rolls the row back.
                self.broker.publish(
                    tasks.TASKS_EXCHANGE,
                    f"{claims.org_id}.{task_type}",
                    tasks.message(new_id, claims.org_id, task_type),
                    new_id,
                    task_type,
                )
        except psycopg.errors.ForeignKeyViolation:
            # The token's user no longer exists in its organization.
            raise HttpError(401, "invalid_token", "unknown_user") from None
        return json_response(
            202, {"task_id": new_id, "status": "queued"}, {"Location": f"/api/tasks/{new_id}"}
        )

    def get_task(self, claims: Claims, event: Mapping[str, Any], task_id: str) -> dict[str, Any]:
        if not tasks.is_uuid(task_id):
            raise HttpError(404, "not_found", "bad_task_id")
        with self.database.transaction(claims.org_id) as connection:
            row = connection.execute(SELECT_TASK + sql.SQL(" WHERE id = %s"), (task_id,)).fetchone()
        if row is None:
            raise HttpError(404, "not_found", "no_task")
        return json_response(200, tasks.row_to_json(row))

    def list_tasks(self, claims: Claims, event: Mapping[str, Any], task_id: None) -> dict[str, Any]:
        query = event.get("queryStringParameters") or {}
        if not isinstance(query, Mapping):
            query = {}
        limit = _limit(query.get("limit"))
        conditions: list[sql.Composable] = [sql.SQL("TRUE")]
        params: list[Any] = []
        if query.get("cursor") is not None:
            try:
                created_at, last_id = tasks.decode_cursor(str(query["cursor"]))
            except ValueError:
                raise HttpError(
                    400, "invalid_request", "bad_cursor", message="cursor is not one this API gave"
                ) from None
            conditions.append(sql.SQL("(created_at, id) < (%s, %s)"))
            params += [created_at, last_id]
        if query.get("status") is not None:
            if query["status"] not in tasks.STATUSES:
                raise HttpError(
                    400,
                    "invalid_request",
                    "bad_status",
                    message=f"status must be one of {', '.join(tasks.STATUSES)}",
                )
            conditions.append(sql.SQL("status = %s::task_status"))
            params.append(query["status"])
        with self.database.transaction(claims.org_id) as connection:
            query = sql.SQL("{} WHERE {} ORDER BY created_at DESC, id DESC LIMIT %s").format(
                SELECT_TASK, sql.SQL(" AND ").join(conditions)
            )
            rows = connection.execute(query, (*params, limit + 1)).fetchall()
        page = rows[:limit]
        next_cursor = tasks.encode_cursor(page[-1][7], page[-1][0]) if len(rows) > limit else None
        return json_response(
            200, {"tasks": [tasks.row_to_json(row) for row in page], "next_cursor": next_cursor}
        )

    def cancel_task(self, claims: Claims, event: Mapping[str, Any], task_id: str) -> dict[str, Any]:
        if not tasks.is_uuid(task_id):
            raise HttpError(404, "not_found", "bad_task_id")
        # No task lock: the worker holds it for as long as a task runs. The UPDATE is atomic on the
        # row, and the worker's final UPDATE only changes a task still `running`.
        with self.database.transaction(claims.org_id) as connection:
            row = connection.execute(
                sql.SQL(
                    "UPDATE tasks SET status = 'cancelled', updated_at = now() "
                    "WHERE id = %s AND status IN ('queued', 'running') RETURNING {}"
                ).format(sql.SQL(tasks.COLUMNS)),
                (task_id,),
            ).fetchone()
            if row is not None:
                connection.execute(
                    "INSERT INTO audit_events (organization_id, actor_id, action, target_type, target_id) "
                    "VALUES (%s, %s, 'task.cancel', 'task', %s)",
                    (claims.org_id, claims.sub, task_id),
                )
            else:
                found = connection.execute(
                    "SELECT status::text FROM tasks WHERE id = %s", (task_id,)
                ).fetchone()
        if row is None:
            if found is None:
                raise HttpError(404, "not_found", "no_task")
            raise HttpError(409, "task_finished", message=f"the task is already {found[0]}")
        return json_response(200, tasks.row_to_json(row))


def _lock_task(connection: psycopg.Connection[Any], task_id: str) -> None:
    """The transaction-level lock every writer of a task takes (the worker too)."""
    connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("tenantforge.task:" + task_id,)
    )


def _limit(value: Any) -> int:
    if value is None:
        return DEFAULT_PAGE
    if not isinstance(value, str) or not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise HttpError(400, "invalid_request", "bad_limit", message=f"limit must be 1 to {MAX_PAGE}")
    return int(value)


_orchestrator: Orchestrator | None = None


def reset(orchestrator: Orchestrator | None = None) -> None:
    """Forget the container's state (tests); the next call builds it again, or uses ``orchestrator``."""
    global _orchestrator
    _orchestrator = orchestrator


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _orchestrator
    if _orchestrator is None:
        _orchestrator = Orchestrator.from_env()
    return _orchestrator.handle(event)
