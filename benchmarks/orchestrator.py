"""Tasks accepted per second by the Agent Orchestrator in-process, next to raw pika publishes with
confirms on the same cluster; end-to-end latency from the POST to the task's ``succeeded`` event.

A private stack, as the other benchmarks start theirs: the 3-node RabbitMQ cluster of ``rabbitmq.py``
(``playbooks/platform.yml``, component rabbitmq, local target, free ports, generated secrets) and
PostgreSQL 15 behind PgBouncer of ``pgbouncer.py`` (components postgres and pgbouncer), each in a
temporary directory outside the repository. The Prisma migrations are applied as
``tenantforge_owner`` and one organization (``bench``, the default roles, ``admin@bench.example`` as
its owner) is made with ``tenant_bootstrap``'s functions (``check_tenants``, ``check_permissions``,
``converge``). Both stacks are stopped through the playbook and their directories removed at the end,
also on error, Ctrl-C or SIGTERM (a signal during the stop waits until the stop is done). Nothing of
``make run`` is touched.

Everything of the code under test runs in this process, built as ``tests/integration/
test_orchestrator.py`` builds it: ``Orchestrator(settings, keys, database, broker)`` from
``lambdas/orchestrator/handler.py``, with a ``JwksCache`` over an in-memory JWKS (one P-256 key), a
token for the owner issued by ``Issuer(...).issue`` (ES256), ``Database`` as ``tenantforge_app``
through PgBouncer and ``Broker`` on the three nodes as ``tenantforge_orchestrator``. The loggers
``tenantforge.orchestrator`` and ``tenantforge.worker`` stay at INFO with a ``NullHandler``: each
call's JSON line is built, as in Lambda, and not written.

1. **Accepted tasks per second** (``--tasks N``, no worker running: the messages stay in the quorum
   queue ``tasks.echo``, which is purged as the administrator afterwards). ``Orchestrator.handle``
   of ``POST /api/tasks`` REST proxy events (``{"type": "echo", "payload": {...}}``, the owner's
   token, the authorizer's context as API Gateway passes it), one at a time in one thread. What one
   accepted task costs on top of the publish: the token verified again (header checks, the JWKS
   lookup, the ES256 signature, the claims) and the context compared with it; the body parsed and
   checked; a PostgreSQL transaction through PgBouncer (``set_config`` of the organization for row
   level security, the task's transaction-level advisory lock, ``INSERT`` of the task and of its
   ``task.create`` audit event); then, inside that transaction, the publish to exchange ``tasks``
   (persistent, mandatory, waiting for the confirm, i.e. for two of the three quorum members); then
   the ``COMMIT``; and the response and the log line.
   The baseline, in the same run on the same cluster: a raw pika loop as the same user, one
   ``BlockingConnection`` to the same node, a channel with ``confirm_delivery()``, publishing as many
   messages of the same size and properties (the task message ``{"org_id", "task_id", "type"}``,
   persistent, ``mandatory=True``) to ``tasks`` with routing key ``<org_id>.echo``, each waiting for
   its confirm. The two run alternately in blocks of 100 (which one goes first alternates too), so
   a change of load weighs on both; each side's wall time is the sum of its blocks. The ratio divides
   the orchestrator's tasks/s by the raw loop's messages/s. 20 untimed calls of each come first.
2. **End-to-end latency** (``--e2e-tasks M``): two worker consumers of ``tenantforge_lambda/
   worker.py`` (``Consumer(Worker(...).process, ...)`` on the queues ``tasks.<type>``, threads of this
   process, prefetch 10, as ``tenantforge_worker``) and a temporary exclusive queue bound to exchange
   ``task-status`` with key ``#`` (declared as the administrator, consumed in a thread of its own,
   which notes the arrival of each event). The tasks are submitted **sequentially**: ``handle()``,
   then wait for that task's ``succeeded`` event, then the next; so each latency is that of an idle
   system, without queueing behind other tasks. The latency runs from just before ``handle()`` to the
   arrival of the event; ``handle()`` alone and the ``running`` event are reported too. The workers
   share this process (and its GIL) with ``handle()``, as in the integration tests. Every task must
   end ``succeeded`` (read back as the owner): the benchmark stops with an error otherwise. 5 untimed
   tasks come first.

Latencies are in milliseconds (p50, p99, max). Nothing is asserted about timing.

    .venv/bin/python benchmarks/orchestrator.py
    .venv/bin/python benchmarks/orchestrator.py --tasks 500 --e2e-tasks 100 --json /tmp/orchestrator.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import quote

import pika
import psycopg
from pgbouncer import DATABASE, BenchmarkError, free_port, pgbouncer_version, table, write_secrets
from pgbouncer import Stack as DatabaseStack
from rabbitmq import USERS, VHOST, running_stack, wait_for_messages
from rabbitmq import Stack as BrokerStack
from tenants import TERMINATION, load

REPO = Path(__file__).resolve().parent.parent
LAMBDAS = REPO / "lambdas"
HANDLER = LAMBDAS / "orchestrator" / "handler.py"
COLLECTIONS = REPO / ".local" / "collections"
MIGRATIONS = REPO / "prisma" / "migrations"
# The function zip's root: tenantforge_lambda imports from there (pytest has it from pyproject).
if str(LAMBDAS) not in sys.path:
    sys.path.insert(0, str(LAMBDAS))

from tenantforge_lambda import tasks  # noqa: E402
from tenantforge_lambda.broker import Broker  # noqa: E402
from tenantforge_lambda.config import Settings  # noqa: E402
from tenantforge_lambda.database import Database  # noqa: E402
from tenantforge_lambda.issuing import Issuer  # noqa: E402
from tenantforge_lambda.jwks import JwksCache  # noqa: E402
from tenantforge_lambda.signing import SigningKey  # noqa: E402
from tenantforge_lambda.worker import Consumer, Runner, Worker  # noqa: E402

ADMIN = USERS["rabbitmq-admin"]
ORCHESTRATOR = USERS["rabbitmq-orchestrator"]
WORKER = USERS["rabbitmq-worker"]
OWNER, APP = "tenantforge_owner", "tenantforge_app"
ISSUER = "https://auth.tenantforge.bench"
AUDIENCE = "tenantforge-api"
JWKS_ID = "tenantforge/bench/jwks"  # never read: the JWKS is served from memory
ORG = {"org_slug": "bench", "org_name": "Benchmark", "admin_email": "admin@bench.example"}
QUEUE = f"{tasks.TASKS_EXCHANGE}.echo"
# The database stack's start: the rendered bundles of objects are of no use here.
NO_BUNDLE = {"postgres_local_bundle": False, "pgbouncer_local_bundle": False}
BLOCK = 100  # calls per block; the orchestrator and the raw loop alternate block by block
WARMUP = 20  # untimed calls of each before the throughput measurement
E2E_WARMUP = 5  # untimed tasks before the end-to-end measurement
WORKERS, PREFETCH = 2, 10
EVENT_TIMEOUT = 30.0  # seconds a task may take to end before the benchmark gives up
LOGGERS = ("tenantforge.orchestrator", "tenantforge.worker")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# The stacks


@contextlib.contextmanager
def held_on_exit(manager: AbstractContextManager[T]) -> Iterator[T]:
    """``manager``, whose exit (the stop of what it started) runs with SIGTERM and SIGINT held back
    (tenants.py's TERMINATION): a second Ctrl-C does not cut the stop short; it is acted on after."""
    with contextlib.ExitStack() as stack:
        value = stack.enter_context(manager)
        try:
            yield value
        finally:
            with TERMINATION.held():
                stack.close()


@contextlib.contextmanager
def database_stack(timeout: float, taken: set[int]) -> Iterator[DatabaseStack]:
    """pgbouncer.py's stack (not started yet) in a temporary directory; stopped and removed at the end."""
    with tempfile.TemporaryDirectory(prefix="tenantforge-orchestrator-benchmark-") as tmp:
        state_dir = Path(tmp).resolve()
        if state_dir.is_relative_to(REPO):
            raise BenchmarkError(f"the temporary directory {state_dir} is inside the repository; set TMPDIR")
        postgres_port = free_port(taken)
        pgbouncer_port = free_port(taken | {postgres_port})
        stack = DatabaseStack(state_dir, postgres_port, pgbouncer_port, write_secrets(state_dir), timeout)
        print(
            f"PostgreSQL on 127.0.0.1:{postgres_port}, PgBouncer on 127.0.0.1:{pgbouncer_port}; "
            f"state directory {state_dir}",
            flush=True,
        )
        try:
            yield stack
        finally:
            stack.stop()


@dataclass
class Stacks:
    database: DatabaseStack
    broker: BrokerStack

    def app_dsn(self) -> str:
        """tenantforge_app through PgBouncer, the way the functions connect."""
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.database.pgbouncer_port,
            user=APP,
            password=self.database.passwords[APP],
            dbname=DATABASE,
        )

    def owner(self) -> psycopg.Connection[Any]:
        """tenantforge_owner straight to PostgreSQL."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.database.postgres_port,
            user=OWNER,
            password=self.database.passwords[OWNER],
            dbname=DATABASE,
            autocommit=True,
        )

    def amqp_urls(self, user: str) -> list[str]:
        password = quote(self.broker.passwords[user], safe="")
        return [
            f"amqp://{user}:{password}@127.0.0.1:{node['amqp_port']}/{VHOST}" for node in self.broker.nodes
        ]

    def management(self, path: str) -> Any:
        """The management API of the first node, as the administrator."""
        token = base64.b64encode(f"{ADMIN}:{self.broker.passwords[ADMIN]}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.broker.nodes[0]['management_port']}{path}",
            headers={"Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http to 127.0.0.1
            return json.loads(response.read())

    def purge(self, queue: str = QUEUE) -> int:
        with self.broker.connect(ADMIN) as connection:
            return int(connection.channel().queue_purge(queue).method.message_count)

    def statuses(self, org_id: str, task_ids: Sequence[str]) -> dict[str, str]:
        """The status of each task, read as the owner with the organization set (row-level security)."""
        with self.owner() as owner, owner.transaction():
            owner.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
            rows = owner.execute(
                "SELECT id::text, status::text FROM tasks WHERE id = ANY(%s::uuid[])", (list(task_ids),)
            ).fetchall()
        return {str(task_id): str(status) for task_id, status in rows}

    def queued(self, org_id: str) -> int:
        with self.owner() as owner, owner.transaction():
            owner.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
            row = owner.execute("SELECT count(*) FROM tasks WHERE status = 'queued'").fetchone()
        return int(row[0]) if row else 0


def prepare_database(stacks: Stacks) -> tuple[str, float]:
    """Migrations and the organization, as the owner; (server version, seconds)."""
    sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.tenantforge.platform.plugins.module_utils.prisma_migrations import (
        migrate,
        read_migrations,
    )
    from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import (
        check_permissions,
        check_tenants,
        converge,
    )

    started = time.perf_counter()
    with stacks.owner() as owner:
        applied = migrate(owner, read_migrations(MIGRATIONS), check_mode=False)["applied"]
        tenants = check_tenants([ORG], prefix=True)
        catalog = check_permissions(owner, tenants, prefix=True)
        for tenant in tenants:
            converge(owner, tenant, catalog, check_mode=False)
        row = owner.execute("SHOW server_version").fetchone()
    seconds = time.perf_counter() - started
    print(f"{len(applied)} migrations applied and organization {ORG['org_slug']} made in {seconds:.2f}s")
    return (str(row[0]) if row else "?"), seconds


# --------------------------------------------------------------------------------------------------
# The code under test, in this process


def load_handler() -> ModuleType:
    """``lambdas/orchestrator/handler.py``, loaded from its file: ``import orchestrator`` would find this
    benchmark (benchmarks/orchestrator.py) first."""
    spec = importlib.util.spec_from_file_location("tenantforge_orchestrator_handler", HANDLER)
    if spec is None or spec.loader is None:
        raise BenchmarkError(f"cannot load {HANDLER}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Client:
    """A warm orchestrator, the owner's token and the authorizer's context of it."""

    orchestrator: Any
    token: str
    org_id: str
    user_id: str

    def event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A REST proxy event of ``POST /api/tasks``, as API Gateway passes it after the authorizer."""
        return {
            "resource": "/api/{proxy+}",
            "path": "/api/tasks",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
            "queryStringParameters": None,
            "body": json.dumps({"type": "echo", "payload": payload}),
            "isBase64Encoded": False,
            "requestContext": {
                "stage": "prod",
                "requestId": str(uuid.uuid4()),
                "authorizer": {"org_id": self.org_id, "user_id": self.user_id, "principalId": self.user_id},
            },
        }

    def submit(self, event: dict[str, Any]) -> str:
        """handle() of a POST event; the task id of a 202, BenchmarkError otherwise."""
        response = self.orchestrator.handle(event)
        if response["statusCode"] != 202:
            raise BenchmarkError(f"POST /api/tasks answered {response['statusCode']}: {response['body']}")
        return str(json.loads(response["body"])["task_id"])


def make_client(stacks: Stacks, handler: ModuleType) -> Client:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ansible_collections.tenantforge.platform.plugins.module_utils import secret_material

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = secret_material.public_jwk(key)
    jwks = {"keys": [jwk]}
    settings = Settings(algorithms=("ES256",), issuer=ISSUER, audience=AUDIENCE, jwks_secret_id=JWKS_ID)
    signing_key = SigningKey(jwk["kid"], "ES256", key)
    database = Database(stacks.app_dsn)
    try:
        issuer = Issuer(
            settings, database, lambda: signing_key, JwksCache(lambda: jwks, ("ES256",), 300, 30).get
        )
        issued = issuer.issue(str(ORG["org_slug"]), str(ORG["admin_email"]))
    finally:
        database.close()
    orchestrator = handler.Orchestrator(
        settings,
        JwksCache(lambda: jwks, settings.algorithms, 300, 30).get,
        Database(stacks.app_dsn),
        Broker(lambda: stacks.amqp_urls(ORCHESTRATOR)),
    )
    return Client(orchestrator, issued.token, str(issued.claims["org_id"]), str(issued.claims["sub"]))


def close_client(client: Client) -> None:
    client.orchestrator.broker.close()
    client.orchestrator.database.close()


# --------------------------------------------------------------------------------------------------
# 1. Accepted tasks per second


@dataclass
class Throughput:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def publish_raw(channel: Any, routing_key: str, messages: Sequence[tuple[str, bytes]]) -> list[float]:
    """The baseline: what Broker.publish sends, straight through pika, each publish waiting for its
    confirm; the latency of each (the properties and the publish)."""
    latencies = []
    for message_id, body in messages:
        started = time.perf_counter()
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            type="echo",
            timestamp=int(time.time()),
        )
        channel.basic_publish(tasks.TASKS_EXCHANGE, routing_key, body, properties, mandatory=True)
        latencies.append(time.perf_counter() - started)
    return latencies


def accept(client: Client, events: Sequence[dict[str, Any]]) -> list[float]:
    latencies = []
    for event in events:
        started = time.perf_counter()
        client.submit(event)
        latencies.append(time.perf_counter() - started)
    return latencies


def raw_messages(org_id: str, count: int) -> list[tuple[str, bytes]]:
    """Messages of the orchestrator's size: a task message with a fresh task id."""
    found = []
    for _ in range(count):
        task_id = str(uuid.uuid4())
        found.append((task_id, tasks.message(task_id, org_id, "echo")))
    return found


def throughput(stacks: Stacks, client: Client, count: int) -> tuple[list[Throughput], dict[str, Any]]:
    routing_key = f"{client.org_id}.echo"
    payload = {"message": "benchmark"}
    queued_before = stacks.queued(client.org_id)
    with stacks.broker.connect(ORCHESTRATOR) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        # Warm-up, not counted: the connections (PgBouncer, RabbitMQ), the JWKS parse, the first writes.
        print(f"warm-up: {WARMUP} calls of each ...", end=" ", flush=True)
        accept(client, [client.event(payload) for _ in range(WARMUP)])
        publish_raw(channel, routing_key, raw_messages(client.org_id, WARMUP))
        purged = stacks.purge()
        print(f"{purged} messages purged", flush=True)
        if purged != 2 * WARMUP:
            print(f"WARNING: {QUEUE} held {purged} messages after the warm-up, not {2 * WARMUP}")

        seconds = {"raw": 0.0, "orchestrator": 0.0}
        latencies: dict[str, list[float]] = {"raw": [], "orchestrator": []}
        print(f"{count} tasks through Orchestrator.handle and {count} raw publishes ...", end=" ", flush=True)
        done = 0
        round_index = 0
        while done < count:
            size = min(BLOCK, count - done)
            events = [client.event(payload) for _ in range(size)]
            messages = raw_messages(client.org_id, size)
            order = ("raw", "orchestrator") if round_index % 2 == 0 else ("orchestrator", "raw")
            for side in order:
                started = time.perf_counter()
                if side == "raw":
                    found = publish_raw(channel, routing_key, messages)
                else:
                    found = accept(client, events)
                seconds[side] += time.perf_counter() - started
                latencies[side] += found
            done += size
            round_index += 1
        print(f"{seconds['orchestrator']:.2f}s and {seconds['raw']:.2f}s", flush=True)
        channel.close()

    with stacks.broker.connect(ADMIN) as connection:
        in_queue = wait_for_messages(connection, QUEUE, 2 * count)
    purged = stacks.purge()
    rows = stacks.queued(client.org_id) - queued_before
    checks = {"messages_in_queue": in_queue, "messages_purged": purged, "task_rows_queued": rows}
    print(f"{QUEUE}: {in_queue} messages, purged; {rows} new task rows `queued`")
    if in_queue != 2 * count:
        print(f"WARNING: {QUEUE} held {in_queue} messages, not {2 * count}")
    if rows != count + WARMUP:
        print(f"WARNING: {rows} new task rows are queued, not {count + WARMUP}")
    results = [
        Throughput("raw pika publish, confirm (baseline)", count, seconds["raw"], latencies["raw"]),
        Throughput(
            "Orchestrator.handle POST /api/tasks", count, seconds["orchestrator"], latencies["orchestrator"]
        ),
    ]
    return results, checks


# --------------------------------------------------------------------------------------------------
# 2. End-to-end latency


class StatusEvents:
    """Every status event, as it arrives: a temporary exclusive queue bound to exchange task-status
    with key #, declared as the administrator and consumed in a thread of its own, which notes each
    event's arrival (time.perf_counter) by (task_id, status)."""

    def __init__(self, stacks: Stacks) -> None:
        self.stacks = stacks
        self.arrived: dict[tuple[str, str], float] = {}
        self.condition = threading.Condition()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._connection: Any = None
        self._channel: Any = None
        self._thread = threading.Thread(target=self._run, name="status-events", daemon=True)

    def _run(self) -> None:
        try:
            connection = self._connection = self.stacks.broker.connect(ADMIN)
            channel = self._channel = connection.channel()
            queue = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(queue, tasks.STATUS_EXCHANGE, "#")
            channel.basic_consume(queue, self._on_message, auto_ack=True)
            self.ready.set()
            channel.start_consuming()
        except BaseException as error:
            self.error = error
        finally:
            if self._connection is not None and self._connection.is_open:
                with contextlib.suppress(Exception):
                    self._connection.close()
            self.ready.set()
            with self.condition:
                self.condition.notify_all()

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        now = time.perf_counter()
        event = json.loads(body)
        with self.condition:
            self.arrived.setdefault((str(event["task_id"]), str(event["status"])), now)
            self.condition.notify_all()

    def final(self, task_id: str, timeout: float) -> tuple[str, float]:
        """(status, arrival) of the task's first event of a finished status."""

        def found() -> tuple[str, float] | None:
            for status in sorted(tasks.FINISHED):
                if (task_id, status) in self.arrived:
                    return status, self.arrived[(task_id, status)]
            return None

        with self.condition:
            self.condition.wait_for(lambda: found() is not None or self.error is not None, timeout)
            result = found()
        if result is None:
            cause = f" ({type(self.error).__name__}: {self.error})" if self.error else ""
            raise BenchmarkError(f"no final status event for task {task_id} within {timeout:.0f}s{cause}")
        return result

    def __enter__(self) -> StatusEvents:
        self._thread.start()
        self.ready.wait(30)
        if self.error is not None or self._channel is None:
            self.__exit__()
            raise BenchmarkError(f"the status event queue could not be consumed: {self.error}")
        return self

    def __exit__(self, *_exc: object) -> None:
        connection, channel = self._connection, self._channel
        if connection is not None and connection.is_open and channel is not None:
            with contextlib.suppress(Exception):
                connection.add_callback_threadsafe(channel.stop_consuming)
        self._thread.join(timeout=30)


class Workers:
    """Consumers of the real worker code, each in a thread of its own, as the worker user."""

    def __init__(self, stacks: Stacks, count: int, prefetch: int) -> None:
        self.workers = [
            Worker(Database(stacks.app_dsn), Database(stacks.app_dsn), Runner()) for _ in range(count)
        ]
        queues = [f"{tasks.TASKS_EXCHANGE}.{task_type}" for task_type in tasks.TASK_TYPES]
        self.consumers = [
            Consumer(worker.process, lambda: stacks.amqp_urls(WORKER), queues, prefetch)
            for worker in self.workers
        ]
        self.threads = [
            threading.Thread(target=consumer.run, name=f"worker-{index}", daemon=True)
            for index, consumer in enumerate(self.consumers)
        ]

    def __enter__(self) -> Workers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        for consumer in self.consumers:
            consumer.stop()
        for thread in self.threads:
            thread.join(timeout=30)
        for worker in self.workers:
            worker.lock_database.close()
            worker.status_database.close()
        if any(thread.is_alive() for thread in self.threads):
            print("WARNING: a worker thread did not stop within 30 s")


def wait_for_consumers(stacks: Stacks, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with stacks.broker.connect(ADMIN) as connection:
        channel = connection.channel()
        while True:
            found = channel.queue_declare(QUEUE, passive=True).method.consumer_count
            if found >= count:
                return
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{QUEUE} has {found} consumers after {timeout:.0f}s, not {count}")
            time.sleep(0.1)


@dataclass
class EndToEnd:
    accepted: list[float]  # handle() alone
    running: list[float]  # from just before handle() to the `running` event
    succeeded: list[float]  # from just before handle() to the `succeeded` event
    seconds: float


def end_to_end(stacks: Stacks, client: Client, count: int) -> EndToEnd:
    stacks.purge()
    accepted: list[float] = []
    running: list[float] = []
    succeeded: list[float] = []
    submitted: list[str] = []
    print(
        f"end to end: {WORKERS} workers (prefetch {PREFETCH}), {E2E_WARMUP} warm-up tasks, then {count} "
        "tasks one after the other ...",
        end=" ",
        flush=True,
    )
    with StatusEvents(stacks) as events, Workers(stacks, WORKERS, PREFETCH):
        wait_for_consumers(stacks, WORKERS)
        started_all = time.perf_counter()
        for index in range(E2E_WARMUP + count):
            event = client.event({"message": "benchmark", "n": index})
            started = time.perf_counter()
            task_id = client.submit(event)
            returned = time.perf_counter()
            submitted.append(task_id)
            status, arrived = events.final(task_id, EVENT_TIMEOUT)
            if status != "succeeded":
                raise BenchmarkError(f"task {task_id} ended {status}")
            if index < E2E_WARMUP:
                started_all = time.perf_counter()
                continue
            accepted.append(returned - started)
            succeeded.append(arrived - started)
            with events.condition:
                running_at = events.arrived.get((task_id, "running"))
            if running_at is not None:
                running.append(running_at - started)
        seconds = time.perf_counter() - started_all
    print(f"{seconds:.2f}s", flush=True)
    statuses = stacks.statuses(client.org_id, submitted)
    wrong = {task_id: statuses.get(task_id) for task_id in submitted if statuses.get(task_id) != "succeeded"}
    if wrong:
        sample = ", ".join(f"{task_id}: {status}" for task_id, status in list(wrong.items())[:5])
        raise BenchmarkError(f"{len(wrong)} of {len(submitted)} tasks did not end succeeded ({sample})")
    print(f"all {len(submitted)} tasks read back `succeeded` as the owner")
    if len(running) != count:
        print(f"WARNING: {count - len(running)} `running` events did not arrive before `succeeded`")
    return EndToEnd(accepted, running, succeeded, seconds)


# --------------------------------------------------------------------------------------------------
# Report


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and mean in milliseconds."""
    ordered = sorted(samples)
    if not ordered:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def versions(stacks: Stacks, postgres_version: str) -> dict[str, str]:
    overview = stacks.management("/api/overview")
    found = {
        "postgresql": postgres_version,
        "pgbouncer": pgbouncer_version(),
        "rabbitmq": str(overview.get("rabbitmq_version", "?")),
        "erlang": str(overview.get("erlang_version", "?")),
        "python": sys.version.split()[0],
    }
    for package in ("pika", "psycopg", "PyJWT", "cryptography"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "?"
    return found


def report(rows: Sequence[Throughput], e2e: EndToEnd, data: dict[str, Any]) -> None:
    v = data["versions"]
    print(
        f"\nPostgreSQL {v['postgresql']} behind PgBouncer {v['pgbouncer']} (transaction pooling), RabbitMQ "
        f"{v['rabbitmq']} (Erlang {v['erlang']}, 3 nodes on 127.0.0.1), pika {v['pika']}, psycopg "
        f"{v['psycopg']}, PyJWT {v['PyJWT']}, Python {v['python']}; load average {data['load_before']} "
        f"before, {data['load_after']} after"
    )
    print(
        f"\n1. accepted tasks, one at a time in one thread, no worker running ({data['tasks']} of each, "
        f"alternately in blocks of {BLOCK}, after {WARMUP} untimed of each)\n"
    )
    baseline = rows[0]
    lines = []
    for row in rows:
        p = percentiles(row.latencies)
        lines.append(
            [
                row.name,
                row.count,
                f"{row.seconds:.2f}",
                f"{row.rate:.0f}",
                f"{row.rate / baseline.rate:.3f}x",
                f"{p['p50']:.2f}",
                f"{p['p99']:.2f}",
            ]
        )
    print(
        "\n".join(table(["path", "messages", "seconds", "per second", "vs raw", "p50 ms", "p99 ms"], lines))
    )
    t = data["throughput"]
    print(
        f"\norchestrator / raw: {t['ratio']:.3f}x the rate; the orchestrator adds "
        f"{t['added_p50_ms']:.2f} ms per call at p50 (token check, transaction through PgBouncer with the "
        "advisory lock and two INSERTs, the confirmed publish inside it, the COMMIT)"
    )
    print(
        f"\n2. end to end, {data['e2e_tasks']} tasks submitted one after the other (the next once the "
        f"previous one's `succeeded` event arrived), {WORKERS} workers (threads, prefetch {PREFETCH}), "
        f"after {E2E_WARMUP} untimed tasks\n"
    )
    lines = []
    for label, samples in (
        ("handle() (202 returned)", e2e.accepted),
        ("POST -> `running` event", e2e.running),
        ("POST -> `succeeded` event", e2e.succeeded),
    ):
        p = percentiles(samples)
        lines.append(
            [label, len(samples), f"{p['p50']:.2f}", f"{p['p99']:.2f}", f"{p['max']:.2f}", f"{p['mean']:.2f}"]
        )
    print(
        "\n".join(
            table(["from just before handle() to", "tasks", "p50 ms", "p99 ms", "max ms", "mean ms"], lines)
        )
    )
    print(
        f"\n{data['e2e_tasks']} tasks in {e2e.seconds:.2f}s ({data['e2e_tasks'] / e2e.seconds:.1f} tasks/s "
        "sequentially); every task read back `succeeded`"
    )
    s = data["stack_seconds"]
    print(
        f"stacks: RabbitMQ started by the playbook in {s['rabbitmq_start']:.1f}s, PostgreSQL and PgBouncer "
        f"in {s['database_start']:.1f}s; migrations and the organization {s['prepare']:.2f}s"
    )


def summary(rows: Sequence[Throughput], e2e: EndToEnd) -> dict[str, Any]:
    raw, orchestrator = rows
    raw_p, orchestrator_p = percentiles(raw.latencies), percentiles(orchestrator.latencies)
    return {
        "throughput": {
            "runs": [
                {
                    "name": row.name,
                    "count": row.count,
                    "seconds": round(row.seconds, 3),
                    "per_second": round(row.rate, 1),
                    **{f"{key}_ms": round(value, 3) for key, value in percentiles(row.latencies).items()},
                }
                for row in rows
            ],
            "ratio": round(orchestrator.rate / raw.rate, 4),
            "added_p50_ms": round(orchestrator_p["p50"] - raw_p["p50"], 3),
        },
        "e2e": {
            "seconds": round(e2e.seconds, 3),
            **{
                name: {f"{key}_ms": round(value, 3) for key, value in percentiles(samples).items()}
                for name, samples in (
                    ("handle", e2e.accepted),
                    ("running_event", e2e.running),
                    ("succeeded_event", e2e.succeeded),
                )
            },
        },
    }


def quiet_loggers() -> None:
    """The functions' loggers at INFO with a NullHandler: each line is built, as in Lambda, not written."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = [logging.NullHandler()]
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--tasks", type=int, default=2000, help="tasks (and raw publishes) to accept (default 2000)"
    )
    parser.add_argument(
        "--e2e-tasks", type=int, default=300, help="tasks for the end-to-end latency (default 300)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one playbook run may take")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.e2e_tasks < 1:
        parser.error("--tasks and --e2e-tasks must be at least 1")
    if not (COLLECTIONS / "ansible_collections" / "tenantforge" / "platform").exists():
        print(f"{COLLECTIONS} does not link the collection: run `make setup-dev`", file=sys.stderr)
        return 2
    TERMINATION.install()
    quiet_loggers()
    load_before = load()
    handler = load_handler()
    seconds: dict[str, float] = {}
    try:
        with contextlib.ExitStack() as running:
            broker = running.enter_context(held_on_exit(running_stack(args.timeout)))
            # running_stack makes SIGTERM a KeyboardInterrupt while it runs (and puts ours back at its
            # end); ours holds a signal back while a stack stops.
            TERMINATION.install()
            taken = {broker.epmd_port} | {
                port for node in broker.nodes for port in node.values() if isinstance(port, int)
            }
            database = running.enter_context(held_on_exit(database_stack(args.timeout, taken)))
            stacks = Stacks(database, broker)
            print("rabbitmq: ", end="")
            seconds["rabbitmq_start"] = broker.playbook("started")
            print("postgres and pgbouncer: ", end="")
            seconds["database_start"] = database.playbook("start", NO_BUNDLE)
            postgres_version, seconds["prepare"] = prepare_database(stacks)
            client = make_client(stacks, handler)
            running.callback(close_client, client)
            found = versions(stacks, postgres_version)
            rows, checks = throughput(stacks, client, args.tasks)
            e2e = end_to_end(stacks, client, args.e2e_tasks)
    except Exception as error:
        print(f"benchmark failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    data: dict[str, Any] = {
        "tasks": args.tasks,
        "e2e_tasks": args.e2e_tasks,
        "block": BLOCK,
        "warmup": WARMUP,
        "e2e_warmup": E2E_WARMUP,
        "workers": WORKERS,
        "prefetch": PREFETCH,
        "versions": found,
        "load_before": load_before,
        "load_after": load(),
        "stack_seconds": {key: round(value, 2) for key, value in seconds.items()},
        "checks": checks,
        **summary(rows, e2e),
    }
    report(rows, e2e, data)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
