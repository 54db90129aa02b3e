"""The notifier: each task status event to the WebSocket connections that asked for it, and to no
other organization's.

A status event (exchange ``task-status``, the worker's ``{"task_id", "org_id", "type", "status",
"error"?}``) is matched, with the event's organization set for the transaction, against the unexpired
rows of ``websocket_connections`` subscribed to all the organization's tasks or to that task: row-level
security means a connection of another organization is never even read. Each gets the event through
the API Gateway Management API (``post_to_connection``, endpoint from ``WEBSOCKET_MANAGEMENT_ENDPOINT``,
``https://<api-id>.execute-api.<region>.amazonaws.com/<stage>``); a connection that answers 410
Gone is deleted, as are the organization's expired ones.

Run as ``python -m tenantforge_lambda.notifier`` with ``DATABASE_*``, ``AMQP_*`` and
``NOTIFIER_QUEUE`` (the queue bound to ``task-status``; default ``task-status.notifier``, the one the
rabbitmq role declares and lets the ``notifier`` broker user read); it reuses the worker's consumer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenantforge_lambda import tasks
from tenantforge_lambda.database import Database, DatabaseUnavailable
from tenantforge_lambda.logs import get_logger, log_json
from tenantforge_lambda.worker import Outcome

LOGGER = get_logger("tenantforge.notifier")
# The platform's queue of every status event (roles/rabbitmq, rabbitmq_notifier_queue).
DEFAULT_QUEUE = "task-status.notifier"


class Gone(Exception):
    """The connection is closed (the Management API's 410)."""


Post = Callable[[str, bytes], None]


@dataclass(frozen=True)
class Delivery:
    sent: int
    gone: int
    failed: int


def management_post(endpoint: str, client: Any = None) -> Post:
    """``post_to_connection`` through boto3's ``apigatewaymanagementapi`` client for ``endpoint``."""
    clients: list[Any] = [client] if client is not None else []

    def post(connection_id: str, data: bytes) -> None:
        if not clients:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2}
            )
            clients.append(boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, config=config))
        try:
            clients[0].post_to_connection(ConnectionId=connection_id, Data=data)
        except clients[0].exceptions.GoneException:
            raise Gone(connection_id) from None

    return post


class Notifier:
    def __init__(self, database: Database, post: Post) -> None:
        self.database = database
        self.post = post

    def deliver(self, event: Mapping[str, Any]) -> Delivery:
        """Send ``event`` (a checked status event) to its organization's subscribed connections."""
        org_id, task_id = str(event["org_id"]), str(event["task_id"])
        message = json.dumps(
            {"event": "task.status", **event}, sort_keys=True, separators=(",", ":")
        ).encode()
        with self.database.transaction(org_id) as connection:
            rows = connection.execute(
                "SELECT connection_id FROM websocket_connections "
                "WHERE expires_at > (now() AT TIME ZONE 'UTC') AND (subscribed_all OR %s::uuid = ANY(task_ids)) "
                "ORDER BY connection_id",
                (task_id,),
            ).fetchall()
        sent = failed = 0
        gone: list[str] = []
        for (connection_id,) in rows:
            try:
                self.post(connection_id, message)
                sent += 1
            except Gone:
                gone.append(connection_id)
            except Exception as error:  # one broken connection does not stop the others
                failed += 1
                log_json(LOGGER, logging.WARNING, event="post_failed", error=type(error).__name__)
        with self.database.transaction(org_id) as connection:
            connection.execute(
                "DELETE FROM websocket_connections WHERE connection_id = ANY(%s) "
                "OR expires_at <= (now() AT TIME ZONE 'UTC')",
                (gone,),
            )
        return Delivery(sent, len(gone), failed)

    def process(self, body: bytes, publish_status: Any = None) -> Outcome:
        """One message of the status queue (the worker consumer's callback)."""
        try:
            event = json.loads(body)
        except ValueError:
            return Outcome("reject", "bad_message")
        if not isinstance(event, dict) or not all(
            isinstance(event.get(name), str) for name in ("task_id", "org_id", "status")
        ):
            return Outcome("reject", "bad_message")
        if (
            not (tasks.is_uuid(event["task_id"]) and tasks.is_uuid(event["org_id"]))
            or event["status"] not in tasks.STATUSES
        ):
            return Outcome("reject", "bad_message")
        fields = {
            name: event[name] for name in ("task_id", "org_id", "type", "status", "error") if name in event
        }
        try:
            delivery = self.deliver(fields)
        except DatabaseUnavailable:
            return Outcome("requeue", "database_unavailable", event["task_id"])
        reason = f"sent={delivery.sent},gone={delivery.gone},failed={delivery.failed}"
        return Outcome("ack", reason, event["task_id"], event["status"])


def main() -> int:
    from tenantforge_lambda import secrets
    from tenantforge_lambda.broker import broker_urls
    from tenantforge_lambda.worker import Consumer, run_consumer

    environ = dict(os.environ)
    endpoint = environ.get("WEBSOCKET_MANAGEMENT_ENDPOINT", "").strip()
    queue = environ.get("NOTIFIER_QUEUE", "").strip() or DEFAULT_QUEUE
    if not endpoint:
        print("configuration: WEBSOCKET_MANAGEMENT_ENDPOINT is required", flush=True)
        return 2
    notifier = Notifier(Database.from_env(environ), management_post(endpoint))
    consumer = Consumer(notifier.process, lambda: broker_urls(environ, secrets.secret_string), [queue], 50)
    return run_consumer(consumer)


if __name__ == "__main__":
    raise SystemExit(main())
