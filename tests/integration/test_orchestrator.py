"""The Agent Orchestrator (lambdas/orchestrator/handler.py) against the real stack: PostgreSQL 15 behind
PgBouncer (as tenantforge_app, the way the function connects) and the 3-node RabbitMQ cluster (as the
orchestrator user), both private to this module.

GIVEN two organizations made by tenant_bootstrap's code and tokens issued by the token function's
code; WHEN REST proxy events reach the handler; THEN every route answers as issue 7 says, row-level
security makes another organization's task a 404, a forged authorizer context is a 403, and a broker
that cannot confirm leaves no task behind.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import jwt
import psycopg
import pytest
from conftest import REPO, Emulator
from cryptography.hazmat.primitives.asymmetric import ec
from test_pgbouncer import LocalStack as DatabaseStack
from test_pgbouncer import private_stack
from test_rabbitmq import ADMIN, NOTIFIER, ORCHESTRATOR, WORKER, private_cluster
from test_rabbitmq import LocalStack as BrokerStack

from ansible_collections.tenantforge.platform.plugins.module_utils import secret_material
from ansible_collections.tenantforge.platform.plugins.module_utils.prisma_migrations import (
    migrate,
    read_migrations,
)
from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import (
    check_permissions,
    check_tenants,
    converge,
)
from authorizer import handler as authorizer_handler
from orchestrator import handler
from tenantforge_lambda import secrets, tasks
from tenantforge_lambda.broker import Broker
from tenantforge_lambda.config import Settings
from tenantforge_lambda.database import Database
from tenantforge_lambda.issuing import Issuer
from tenantforge_lambda.jwks import JwksCache
from tenantforge_lambda.notifier import Notifier, management_post
from tenantforge_lambda.signing import SigningKey
from tenantforge_lambda.tasks import TASK_TYPES
from tenantforge_lambda.worker import Consumer, Runner, Worker
from tenantforge_lambda.worker import origin as worker_origin

pytestmark = pytest.mark.integration

ISSUER = "https://auth.tenantforge.test"
AUDIENCE = "tenantforge-api"
TENANTS: list[dict[str, Any]] = [
    {
        "org_slug": "acme",
        "org_name": "ACME",
        "admin_email": "ada@acme.example",
        "users": [
            {"email": "dan@acme.example", "roles": ["viewer"]},
            {"email": "carol@acme.example", "roles": ["member"]},
        ],
    },
    {"org_slug": "globex", "org_name": "Globex", "admin_email": "hank@globex.example"},
]
VHOST = "tenantforge"


@dataclass
class Stack:
    database: DatabaseStack
    broker: BrokerStack
    settings: Settings
    signing_key: SigningKey
    jwks: dict[str, Any]

    def app_dsn(self) -> str:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.database.pgbouncer_port,
            user="tenantforge_app",
            password=self.database.passwords["tenantforge_app"],
            dbname="tenantforge",
        )

    def amqp_urls(self, user: str = ORCHESTRATOR) -> list[str]:
        password = self.broker.values[user]
        return [f"amqp://{user}:{password}@127.0.0.1:{node.amqp_port}/{VHOST}" for node in self.broker.nodes]

    def keys(self) -> JwksCache:
        return JwksCache(lambda: self.jwks, self.settings.algorithms, 300, 30)

    def orchestrator(
        self, broker: Broker | None = None, database: Database | None = None
    ) -> handler.Orchestrator:
        return handler.Orchestrator(
            self.settings,
            self.keys().get,
            database or Database(self.app_dsn),
            broker or Broker(self.amqp_urls),
        )

    def token(self, org: str, email: str) -> str:
        issuer = Issuer(self.settings, Database(self.app_dsn), lambda: self.signing_key, self.keys().get)
        return issuer.issue(org, email).token

    def owner(self) -> psycopg.Connection[Any]:
        return self.database.connect("tenantforge_owner", port=self.database.postgres_port, autocommit=True)

    def tasks_of(self, slug: str) -> list[tuple[Any, ...]]:
        """(id, status) of an organization's tasks, as the owner sees them."""
        with self.owner() as owner, owner.transaction():
            row = owner.execute("SELECT id::text FROM organizations WHERE slug = %s", (slug,)).fetchone()
            assert row is not None
            owner.execute("SELECT set_config('app.current_org_id', %s, true)", (row[0],))
            return owner.execute("SELECT id::text, status::text FROM tasks ORDER BY created_at").fetchall()

    def drain(self, queue: str = "tasks.echo") -> list[tuple[Any, Any, bytes]]:
        """Every message waiting in ``queue``, taken (and acknowledged) as the worker user."""
        messages: list[tuple[Any, Any, bytes]] = []
        with self.broker.connect(WORKER) as connection:
            channel = connection.channel()
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return messages
                messages.append((method, properties, body))


@contextlib.contextmanager
def orchestrator_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str = "orchestrator"
) -> Iterator[Stack]:
    """PostgreSQL and PgBouncer, migrated, with the tenants; the RabbitMQ cluster; a signing key (also
    the stack of test_workers)."""
    with (
        private_stack(tmp_path_factory.mktemp(f"{name}-db")) as database,
        private_cluster(tmp_path_factory.mktemp(f"{name}-mq")) as broker,
    ):
        database.run({"pgbouncer_local_bundle": False, "postgres_local_bundle": False}).assert_ok()
        with database.connect("tenantforge_owner", port=database.postgres_port, autocommit=True) as owner:
            migrate(owner, read_migrations(REPO / "prisma" / "migrations"), check_mode=False)
            tenants = check_tenants(TENANTS, prefix=True)
            catalog = check_permissions(owner, tenants, prefix=True)
            for tenant in tenants:
                converge(owner, tenant, catalog, check_mode=False)
        broker.run().assert_ok()
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = secret_material.public_jwk(key)
        settings = Settings(
            algorithms=("RS256", "ES256"), issuer=ISSUER, audience=AUDIENCE, jwks_secret_id="unused"
        )
        yield Stack(database, broker, settings, SigningKey(jwk["kid"], "ES256", key), {"keys": [jwk]})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with orchestrator_stack(tmp_path_factory) as built:
        yield built


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    return {
        "ada": stack.token("acme", "ada@acme.example"),
        "dan": stack.token("acme", "dan@acme.example"),
        "carol": stack.token("acme", "carol@acme.example"),
        "hank": stack.token("globex", "hank@globex.example"),
    }


def api_event(
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
    query: dict[str, str] | None = None,
    authorizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return {
        "resource": "/api/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "queryStringParameters": query,
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": {"stage": "prod", "requestId": str(uuid.uuid4()), "authorizer": authorizer or {}},
    }


def call(
    orchestrator: handler.Orchestrator, event: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = orchestrator.handle(event)
    return response["statusCode"], json.loads(response["body"]), response["headers"]


def context_of(token: str, stack: Stack) -> dict[str, Any]:
    """The authorizer's context for ``token``, as API Gateway passes it on."""
    authorizer = authorizer_handler.Authorizer(stack.settings, stack.keys().get)
    arn = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/POST/api/tasks"
    result = authorizer.authorize(
        {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": arn}
    )
    return dict(result["context"])


# --- who you are ---------------------------------------------------------------------------------------


def test_me_is_what_the_token_says(stack: Stack, tokens: dict[str, str]) -> None:
    status, body, headers = call(stack.orchestrator(), api_event("GET", "/api/me", tokens["dan"]))
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert (body["org_slug"], body["roles"]) == ("acme", ["viewer"])
    assert body["permissions"] == ["org:read", "roles:read", "tasks:read", "users:read"]


@pytest.mark.parametrize(
    ("token", "status", "error"),
    [(None, 401, "invalid_token"), ("not.a.token", 401, "invalid_token"), ("", 401, "invalid_token")],
)
def test_no_valid_token_no_answer(stack: Stack, token: str | None, status: int, error: str) -> None:
    for method, path in (("GET", "/api/me"), ("GET", "/api/nothing"), ("POST", "/api/tasks")):
        got, body, _ = call(stack.orchestrator(), api_event(method, path, token))
        assert (got, body) == (status, {"error": error})


def test_a_token_of_another_key_is_refused(stack: Stack, tokens: dict[str, str]) -> None:
    stranger = secret_material.generate_private_key("ES256")
    forged = SigningKey(stack.signing_key.kid, "ES256", stranger)
    claims = jwt.decode(tokens["ada"], options={"verify_signature": False})
    status, body, _ = call(stack.orchestrator(), api_event("GET", "/api/me", forged.sign(claims)))
    assert (status, body) == (401, {"error": "invalid_token"})


def test_a_forged_authorizer_context_is_refused(stack: Stack, tokens: dict[str, str]) -> None:
    """Globex's valid token with a context claiming acme (or acme's user): 403, nothing created."""
    before = stack.tasks_of("acme") + stack.tasks_of("globex")
    hank, ada = context_of(tokens["hank"], stack), context_of(tokens["ada"], stack)
    for forged in ({**hank, "org_id": ada["org_id"]}, {**hank, "user_id": ada["user_id"]}, ada):
        event = api_event(
            "POST", "/api/tasks", tokens["hank"], {"type": "echo", "payload": {}}, authorizer=forged
        )
        assert call(stack.orchestrator(), event)[:2] == (403, {"error": "context_mismatch"})
    assert stack.tasks_of("acme") + stack.tasks_of("globex") == before
    # The true context is accepted.
    event = api_event("GET", "/api/me", tokens["hank"], authorizer=hank)
    assert call(stack.orchestrator(), event)[0] == 200


# --- submitting and reading tasks ------------------------------------------------------------------------


def test_a_task_is_recorded_and_published_once(stack: Stack, tokens: dict[str, str]) -> None:
    stack.drain()
    orchestrator = stack.orchestrator()
    event = api_event("POST", "/api/tasks", tokens["carol"], {"type": "echo", "payload": {"message": "hi"}})
    status, body, headers = call(orchestrator, event)
    assert status == 202, body
    task_id = body["task_id"]
    assert body == {"task_id": task_id, "status": "queued"}
    assert headers["Location"] == f"/api/tasks/{task_id}"
    assert (task_id, "queued") in stack.tasks_of("acme")
    ((method, properties, payload),) = stack.drain()
    org_id = context_of(tokens["carol"], stack)["org_id"]
    assert method.routing_key == f"{org_id}.echo"
    assert (properties.message_id, properties.type, properties.delivery_mode) == (task_id, "echo", 2)
    assert properties.content_type == "application/json"
    assert json.loads(payload) == {"task_id": task_id, "org_id": org_id, "type": "echo"}
    status, task, _ = call(orchestrator, api_event("GET", f"/api/tasks/{task_id}", tokens["dan"]))
    assert status == 200
    assert task["id"] == task_id and task["status"] == "queued" and task["payload"] == {"message": "hi"}
    assert task["creator_id"] == context_of(tokens["carol"], stack)["user_id"]
    assert task["created_at"].endswith("Z") and task["result"] is None and task["error"] is None


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"type": "mine", "payload": {}}, 400, "unknown_task_type"),
        ({"type": "ECHO", "payload": {}}, 400, "invalid_request"),
        ({"type": "echo", "payload": []}, 400, "invalid_request"),
        ({"type": "echo", "payload": {}, "extra": 1}, 400, "invalid_request"),
        ({"payload": {}}, 400, "invalid_request"),
        ([], 400, "invalid_request"),
        ("{not json", 400, "invalid_request"),
        (None, 400, "invalid_request"),
        ({"type": "echo", "payload": {"blob": "x" * (256 * 1024)}}, 413, "payload_too_large"),
        ("x" * (600 * 1024), 413, "payload_too_large"),
    ],
)
def test_bad_submissions_are_refused_and_leave_nothing(
    stack: Stack, tokens: dict[str, str], body: Any, status: int, error: str
) -> None:
    before = stack.tasks_of("acme")
    got, answer, _ = call(stack.orchestrator(), api_event("POST", "/api/tasks", tokens["ada"], body))
    assert (got, answer["error"]) == (status, error)
    assert stack.tasks_of("acme") == before


def test_a_payload_of_exactly_256_kib_is_accepted(stack: Stack, tokens: dict[str, str]) -> None:
    filler = 256 * 1024 - len('{"blob":""}')
    event = api_event(
        "POST", "/api/tasks", tokens["ada"], {"type": "echo", "payload": {"blob": "x" * filler}}
    )
    assert call(stack.orchestrator(), event)[0] == 202
    stack.drain()


@pytest.mark.parametrize(
    ("who", "method", "path", "permission"),
    [
        ("dan", "POST", "/api/tasks", "tasks:create"),
        ("dan", "POST", "/api/tasks/00000000-0000-4000-8000-000000000000/cancel", "tasks:cancel"),
    ],
)
def test_a_missing_permission_is_a_403_naming_it(
    stack: Stack, tokens: dict[str, str], who: str, method: str, path: str, permission: str
) -> None:
    event = api_event(method, path, tokens[who], {"type": "echo", "payload": {}})
    assert call(stack.orchestrator(), event)[:2] == (403, {"error": "forbidden", "missing": permission})


def test_routes_and_methods(stack: Stack, tokens: dict[str, str]) -> None:
    orchestrator = stack.orchestrator()
    for method, path, status, error in [
        ("GET", "/api/unknown", 404, "not_found"),
        ("GET", "/api/tasks/1/2/3", 404, "not_found"),
        ("DELETE", "/api/tasks", 405, "method_not_allowed"),
        ("POST", "/api/me", 405, "method_not_allowed"),
        ("GET", "/api/tasks/not-a-uuid", 404, "not_found"),
        ("GET", f"/api/tasks/{uuid.uuid4()}", 404, "not_found"),
        ("POST", f"/api/tasks/{uuid.uuid4()}/cancel", 404, "not_found"),
    ]:
        assert call(orchestrator, api_event(method, path, tokens["ada"]))[:2] == (status, {"error": error})


def test_listing_is_newest_first_in_pages(stack: Stack, tokens: dict[str, str]) -> None:
    orchestrator = stack.orchestrator()
    created = []
    for index in range(5):
        event = api_event("POST", "/api/tasks", tokens["hank"], {"type": "echo", "payload": {"n": index}})
        created.append(call(orchestrator, event)[1]["task_id"])
    stack.drain()
    seen, cursor = [], None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        status, page, _ = call(orchestrator, api_event("GET", "/api/tasks", tokens["hank"], query=query))
        assert status == 200
        assert len(page["tasks"]) <= 2
        seen += [task["id"] for task in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]
    for query, reason in (
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
    ):
        status, body, _ = call(orchestrator, api_event("GET", "/api/tasks", tokens["hank"], query=query))
        assert (status, body["error"]) == (400, "invalid_request")
        assert reason in body["message"]
    status, body, _ = call(
        orchestrator, api_event("GET", "/api/tasks", tokens["hank"], query={"status": "succeeded"})
    )
    assert (status, body) == (200, {"tasks": [], "next_cursor": None})


def test_cancel_then_cancel_again(stack: Stack, tokens: dict[str, str]) -> None:
    orchestrator = stack.orchestrator()
    task_id = call(
        orchestrator, api_event("POST", "/api/tasks", tokens["ada"], {"type": "echo", "payload": {}})
    )[1]["task_id"]
    stack.drain()
    status, task, _ = call(orchestrator, api_event("POST", f"/api/tasks/{task_id}/cancel", tokens["carol"]))
    assert (status, task["status"]) == (200, "cancelled")
    status, body, _ = call(orchestrator, api_event("POST", f"/api/tasks/{task_id}/cancel", tokens["carol"]))
    assert (status, body["error"]) == (409, "task_finished")


# --- isolation -----------------------------------------------------------------------------------------------


def test_another_organizations_task_is_a_404_and_stays_untouched(
    stack: Stack, tokens: dict[str, str]
) -> None:
    orchestrator = stack.orchestrator()
    task_id = call(
        orchestrator,
        api_event("POST", "/api/tasks", tokens["ada"], {"type": "echo", "payload": {"secret": 42}}),
    )[1]["task_id"]
    stack.drain()
    before = stack.tasks_of("acme")
    for method, path in (("GET", f"/api/tasks/{task_id}"), ("POST", f"/api/tasks/{task_id}/cancel")):
        status, body, _ = call(orchestrator, api_event(method, path, tokens["hank"]))
        assert (status, body) == (404, {"error": "not_found"})
    status, listing, _ = call(
        orchestrator, api_event("GET", "/api/tasks", tokens["hank"], query={"limit": "100"})
    )
    assert task_id not in [task["id"] for task in listing["tasks"]]
    assert stack.tasks_of("acme") == before


# --- failures --------------------------------------------------------------------------------------------------


def test_broker_down_is_a_503_and_no_task_is_left_queued(
    stack: Stack, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    before = stack.tasks_of("acme")
    nowhere = Broker(lambda: [f"amqp://{ORCHESTRATOR}:x@127.0.0.1:1/{VHOST}"], connect_timeout=2)
    event = api_event("POST", "/api/tasks", tokens["ada"], {"type": "echo", "payload": {}})
    with caplog.at_level(logging.INFO, logger="tenantforge.orchestrator"):
        status, body, headers = call(stack.orchestrator(broker=nowhere), event)
    assert (status, body, headers["Retry-After"]) == (503, {"error": "unavailable"}, "5")
    assert stack.tasks_of("acme") == before
    assert json.loads(caplog.records[-1].getMessage())["reason"] == "BrokerUnavailable"
    assert tokens["ada"] not in caplog.text


def test_a_refused_publish_rolls_the_row_back(stack: Stack, tokens: dict[str, str]) -> None:
    """The worker user may not publish to `tasks`: the broker closes the channel, nothing is kept."""
    before = stack.tasks_of("acme")
    as_worker = Broker(lambda: stack.amqp_urls(WORKER))
    event = api_event("POST", "/api/tasks", tokens["ada"], {"type": "echo", "payload": {}})
    assert call(stack.orchestrator(broker=as_worker), event)[:2] == (503, {"error": "unavailable"})
    assert stack.tasks_of("acme") == before
    assert stack.drain() == []


def test_the_connection_comes_back_after_a_node_is_lost(stack: Stack, tokens: dict[str, str]) -> None:
    broker = Broker(stack.amqp_urls)
    orchestrator = stack.orchestrator(broker=broker)
    event = api_event("POST", "/api/tasks", tokens["ada"], {"type": "echo", "payload": {}})
    assert call(orchestrator, event)[0] == 202
    stack.broker.kill(stack.broker.nodes[0])
    try:
        # The first call may find its connection dead (503, nothing kept); the next reconnects to
        # the next node of the list.
        statuses = [call(orchestrator, event)[0] for _ in range(2)]
        assert statuses[-1] == 202 and set(statuses) <= {202, 503}
    finally:
        stack.broker.run().assert_ok()
    published = {json.loads(body)["task_id"] for _, _, body in stack.drain()}
    recorded = {task_id for task_id, status in stack.tasks_of("acme") if status == "queued"}
    assert published <= recorded


def test_database_down_is_a_503(stack: Stack, tokens: dict[str, str]) -> None:
    nowhere = Database(lambda: "host=127.0.0.1 port=1 user=x password=y dbname=z", connect_timeout=2)
    event = api_event("GET", "/api/tasks", tokens["ada"])
    assert call(stack.orchestrator(database=nowhere), event)[:2] == (503, {"error": "unavailable"})


# --- the worker ------------------------------------------------------------------------------------------------


class Workers:
    """Consumers of the real worker code, each in a thread of its own, as the worker user."""

    def __init__(
        self, stack: Stack, count: int = 1, prefetch: int = 10, runner: Runner | None = None
    ) -> None:
        self.consumers = [
            Consumer(
                Worker(Database(stack.app_dsn), Database(stack.app_dsn), runner or Runner()).process,
                lambda: stack.amqp_urls(WORKER),
                [f"tasks.{task_type}" for task_type in TASK_TYPES],
                prefetch,
            )
            for _ in range(count)
        ]
        self.threads = [threading.Thread(target=consumer.run, daemon=True) for consumer in self.consumers]

    def __enter__(self) -> Workers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for consumer in self.consumers:
            consumer.stop()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads)


class StatusEvents:
    """A temporary queue bound to every status event, declared as the administrator."""

    def __init__(self, stack: Stack) -> None:
        self.connection = stack.broker.connect(ADMIN)
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, "task-status", "#")

    def of(self, task_id: str) -> list[str]:
        events = []
        while True:
            method, _, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                break
            events.append(json.loads(body))
        self.seen = getattr(self, "seen", []) + events
        return [event["status"] for event in self.seen if event["task_id"] == task_id]

    def close(self) -> None:
        self.connection.close()


def submit(stack: Stack, token: str, payload: dict[str, Any], task_type: str = "echo") -> str:
    event = api_event("POST", "/api/tasks", token, {"type": task_type, "payload": payload})
    status, body, _ = call(stack.orchestrator(), event)
    assert status == 202, body
    return str(body["task_id"])


def wait_for(stack: Stack, token: str, task_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    """The tasks once none is queued or running."""
    deadline = time.monotonic() + timeout
    orchestrator = stack.orchestrator()
    while True:
        found = {
            task_id: call(orchestrator, api_event("GET", f"/api/tasks/{task_id}", token))[1]
            for task_id in task_ids
        }
        if all(task["status"] in ("succeeded", "failed", "cancelled") for task in found.values()):
            return found
        assert time.monotonic() < deadline, {task_id: task["status"] for task_id, task in found.items()}
        time.sleep(0.2)


def runs(stack: Stack, slug: str) -> dict[str, int]:
    """How many times each task of the organization was started (its task.run audit events)."""
    with stack.owner() as owner, owner.transaction():
        row = owner.execute("SELECT id::text FROM organizations WHERE slug = %s", (slug,)).fetchone()
        assert row is not None
        owner.execute("SELECT set_config('app.current_org_id', %s, true)", (row[0],))
        counted = owner.execute(
            "SELECT target_id, count(*) FROM audit_events WHERE action = 'task.run' GROUP BY 1"
        ).fetchall()
    return {task_id: int(count) for task_id, count in counted}


def test_a_task_runs_and_reports_each_status(stack: Stack, tokens: dict[str, str]) -> None:
    stack.drain()
    events = StatusEvents(stack)
    try:
        with Workers(stack):
            task_id = submit(stack, tokens["carol"], {"message": "hello"})
            task = wait_for(stack, tokens["carol"], [task_id])[task_id]
            assert (task["status"], task["result"], task["error"]) == (
                "succeeded",
                {"echo": {"message": "hello"}},
                None,
            )
            deadline = time.monotonic() + 10
            while events.of(task_id) != ["running", "succeeded"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert events.of(task_id) == ["running", "succeeded"]
    finally:
        events.close()
    assert runs(stack, "acme")[task_id] == 1


def test_a_duplicate_delivery_runs_the_task_once(stack: Stack, tokens: dict[str, str]) -> None:
    """The same message twice, to two workers at once, while the task takes 1.5 s."""
    stack.drain()
    task_id = submit(stack, tokens["carol"], {"delay_ms": 1500})
    ((method, properties, body),) = stack.drain()
    broker = Broker(stack.amqp_urls)
    with Workers(stack, count=2, prefetch=1):
        broker.publish("tasks", method.routing_key, body, properties.message_id, "echo")
        broker.publish("tasks", method.routing_key, body, properties.message_id, "echo")
        assert wait_for(stack, tokens["carol"], [task_id])[task_id]["status"] == "succeeded"
        time.sleep(2)  # the second delivery has waited on the lock, then found the task finished
        assert stack.drain() == []
    assert runs(stack, "acme")[task_id] == 1


def test_a_message_without_a_row_is_dropped_and_a_bad_one_dead_lettered(
    stack: Stack, tokens: dict[str, str]
) -> None:
    org_id = context_of(tokens["ada"], stack)["org_id"]
    ghost = str(uuid.uuid4())
    broker = Broker(stack.amqp_urls)
    with stack.broker.connect(ADMIN) as connection:
        connection.channel().queue_purge("dead-letter")
    with Workers(stack):
        broker.publish("tasks", f"{org_id}.echo", tasks.message(ghost, org_id, "echo"), ghost, "echo")
        broker.publish("tasks", f"{org_id}.echo", b"not json", str(uuid.uuid4()), "echo")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with stack.broker.connect(ADMIN) as connection:
                dead = connection.channel().queue_declare("dead-letter", passive=True).method.message_count
            if dead == 1:
                break
            time.sleep(0.2)
    assert dead == 1
    assert stack.drain() == []
    assert ghost not in runs(stack, "acme")


def test_a_cancelled_task_does_not_run_and_a_running_one_ends_cancelled(
    stack: Stack, tokens: dict[str, str]
) -> None:
    orchestrator = stack.orchestrator()
    queued = submit(stack, tokens["carol"], {"message": "never"})
    assert call(orchestrator, api_event("POST", f"/api/tasks/{queued}/cancel", tokens["carol"]))[0] == 200
    with Workers(stack):
        slow = submit(stack, tokens["carol"], {"delay_ms": 3000})
        deadline = time.monotonic() + 20
        while (
            call(orchestrator, api_event("GET", f"/api/tasks/{slow}", tokens["carol"]))[1]["status"]
            != "running"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status, task, _ = call(orchestrator, api_event("POST", f"/api/tasks/{slow}/cancel", tokens["carol"]))
        assert (status, task["status"]) == (200, "cancelled")
        done = wait_for(stack, tokens["carol"], [queued, slow])
        time.sleep(3.5)  # the slow task has finished running: its outcome must not replace the cancel
        done = wait_for(stack, tokens["carol"], [queued, slow])
    assert {task_id: task["status"] for task_id, task in done.items()} == {
        queued: "cancelled",
        slow: "cancelled",
    }
    assert done[slow]["result"] is None
    assert queued not in runs(stack, "acme")


def test_http_check_reaches_allowed_origins_only(stack: Stack, tokens: dict[str, str]) -> None:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        allowed = worker_origin(base)
        assert allowed == f"http://127.0.0.1:{server.server_port}"
        with Workers(stack, runner=Runner(frozenset({allowed}), 5)):
            ids = [
                submit(stack, tokens["carol"], {"url": f"{base}/health"}, "http_check"),
                submit(stack, tokens["carol"], {"url": f"{base}/down"}, "http_check"),
                submit(
                    stack, tokens["carol"], {"url": "http://169.254.169.254/latest/meta-data/"}, "http_check"
                ),
                submit(stack, tokens["carol"], {"url": "file:///etc/passwd"}, "http_check"),
            ]
            done = wait_for(stack, tokens["carol"], ids)
    finally:
        server.shutdown()
    healthy, down, metadata, local_file = (done[task_id] for task_id in ids)
    assert healthy["status"] == "succeeded" and healthy["result"]["status"] == 200
    assert (down["status"], down["error"]) == ("failed", "GET answered 503")
    for refused in (metadata, local_file):
        assert refused["status"] == "failed" and "allowed origin" in refused["error"]


def test_every_task_of_a_burst_runs_once_while_a_node_is_lost(stack: Stack, tokens: dict[str, str]) -> None:
    """1,000 tasks; the first node (the first one both sides connect to) is stopped mid-burst and
    started again. Every task ends succeeded, started exactly once."""
    stack.drain()
    token = tokens["hank"]
    orchestrator = stack.orchestrator()
    before = len(stack.tasks_of("globex"))
    submitted: list[str] = []
    refused = 0
    with Workers(stack, count=2, prefetch=20):
        for index in range(1000):
            if index == 300:
                stack.broker.kill(stack.broker.nodes[0])
            event = api_event("POST", "/api/tasks", token, {"type": "echo", "payload": {"n": index}})
            status, body, _ = call(orchestrator, event)
            if status == 202:
                submitted.append(body["task_id"])
            else:
                assert status == 503  # the moment the node went: nothing recorded, the client retries
                refused += 1
        stack.broker.run().assert_ok()
        done = wait_for(stack, token, submitted, timeout=600)
    assert refused <= 5
    assert {task["status"] for task in done.values()} == {"succeeded"}
    counted = runs(stack, "globex")
    assert [counted.get(task_id) for task_id in submitted] == [1] * len(submitted)
    # Nothing recorded beyond what was accepted: the refused submissions left no row.
    assert len(stack.tasks_of("globex")) == before + len(submitted)


# --- the WebSocket routes ----------------------------------------------------------------------------------


def load_websocket_routes() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "websocket_routes", REPO / "lambdas" / "websocket_api" / "handler.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WEBSOCKET = load_websocket_routes()


def ws_event(
    route: str, connection_id: str, context: dict[str, Any] | None, token: str | None = None, body: Any = None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "requestContext": {
            "routeKey": route,
            "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE"),
            "connectionId": connection_id,
            "stage": "prod",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            **({"authorizer": context} if context is not None else {}),
        },
        "isBase64Encoded": False,
    }
    if token is not None:
        event["queryStringParameters"] = {"token": token}
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


def ws_routes(stack: Stack, database: Database | None = None) -> Any:
    return WEBSOCKET.WebSocketRoutes(stack.settings, stack.keys().get, database or Database(stack.app_dsn))


def connection_row(stack: Stack, slug: str, connection_id: str) -> tuple[Any, ...] | None:
    with stack.owner() as owner, owner.transaction():
        row = owner.execute("SELECT id::text FROM organizations WHERE slug = %s", (slug,)).fetchone()
        assert row is not None
        owner.execute("SELECT set_config('app.current_org_id', %s, true)", (row[0],))
        return owner.execute(
            "SELECT user_id::text, extract(epoch FROM expires_at)::bigint, subscribed_all, task_ids::text[] "
            "FROM websocket_connections WHERE connection_id = %s",
            (connection_id,),
        ).fetchone()


def ws_call(routes: Any, event: dict[str, Any]) -> tuple[int, Any]:
    result = routes.handle(event)
    return result["statusCode"], json.loads(result["body"]) if "body" in result else None


def test_a_connection_is_stored_under_its_organization_and_subscribes(
    stack: Stack, tokens: dict[str, str]
) -> None:
    routes = ws_routes(stack)
    context = context_of(tokens["carol"], stack)
    connection_id = f"conn-{uuid.uuid4().hex[:12]}="
    assert ws_call(routes, ws_event("$connect", connection_id, context, tokens["carol"])) == (200, None)
    exp = jwt.decode(tokens["carol"], options={"verify_signature": False})["exp"]
    assert connection_row(stack, "acme", connection_id) == (context["user_id"], exp, False, [])
    assert connection_row(stack, "globex", connection_id) is None
    # Subscribing: everything, then a list (sorted, each once, lower-case).
    assert ws_call(
        routes, ws_event("subscribe", connection_id, context, body={"action": "subscribe", "all": True})
    ) == (200, {"subscribed": "all"})
    assert connection_row(stack, "acme", connection_id)[2] is True  # type: ignore[index]
    ids = [str(uuid.uuid4()) for _ in range(3)]
    body = {"action": "subscribe", "task_ids": [ids[2].upper(), ids[0], ids[1], ids[0]]}
    status, answer = ws_call(routes, ws_event("subscribe", connection_id, context, body=body))
    assert (status, answer) == (200, {"subscribed": sorted(ids)})
    assert connection_row(stack, "acme", connection_id)[2:] == (False, sorted(ids))  # type: ignore[index]
    # Globex's connection context cannot touch acme's connection: row-level security hides it.
    hank = context_of(tokens["hank"], stack)
    assert ws_call(
        routes, ws_event("subscribe", connection_id, hank, body={"action": "subscribe", "all": True})
    ) == (410, {"error": "gone"})
    assert ws_call(routes, ws_event("$disconnect", connection_id, hank)) == (200, None)
    assert connection_row(stack, "acme", connection_id) is not None
    assert ws_call(routes, ws_event("$disconnect", connection_id, context)) == (200, None)
    assert connection_row(stack, "acme", connection_id) is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"action": "subscribe"}, "invalid_request"),
        ({"action": "subscribe", "task_ids": []}, "invalid_request"),
        ({"action": "subscribe", "task_ids": ["not-a-uuid"]}, "invalid_request"),
        ({"action": "subscribe", "task_ids": [str(uuid.uuid4()) for _ in range(101)]}, "invalid_request"),
        ({"action": "subscribe", "all": True, "task_ids": [str(uuid.uuid4())]}, "invalid_request"),
        ({"action": "unsubscribe"}, "invalid_request"),
        ("{not json", "invalid_request"),
    ],
)
def test_a_bad_subscription_is_refused(stack: Stack, tokens: dict[str, str], body: Any, error: str) -> None:
    routes = ws_routes(stack)
    context = context_of(tokens["dan"], stack)
    connection_id = f"conn-{uuid.uuid4().hex[:12]}="
    assert ws_call(routes, ws_event("$connect", connection_id, context, tokens["dan"]))[0] == 200
    assert ws_call(routes, ws_event("subscribe", connection_id, context, body=body)) == (
        400,
        {"error": error},
    )
    assert connection_row(stack, "acme", connection_id)[2:] == (False, [])  # type: ignore[index]


def test_connect_checks_the_token_again(stack: Stack, tokens: dict[str, str]) -> None:
    routes = ws_routes(stack)
    carol, hank = context_of(tokens["carol"], stack), context_of(tokens["hank"], stack)
    connection_id = f"conn-{uuid.uuid4().hex[:12]}="
    for context, token, expected in [
        (carol, None, (401, {"error": "invalid_token"})),
        (carol, "not.a.token", (401, {"error": "invalid_token"})),
        (hank, tokens["carol"], (403, {"error": "context_mismatch"})),
        ({**carol, "user_id": hank["user_id"]}, tokens["carol"], (403, {"error": "context_mismatch"})),
        (None, tokens["carol"], (401, {"error": "unauthorized"})),
        ({"org_id": "acme"}, tokens["carol"], (401, {"error": "unauthorized"})),
    ]:
        assert ws_call(routes, ws_event("$connect", connection_id, context, token)) == expected
    assert connection_row(stack, "acme", connection_id) is None
    assert connection_row(stack, "globex", connection_id) is None


def test_subscribing_needs_tasks_read_and_a_live_connection(stack: Stack, tokens: dict[str, str]) -> None:
    routes = ws_routes(stack)
    context = context_of(tokens["carol"], stack)
    connection_id = f"conn-{uuid.uuid4().hex[:12]}="
    assert ws_call(routes, ws_event("$connect", connection_id, context, tokens["carol"]))[0] == 200
    no_read = {**context, "permissions": "tasks:create"}
    body = {"action": "subscribe", "all": True}
    assert ws_call(routes, ws_event("subscribe", connection_id, no_read, body=body)) == (
        403,
        {"error": "forbidden"},
    )
    stack_org = context["org_id"]
    with stack.owner() as owner, owner.transaction():
        owner.execute("SELECT set_config('app.current_org_id', %s, true)", (stack_org,))
        owner.execute(
            "UPDATE websocket_connections SET expires_at = now() AT TIME ZONE 'UTC' - interval '1 second' "
            "WHERE connection_id = %s",
            (connection_id,),
        )
    assert ws_call(routes, ws_event("subscribe", connection_id, context, body=body)) == (
        410,
        {"error": "gone"},
    )
    nowhere = Database(lambda: "host=127.0.0.1 port=1 user=x password=y dbname=z", connect_timeout=2)
    assert ws_call(ws_routes(stack, nowhere), ws_event("subscribe", connection_id, context, body=body)) == (
        503,
        {"error": "unavailable"},
    )


# --- the notifier ------------------------------------------------------------------------------------------


class ManagementApi:
    """A local stand-in for the API Gateway Management API's POST /@connections/{id}: records what
    each connection was sent; the connections in ``gone`` answer 410 GoneException, as AWS does."""

    def __init__(self, gone: set[str]) -> None:
        self.gone = gone
        self.received: list[tuple[str, dict[str, Any]]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(length)
                connection_id = urllib.parse.unquote(self.path.rsplit("/@connections/", 1)[1])
                if connection_id in recorder.gone:
                    body = b'{"message": "Gone"}'
                    self.send_response(410)
                    self.send_header("x-amzn-ErrorType", "GoneException")
                else:
                    recorder.received.append((connection_id, json.loads(data)))
                    body = b""
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/prod"

    def __enter__(self) -> ManagementApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def connect(stack: Stack, token: str, subscription: dict[str, Any] | None) -> str:
    routes = ws_routes(stack)
    context = context_of(token, stack)
    connection_id = f"conn-{uuid.uuid4().hex[:12]}="
    assert ws_call(routes, ws_event("$connect", connection_id, context, token))[0] == 200
    if subscription is not None:
        body = {"action": "subscribe", **subscription}
        assert ws_call(routes, ws_event("subscribe", connection_id, context, body=body))[0] == 200
    return connection_id


def test_a_status_event_reaches_its_organizations_subscribers_only(
    stack: Stack, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    task_id, other_task = str(uuid.uuid4()), str(uuid.uuid4())
    everything = connect(stack, tokens["carol"], {"all": True})
    this_task = connect(stack, tokens["dan"], {"task_ids": [task_id]})
    another_task = connect(stack, tokens["dan"], {"task_ids": [other_task]})
    unsubscribed = connect(stack, tokens["carol"], None)
    closed = connect(stack, tokens["ada"], {"all": True})
    expired = connect(stack, tokens["ada"], {"all": True})
    other_org = connect(stack, tokens["hank"], {"all": True})
    org_id = context_of(tokens["carol"], stack)["org_id"]
    with stack.owner() as owner, owner.transaction():
        owner.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
        owner.execute(
            "UPDATE websocket_connections SET expires_at = now() AT TIME ZONE 'UTC' - interval '1 second' "
            "WHERE connection_id = %s",
            (expired,),
        )
    with ManagementApi(gone={closed}) as api:
        notifier = Notifier(Database(stack.app_dsn), management_post(api.endpoint))
        event = {"task_id": task_id, "org_id": org_id, "type": "echo", "status": "succeeded"}
        outcome = notifier.process(json.dumps(event).encode())
    assert (outcome.action, outcome.reason) == ("ack", "sent=2,gone=1,failed=0")
    assert sorted(api.received, key=lambda item: item[0]) == sorted(
        [(everything, {"event": "task.status", **event}), (this_task, {"event": "task.status", **event})]
    )
    assert all(connection_row(stack, "acme", gone) is None for gone in (closed, expired))
    assert all(
        connection_row(stack, "acme", kept) is not None
        for kept in (everything, this_task, another_task, unsubscribed)
    )
    assert connection_row(stack, "globex", other_org) is not None
    for bad in (
        b"not json",
        b"[]",
        json.dumps({**event, "org_id": "acme"}).encode(),
        json.dumps({**event, "status": "x"}).encode(),
    ):
        assert notifier.process(bad).action == "reject"


def test_a_task_status_travels_from_the_worker_to_a_subscribed_connection(
    stack: Stack, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path: POST /api/tasks, the worker on the real cluster, its status events on
    `task-status`, the notifier's consumer on the platform's queue `task-status.notifier` as the
    `notifier` user, the Management API."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    queue = "task-status.notifier"
    # The status events of the earlier tests' tasks wait there too.
    with stack.broker.connect(NOTIFIER) as connection:
        connection.channel().queue_purge(queue)
    watcher = connect(stack, tokens["carol"], {"all": True})
    try:
        with ManagementApi(gone=set()) as api:
            notifier = Notifier(Database(stack.app_dsn), management_post(api.endpoint))
            consumer = Consumer(notifier.process, lambda: stack.amqp_urls(NOTIFIER), [queue], 10)
            thread = threading.Thread(target=consumer.run, daemon=True)
            thread.start()
            try:
                with Workers(stack):
                    task_id = submit(stack, tokens["carol"], {"message": "live"})
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        statuses = [
                            body["status"]
                            for connection_id, body in api.received
                            if connection_id == watcher and body["task_id"] == task_id
                        ]
                        if statuses == ["running", "succeeded"]:
                            break
                        time.sleep(0.1)
            finally:
                consumer.stop()
                thread.join(timeout=30)
        assert statuses == ["running", "succeeded"]
        # Other subscribed connections of acme (earlier tests') may have got it too; none of globex's.
        receivers = {connection_id for connection_id, _ in api.received}
        assert watcher in receivers
        assert all(connection_row(stack, "acme", receiver) is not None for receiver in receivers)
    finally:
        with stack.broker.connect(NOTIFIER) as connection:
            connection.channel().queue_purge(queue)


def test_the_handlers_build_themselves_from_the_environment(
    stack: Stack, tokens: dict[str, str], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in Lambda: nothing injected, settings and secret ids from the environment, the JWKS and
    the database login read from Secrets Manager (the emulator)."""
    sm = emulator.client("secretsmanager")
    prefix = f"tenantforge/test-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=f"{prefix}/jwt/jwks", SecretString=json.dumps(stack.jwks))
    login = {"username": "tenantforge_app", "password": stack.database.passwords["tenantforge_app"]}
    sm.create_secret(Name=f"{prefix}/postgres/app", SecretString=json.dumps(login))
    environment = {
        "AWS_ENDPOINT_URL": emulator.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_JWKS_SECRET_ID": f"{prefix}/jwt/jwks",
        "DATABASE_URL": f"postgresql://127.0.0.1:{stack.database.pgbouncer_port}/tenantforge",
        "DATABASE_SECRET_ID": f"{prefix}/postgres/app",
        "AMQP_URL": ",".join(stack.amqp_urls()),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(secrets, "_clients", [])
    handler.reset()
    WEBSOCKET.reset()
    try:
        response = handler.handler(api_event("GET", "/api/tasks", tokens["dan"], query={"limit": "1"}), None)
        assert response["statusCode"] == 200, response
        context = context_of(tokens["dan"], stack)
        connection_id = f"conn-{uuid.uuid4().hex[:12]}="
        connected = WEBSOCKET.handler(ws_event("$connect", connection_id, context, tokens["dan"]), None)
        assert connected == {"statusCode": 200}
        assert connection_row(stack, "acme", connection_id) is not None
    finally:
        handler.reset()
        WEBSOCKET.reset()
