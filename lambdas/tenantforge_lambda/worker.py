"""The task worker: consumes the task queues, runs each task once, reports every status change.

Run as ``python -m tenantforge_lambda.worker`` (a Deployment in the cluster, a local process on the
local target). Settings from the environment: ``DATABASE_URL`` / ``DATABASE_SECRET_ID`` (as
``tenantforge_app``), ``AMQP_URL`` / ``AMQP_SECRET_ID`` (the worker user), ``WORKER_TASK_TYPES``
(default all built-in types), ``WORKER_PREFETCH`` (default 10), ``HTTP_CHECK_ALLOWED_URLS`` (origins
``http_check`` may reach, comma-separated; none by default) and ``HTTP_CHECK_TIMEOUT_SECONDS`` (5).

One task, exactly once, whatever the deliveries:

1. Connection A opens a transaction with the task's organization set and takes the task's
   transaction-level advisory lock, the lock the orchestrator holds while it inserts the row and
   publishes. It is held until the task is finished. A second delivery of the message (a redelivery
   after a lost channel, a duplicate) waits here for the first to end.
2. The row decides: none (the orchestrator's transaction rolled back after its publish) or finished
   (an earlier delivery ran it, or it was cancelled): acknowledged, nothing run. ``queued``, or
   ``running`` with the lock free (the worker that started it died): it runs.
3. Connection B commits ``running`` (and an audit event ``task.run``), so the API shows it; the
   status event is published to exchange ``task-status``.
4. The task runs; connection A writes the outcome where the status is still ``running`` (a cancel in
   the meantime wins), commits, which releases the lock; the final status is published; the message
   is acknowledged last.

A worker that dies before step 4 leaves the message unacknowledged: it is delivered again and the
task runs again (it never finished). The database unreachable: the message is requeued after a pause.
Status events are published after the commit that makes them true, with confirms, not mandatory
(nobody may be listening); one lost with a node is not retried: the row stays the truth.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from psycopg.types.json import Jsonb

from tenantforge_lambda import tasks
from tenantforge_lambda.broker import BrokerUnavailable, broker_urls
from tenantforge_lambda.database import Database, DatabaseUnavailable
from tenantforge_lambda.logs import get_logger, log_json, log_to_stderr, loggable

LOGGER = get_logger("tenantforge.worker")
DEFAULT_PREFETCH = 10
MAX_ECHO_DELAY_MS = 30_000
RETRY_PAUSE_SECONDS = 2.0
RECONNECT_PAUSE_SECONDS = 2.0


class TaskFailed(Exception):
    """The task ran and failed; the message is the task's ``error``."""


# ------------------------------------------------------------------------------------- the task types


@dataclass(frozen=True)
class Runner:
    """The built-in task types."""

    allowed_origins: frozenset[str] = frozenset()
    http_timeout: float = 5.0

    def run(self, task_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if task_type == "echo":
            return self.echo(payload)
        if task_type == "http_check":
            return self.http_check(payload)
        raise TaskFailed(f"unknown task type {task_type!r:.64}")

    @staticmethod
    def echo(payload: Mapping[str, Any]) -> dict[str, Any]:
        """The payload back; ``delay_ms`` (at most 30 s) makes it take that long."""
        delay = payload.get("delay_ms", 0)
        if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= MAX_ECHO_DELAY_MS:
            raise TaskFailed(f"delay_ms must be 0 to {MAX_ECHO_DELAY_MS}")
        time.sleep(delay / 1000)
        return {"echo": dict(payload)}

    def http_check(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A GET of ``url``, which must be on an allowed origin; redirects are not followed."""
        url = payload.get("url")
        if not isinstance(url, str) or origin(url) not in self.allowed_origins:
            raise TaskFailed("url is not on an allowed origin (HTTP_CHECK_ALLOWED_URLS)")
        opener = urllib.request.build_opener(_NoRedirect())
        started = time.perf_counter()
        try:
            # http(s) only: origin() refused every other scheme above.
            request = urllib.request.Request(url, method="GET")  # noqa: S310
            with opener.open(request, timeout=self.http_timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except (urllib.error.URLError, OSError) as error:
            raise TaskFailed(f"GET failed: {type(error).__name__}") from None
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        if not 200 <= status < 400:
            raise TaskFailed(f"GET answered {status}")
        return {"url": url, "status": status, "elapsed_ms": elapsed_ms}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def origin(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL (default ports written out), None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return f"{parts.scheme}://{parts.hostname}:{port}"


# ---------------------------------------------------------------------------------------- processing


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery: ``ack``, ``reject`` (dead-letter) or ``requeue``, and why."""

    action: str
    reason: str
    task_id: str | None = None
    status: str | None = None


StatusPublisher = Callable[[str, str, str, dict[str, Any]], None]


class Worker:
    def __init__(self, lock_database: Database, status_database: Database, runner: Runner) -> None:
        self.lock_database = lock_database
        self.status_database = status_database
        self.runner = runner

    def process(self, body: bytes, publish_status: StatusPublisher) -> Outcome:
        """One delivery, as the module docstring says."""
        try:
            message = json.loads(body)
            task_id, org_id, task_type = message["task_id"], message["org_id"], message["type"]
        except (ValueError, TypeError, KeyError):
            return Outcome("reject", "bad_message")
        if not all(isinstance(value, str) for value in (task_id, org_id, task_type)) or not (
            tasks.is_uuid(task_id) and tasks.is_uuid(org_id)
        ):
            return Outcome("reject", "bad_message")
        try:
            return self._run(task_id, org_id, publish_status)
        except DatabaseUnavailable:
            return Outcome("requeue", "database_unavailable", task_id)

    def _run(self, task_id: str, org_id: str, publish_status: StatusPublisher) -> Outcome:
        with self.lock_database.transaction(org_id) as lock:
            lock.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("tenantforge.task:" + task_id,)
            )
            row = lock.execute(
                "SELECT status::text, type, payload FROM tasks WHERE id = %s", (task_id,)
            ).fetchone()
            if row is None:
                return Outcome("ack", "no_row", task_id)
            status, task_type, payload = row
            if status in tasks.FINISHED:
                if status == "cancelled":
                    publish_status(org_id, task_id, task_type, {"status": status})
                return Outcome("ack", "finished_before", task_id, status)
            with self.status_database.transaction(org_id) as connection:
                started = connection.execute(
                    "UPDATE tasks SET status = 'running', updated_at = now() "
                    "WHERE id = %s AND status IN ('queued', 'running') RETURNING id",
                    (task_id,),
                ).fetchone()
                if started is not None:
                    connection.execute(
                        "INSERT INTO audit_events (organization_id, action, target_type, target_id) "
                        "VALUES (%s, 'task.run', 'task', %s)",
                        (org_id, task_id),
                    )
            if started is None:  # cancelled between the two reads
                return Outcome("ack", "cancelled_before_start", task_id, "cancelled")
            publish_status(org_id, task_id, task_type, {"status": "running"})
            try:
                result: dict[str, Any] | None = self.runner.run(task_type, payload or {})
                final, error = "succeeded", None
            except TaskFailed as failure:
                result, final, error = None, "failed", str(failure)
            except Exception as failure:  # a bug of a task type: the task fails, the worker goes on
                result, final, error = None, "failed", f"internal error ({type(failure).__name__})"
            written = lock.execute(
                "UPDATE tasks SET status = %s, result = %s, error = %s, updated_at = now() "
                "WHERE id = %s AND status = 'running' RETURNING status::text",
                (final, Jsonb(result) if result is not None else None, error, task_id),
            ).fetchone()
            if written is None:  # cancelled while it ran: the cancel stands
                final, error = "cancelled", None
        publish_status(org_id, task_id, task_type, {"status": final, **({"error": error} if error else {})})
        return Outcome("ack", "ran", task_id, final)


# --------------------------------------------------------------------------------------- the consumer


class Consumer:
    """The AMQP side: prefetch, manual acknowledgements, status events, reconnection. ``process``
    decides what becomes of each message (the worker's, or the notifier's)."""

    def __init__(
        self,
        process: Callable[[bytes, StatusPublisher], Outcome],
        urls: Callable[[], list[str]],
        queues: list[str],
        prefetch: int,
    ) -> None:
        self.process = process
        self.urls = urls
        self.queues = queues
        self.prefetch = prefetch
        self.stopping = False
        self._connection: Any = None
        self._channel: Any = None
        self._status_channel: Any = None

    def run(self) -> None:
        """Consume until :meth:`stop`; a lost connection is reopened after a pause."""
        import pika

        while not self.stopping:
            try:
                self._consume()
            except (pika.exceptions.AMQPError, BrokerUnavailable, OSError) as error:
                log_json(LOGGER, logging.WARNING, event="connection_lost", error=type(error).__name__)
                self._close()
                if not self.stopping:
                    time.sleep(RECONNECT_PAUSE_SECONDS)
        self._close()

    def stop(self) -> None:
        """Stop after the message being processed (from a signal handler or another thread)."""
        self.stopping = True
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.add_callback_threadsafe(self._stop_consuming)

    def _stop_consuming(self) -> None:
        if self._channel is not None and self._channel.is_open:
            self._channel.stop_consuming()

    def _consume(self) -> None:
        import pika

        parameters = [pika.URLParameters(url) for url in self.urls()]
        for item in parameters:
            item.heartbeat = 30
            item.connection_attempts = 1
            item.socket_timeout = 5
        self._connection = pika.BlockingConnection(parameters)
        self._status_channel = self._connection.channel()
        self._status_channel.confirm_delivery()
        channel = self._channel = self._connection.channel()
        channel.basic_qos(prefetch_count=self.prefetch)
        for queue in self.queues:
            channel.basic_consume(queue, self._on_message, auto_ack=False)
        log_json(LOGGER, logging.INFO, event="consuming", queues=",".join(self.queues))
        if not self.stopping:
            channel.start_consuming()

    def _publish_status(self, org_id: str, task_id: str, task_type: str, fields: dict[str, Any]) -> None:
        import pika

        body = json.dumps({"task_id": task_id, "org_id": org_id, "type": task_type, **fields}, sort_keys=True)
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=f"{task_id}:{fields['status']}",
            type="task.status",
            timestamp=int(time.time()),
        )
        try:
            self._status_channel.basic_publish(
                tasks.STATUS_EXCHANGE, f"{org_id}.{task_type}.{fields['status']}", body.encode(), properties
            )
        except pika.exceptions.AMQPError as error:
            # The row holds the status; a subscriber that missed the event reads it from the API.
            # Never raised: the task goes on to its end and commits (raising would roll the run back
            # and the redelivery would run it again); a lost connection surfaces at the ack.
            log_json(
                LOGGER,
                logging.WARNING,
                event="status_not_published",
                task_id=task_id,
                error=type(error).__name__,
            )

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        started = time.perf_counter()
        outcome = self.process(body, self._publish_status)
        log_json(
            LOGGER,
            logging.WARNING if outcome.action != "ack" else logging.INFO,
            event="task",
            action=outcome.action,
            reason=outcome.reason,
            task_id=outcome.task_id,
            status=outcome.status,
            redelivered=bool(method.redelivered),
            message_id=loggable(properties.message_id),
            seconds=round(time.perf_counter() - started, 3),
        )
        if outcome.action == "ack":
            channel.basic_ack(method.delivery_tag)
        elif outcome.action == "reject":
            channel.basic_reject(method.delivery_tag, requeue=False)
        else:
            time.sleep(RETRY_PAUSE_SECONDS)
            channel.basic_nack(method.delivery_tag, requeue=True)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._status_channel = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as error:  # already broken
                log_json(LOGGER, logging.DEBUG, event="close_failed", error=type(error).__name__)


# --------------------------------------------------------------------------------------------- main


def settings_from_env(environ: Mapping[str, str]) -> tuple[tuple[str, ...], int, Runner]:
    """The task types, the prefetch and the runner; ValueError naming the variable."""
    text = environ.get("WORKER_TASK_TYPES", "").strip()
    task_types = (
        tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip())) or tasks.TASK_TYPES
    )
    unknown = [name for name in task_types if name not in tasks.TASK_TYPES]
    if unknown:
        raise ValueError(
            f"WORKER_TASK_TYPES: unknown type {unknown[0]!r:.64}; known: {', '.join(tasks.TASK_TYPES)}"
        )
    try:
        prefetch = int(environ.get("WORKER_PREFETCH", "") or DEFAULT_PREFETCH)
        timeout = float(environ.get("HTTP_CHECK_TIMEOUT_SECONDS", "") or 5)
    except ValueError:
        raise ValueError("WORKER_PREFETCH and HTTP_CHECK_TIMEOUT_SECONDS must be numbers") from None
    if not 1 <= prefetch <= 1000:
        raise ValueError("WORKER_PREFETCH must be 1 to 1000")
    if not 0 < timeout <= 60:
        raise ValueError("HTTP_CHECK_TIMEOUT_SECONDS must be more than 0 and at most 60")
    origins = set()
    for url in environ.get("HTTP_CHECK_ALLOWED_URLS", "").split(","):
        if url.strip():
            found = origin(url.strip())
            if found is None:
                raise ValueError("HTTP_CHECK_ALLOWED_URLS must list http(s) URLs")
            origins.add(found)
    return task_types, prefetch, Runner(frozenset(origins), timeout)


def run_consumer(consumer: Consumer) -> int:
    """Consume until SIGTERM or SIGINT, which stop it after the message in hand."""

    def stop(signum: int, frame: Any) -> None:
        consumer.stop()

    log_to_stderr()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.run()
    return 0


def main() -> int:
    from tenantforge_lambda import secrets

    environ = dict(os.environ)
    try:
        task_types, prefetch, runner = settings_from_env(environ)
        worker = Worker(Database.from_env(environ), Database.from_env(environ), runner)
        if not environ.get("AMQP_URL", "").strip() and not environ.get("AMQP_SECRET_ID", "").strip():
            raise ValueError("one of AMQP_URL and AMQP_SECRET_ID is required")
    except ValueError as error:
        print(f"configuration: {error}", flush=True)
        return 2
    queues = [f"{tasks.TASKS_EXCHANGE}.{task_type}" for task_type in task_types]
    return run_consumer(
        Consumer(worker.process, lambda: broker_urls(environ, secrets.secret_string), queues, prefetch)
    )


if __name__ == "__main__":
    raise SystemExit(main())
