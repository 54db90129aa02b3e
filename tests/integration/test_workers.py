"""The workers role through playbooks/workers.yml: the task worker's and the notifier's Deployments
(render target), the settings it refuses, and both programs run on this machine (local target).

GIVEN test_orchestrator's private stack (PostgreSQL behind PgBouncer, migrated, two organizations; a
3-node RabbitMQ cluster), the logins in the local AWS emulator and a stand-in for the API Gateway
Management API; WHEN the role starts the worker and the notifier; THEN a task submitted through the
orchestrator's code runs once, its status events reach the subscribed connection, a changed setting
or a changed source file restarts what it concerns, and a stop lets the task in hand finish.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Emulator, PlaybookRun, free_port, run_playbook, wait_for_port
from cryptography.hazmat.primitives import serialization
from rendering import (
    Rendered,
    assert_no_secret_in,
    assert_pod_policy,
    by_kind,
    load_rendered,
    pod_spec,
    validate_strictly,
    write_secret_files,
)
from test_orchestrator import (
    AUDIENCE,
    ISSUER,
    ManagementApi,
    Stack,
    api_event,
    call,
    orchestrator_stack,
    runs,
    submit,
)
from test_orchestrator import connect as open_websocket
from test_rabbitmq import NOTIFIER, ORCHESTRATOR, VHOST, WORKER, alive

pytestmark = pytest.mark.integration

PLAYBOOK = "playbooks/workers.yml"
ENDPOINT = "https://abc123.execute-api.us-east-1.amazonaws.com/v1"
IMAGE = "registry.invalid/tenantforge/workers:0.1.0"
# A value that looks like a credential in a URL: user:password@host.
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def checksum(secrets: dict[str, str]) -> str:
    """The secrets-checksum annotation of a pod that reads these synced Secrets (Ansible's
    to_json(sort_keys=true) | hash('sha256'))."""
    return hashlib.sha256(json.dumps(secrets, sort_keys=True).encode()).hexdigest()


# --- render target ---------------------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32
NON_DEFAULT: dict[str, Any] = {
    "workers_namespace": "platform-jobs",
    "workers_image": "registry.example.test:5000/team/workers",
    "workers_image_tag": DIGEST,
    "workers_worker_replicas": 4,
    "workers_notifier_replicas": 2,
    "workers_worker_resources": {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    },
    "workers_worker_task_types": ["http_check"],
    "workers_worker_prefetch": 50,
    "workers_http_check_allowed_urls": ["https://status.example.test", "http://10.0.0.5:8080/health"],
    "workers_http_check_timeout_seconds": 20,
    "workers_termination_grace_period_seconds": 90,
    "workers_worker_pod_disruption_budget": False,
    "workers_log_level": "DEBUG",
    "workers_notifier_queue": "task-status.ops",
    "workers_secret_checksums": {
        "platform-jobs/postgres-app": "a1",
        "platform-jobs/rabbitmq-worker": "b2",
        "platform-jobs/rabbitmq-notifier": "c3",
        "platform-jobs/pgbouncer-auth": "d4",
    },
}


def render(state_dir: Path, extra: dict[str, Any]) -> PlaybookRun:
    return run_playbook(
        PLAYBOOK,
        state_dir,
        {
            "tenantforge_platform_target": "render",
            "workers_render_directory": str(state_dir / "rendered"),
            "workers_websocket_management_endpoint": ENDPOINT,
            **extra,
        },
    )


@pytest.fixture(scope="module", params=["defaults", "non-default"])
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], list[str], Rendered]:
    state_dir = tmp_path_factory.mktemp(f"render-{request.param}")
    # Synced secret files beside the bundle, as after `make run`: none of their values may leak in.
    passwords = [f"pw-{uuid.uuid4().hex}" for _ in range(3)]
    write_secret_files(
        state_dir,
        {
            "postgres-app": {"DATABASE_URL": f"postgresql://tenantforge_app:{passwords[0]}@pgbouncer:6432/x"},
            "rabbitmq-worker": {"AMQP_URL": f"amqp://tenantforge_worker:{passwords[1]}@rabbitmq:5672/x"},
            "rabbitmq-notifier": {"AMQP_URL": f"amqp://tenantforge_notifier:{passwords[2]}@rabbitmq:5672/x"},
        },
    )
    extra = {} if request.param == "defaults" else NON_DEFAULT
    render(state_dir, extra).assert_ok()
    return extra, passwords, load_rendered(state_dir / "rendered")


def test_render_writes_one_file_per_object(rendered) -> None:
    extra, _, objects = rendered
    expected = [
        ("00-deployment-task-worker.yaml", "Deployment", "task-worker"),
        ("01-deployment-task-notifier.yaml", "Deployment", "task-notifier"),
    ]
    if extra.get("workers_worker_pod_disruption_budget", True):
        expected.append(("02-poddisruptionbudget-task-worker.yaml", "PodDisruptionBudget", "task-worker"))
    assert [(path.name, obj["kind"], obj["metadata"]["name"]) for path, obj in objects] == expected


def test_rendered_objects_validate_strictly(rendered) -> None:
    _, _, objects = rendered
    validate_strictly(objects)


def test_rendered_objects_follow_the_policy(rendered) -> None:
    extra, passwords, objects = rendered
    for name in ("task-worker", "task-notifier"):
        deployment = by_kind(objects, "Deployment", name)
        # No probes, on purpose (the template says why): the rest of the policy holds.
        assert_pod_policy(deployment, probes=False)
        pod = pod_spec(deployment)
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["terminationGracePeriodSeconds"] == extra.get(
            "workers_termination_grace_period_seconds", 60
        )
        (container,) = pod["containers"]
        assert "livenessProbe" not in container and "readinessProbe" not in container
        assert "ports" not in container
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # Credentials only through the synced Secrets; every literal value is free of them.
        for variable in container["env"]:
            if "value" in variable:
                assert not CREDENTIALS_IN_URL.search(variable["value"]), variable
            else:
                assert set(variable["valueFrom"]) == {"secretKeyRef"}, variable
        assert "volumes" not in pod
    assert_no_secret_in(objects, passwords)


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(deployment)["containers"]
    return {
        variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in container["env"]
    }


def test_the_deployments_carry_the_variables(rendered) -> None:
    extra, _, objects = rendered
    namespace = extra.get("workers_namespace", "tenantforge")
    assert {obj["metadata"]["namespace"] for _, obj in objects} == {namespace}
    worker, notifier = (
        by_kind(objects, "Deployment", "task-worker"),
        by_kind(objects, "Deployment", "task-notifier"),
    )
    image = f"registry.example.test:5000/team/workers@{DIGEST}" if extra else IMAGE
    for deployment, module, replicas in (
        (worker, "tenantforge_lambda.worker", extra.get("workers_worker_replicas", 2)),
        (notifier, "tenantforge_lambda.notifier", extra.get("workers_notifier_replicas", 1)),
    ):
        assert deployment["spec"]["replicas"] == replicas
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        (container,) = pod_spec(deployment)["containers"]
        assert container["image"] == image
        assert container["command"] == ["python", "-m", module]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert by_kind(objects, "Deployment", "task-worker")["spec"]["selector"] != notifier["spec"]["selector"]

    assert env_of(worker) == {
        "DATABASE_URL": {"secretKeyRef": {"name": "postgres-app", "key": "DATABASE_URL"}},
        "AMQP_URL": {"secretKeyRef": {"name": "rabbitmq-worker", "key": "AMQP_URL"}},
        "WORKER_TASK_TYPES": "http_check" if extra else "echo,http_check",
        "WORKER_PREFETCH": "50" if extra else "10",
        "HTTP_CHECK_ALLOWED_URLS": "https://status.example.test,http://10.0.0.5:8080/health" if extra else "",
        "HTTP_CHECK_TIMEOUT_SECONDS": "20" if extra else "5",
        "LOG_LEVEL": "DEBUG" if extra else "INFO",
    }
    assert env_of(notifier) == {
        "DATABASE_URL": {"secretKeyRef": {"name": "postgres-app", "key": "DATABASE_URL"}},
        "AMQP_URL": {"secretKeyRef": {"name": "rabbitmq-notifier", "key": "AMQP_URL"}},
        "WEBSOCKET_MANAGEMENT_ENDPOINT": ENDPOINT,
        "NOTIFIER_QUEUE": "task-status.ops" if extra else "task-status.notifier",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LOG_LEVEL": "DEBUG" if extra else "INFO",
    }
    (worker_container,) = pod_spec(worker)["containers"]
    assert worker_container["resources"] == extra.get(
        "workers_worker_resources",
        {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    )
    if extra.get("workers_worker_pod_disruption_budget", True):
        budget = by_kind(objects, "PodDisruptionBudget")
        assert budget["spec"] == {"maxUnavailable": 1, "selector": worker["spec"]["selector"]}


def test_each_deployment_hashes_the_secrets_it_reads(rendered) -> None:
    """A rotated notifier password rolls the notifier only; the application's password both."""
    extra, _, objects = rendered

    def annotation(name: str) -> str:
        metadata = by_kind(objects, "Deployment", name)["spec"]["template"]["metadata"]
        return str(metadata["annotations"]["tenantforge.io/secrets-checksum"])

    if not extra:
        assert annotation("task-worker") == annotation("task-notifier") == checksum({})
        return
    assert annotation("task-worker") == checksum(
        {"platform-jobs/postgres-app": "a1", "platform-jobs/rabbitmq-worker": "b2"}
    )
    assert annotation("task-notifier") == checksum(
        {"platform-jobs/postgres-app": "a1", "platform-jobs/rabbitmq-notifier": "c3"}
    )


def test_without_the_notifier_only_the_worker_is_rendered(tmp_path: Path) -> None:
    """The endpoint is then not needed."""
    run = render(tmp_path, {"workers_notifier_enabled": False, "workers_websocket_management_endpoint": ""})
    run.assert_ok()
    objects = load_rendered(tmp_path / "rendered")
    assert [(obj["kind"], obj["metadata"]["name"]) for _, obj in objects] == [
        ("Deployment", "task-worker"),
        ("PodDisruptionBudget", "task-worker"),
    ]


# --- refusals --------------------------------------------------------------------------------------

BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [
    ("no worker", {"workers_worker_replicas": 0}, "workers_worker_replicas"),
    ("negative notifier replicas", {"workers_notifier_replicas": -1}, "workers_notifier_replicas"),
    ("prefetch over 1000", {"workers_worker_prefetch": 1001}, "workers_worker_prefetch"),
    (
        "notifier without an endpoint",
        {"workers_websocket_management_endpoint": ""},
        "workers_websocket_management_endpoint",
    ),
    ("unknown task type", {"workers_worker_task_types": ["echo", "report"]}, "workers_worker_task_types"),
    ("floating tag", {"workers_image_tag": "latest"}, "workers_image_tag"),
    (
        "credentials in the local database address",
        {
            "tenantforge_platform_target": "local",
            "workers_local_database_url": "postgresql://tenantforge_app:pw@127.0.0.1:6433/tenantforge",
        },
        "workers_local_database_url",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "variable"), [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT]
)
def test_bad_input_is_refused_naming_the_variable_and_writes_nothing(
    tmp_path: Path, overrides: dict[str, Any], variable: str
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    run = render(state_dir, overrides)
    assert run.returncode != 0
    failed_at = re.search(r"^(\[ERROR\]: Task failed|fatal: |failed: )", run.output, re.MULTILINE)
    assert failed_at, run.output[-3000:]
    before, failure = run.output[: failed_at.start()], run.output[failed_at.start() :]
    assert variable in failure
    # Refused by one of the role's checks, before its first task that acts.
    (failed_task,) = re.findall(r"^TASK \[(.*)\] \*+$", before, re.MULTILINE)[-1:]
    assert failed_task.startswith("workers : "), failed_task
    assert "Build the Kubernetes objects" not in before
    assert list(state_dir.iterdir()) == []


# --- local target ----------------------------------------------------------------------------------


@dataclass
class Workers:
    """The role's local target on the stack: a state directory of its own, the stack's ports, the
    logins in the emulator under an environment of its own."""

    stack: Stack
    state_dir: Path
    emulator: Emulator
    api: ManagementApi
    environment: str
    # A copy of lambdas/ (workers_local_lambdas_dir); None: the role's default, this checkout's.
    lambdas: Path | None
    # Settings of the last applied run, kept by the next ones.
    settings: dict[str, Any] = field(default_factory=dict)

    def run(
        self, extra: dict[str, Any] | None = None, args: tuple[str, ...] = (), whole: bool = False
    ) -> PlaybookRun:
        """The playbook on the stack; unless `whole`, without the bundle and the summary (the first
        runs check them), which only slow a run down."""
        lighter = {} if whole else {"workers_local_bundle": False, "platform_summary_path": ""}
        return run_playbook(
            PLAYBOOK,
            self.state_dir,
            {
                # The target, the emulator's credentials and the secret prefix come from inventories/local.
                **lighter,
                "tenantforge_environment": self.environment,
                "local_emulator_port": self.emulator.port,
                "pgbouncer_local_port": self.stack.database.pgbouncer_port,
                "rabbitmq_local_nodes": [vars(node) for node in self.stack.broker.nodes],
                "workers_websocket_management_endpoint": self.api.endpoint,
                **({"workers_local_lambdas_dir": str(self.lambdas)} if self.lambdas else {}),
                **self.settings,
                **(extra or {}),
            },
            args,
        )

    @property
    def directory(self) -> Path:
        return self.state_dir / "workers"

    def pid_file(self, name: str) -> Path:
        return self.directory / f"{name}.pid"

    def pid(self, name: str) -> int:
        return int(self.pid_file(name).read_text())

    def environ(self, name: str) -> dict[str, str]:
        raw = Path(f"/proc/{self.pid(name)}/environ").read_bytes().decode()
        return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)

    def record(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self.directory / f"{name}.json").read_text()))

    def secret_values(self) -> list[str]:
        return [
            self.stack.database.passwords["tenantforge_app"],
            self.stack.broker.values[WORKER],
            self.stack.broker.values[NOTIFIER],
        ]


def changes(run: PlaybookRun) -> list[str]:
    """The workers role's tasks that reported a change, in order, each once."""
    changed: list[str] = []
    task = None
    for line in run.output.splitlines():
        header = re.match(r"^TASK \[(.*)\] \*+$", line)
        if header:
            task = header.group(1)
        elif re.match(r"^changed: \[localhost\]", line) and task and task not in changed:
            changed.append(task)
    return [name.removeprefix("workers : ") for name in changed if name.startswith("workers : ")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with orchestrator_stack(tmp_path_factory, "workers") as built:
        yield built


@pytest.fixture(scope="module")
def workers(stack: Stack, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    environment = f"w{uuid.uuid4().hex[:8]}"
    secretsmanager = emulator.client("secretsmanager")
    for name, username, password in (
        ("postgres/app", "tenantforge_app", stack.database.passwords["tenantforge_app"]),
        ("rabbitmq/worker", WORKER, stack.broker.values[WORKER]),
        ("rabbitmq/notifier", NOTIFIER, stack.broker.values[NOTIFIER]),
    ):
        secretsmanager.create_secret(
            Name=f"tenantforge/{environment}/{name}",
            SecretString=json.dumps({"username": username, "password": password}),
        )
    # A copy of the package the programs run, so that a test can change its code.
    lambdas = tmp_path_factory.mktemp("lambdas")
    shutil.copytree(
        REPO / "lambdas" / "tenantforge_lambda",
        lambdas / "tenantforge_lambda",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    with ManagementApi(gone=set()) as api:
        local = Workers(stack, tmp_path_factory.mktemp("workers"), emulator, api, environment, lambdas)
        try:
            yield local
        finally:
            local.run({"workers_local_state": "stopped"})
            for name in ("task-worker", "task-notifier"):
                with contextlib.suppress(OSError, ValueError, ProcessLookupError):
                    os.killpg(local.pid(name), signal.SIGKILL)


@pytest.fixture(scope="module")
def carol(stack: Stack) -> str:
    return stack.token("acme", "carol@acme.example")


def test_first_run_starts_the_worker_and_the_notifier(workers: Workers) -> None:
    run = workers.run(whole=True)
    run.assert_ok()
    assert changes(run) == [
        "Create the workers' directory",
        "Record the settings and the code of each consumer",
        "Start the consumers",
    ]
    assert stat.S_IMODE(workers.directory.stat().st_mode) == 0o700
    nodes = workers.stack.broker.nodes
    for name, module, secret in (
        ("task-worker", "tenantforge_lambda.worker", "rabbitmq/worker"),
        ("task-notifier", "tenantforge_lambda.notifier", "rabbitmq/notifier"),
    ):
        pid = workers.pid(name)
        assert alive(pid), (workers.directory / f"{name}.log").read_text()[-2000:]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:2]
        assert Path(command[0]).name.startswith("python") and command[1] == f"-m{module}"
        environ = workers.environ(name)
        # Addresses without credentials, and the ids of the secrets that hold them.
        assert (
            environ["DATABASE_URL"]
            == f"postgresql://127.0.0.1:{workers.stack.database.pgbouncer_port}/tenantforge"
        )
        assert environ["DATABASE_SECRET_ID"] == f"tenantforge/{workers.environment}/postgres/app"
        assert environ["AMQP_URL"] == ",".join(
            f"amqp://127.0.0.1:{node.amqp_port}/tenantforge" for node in nodes
        )
        assert environ["AMQP_SECRET_ID"] == f"tenantforge/{workers.environment}/{secret}"
        assert environ["AWS_ENDPOINT_URL"] == workers.emulator.endpoint_url
        assert environ["AWS_DEFAULT_REGION"] == "us-east-1"
        assert environ["PYTHONPATH"] == str(workers.lambdas)
        text = Path(f"/proc/{pid}/environ").read_bytes().decode()
        record = (workers.directory / f"{name}.json").read_text()
        for value in workers.secret_values():
            assert value not in text and value not in record and value not in run.output
        assert workers.record(name)["environment"]["AWS_SECRET_ACCESS_KEY"] == (
            "sha256:" + hashlib.sha256(b"testing").hexdigest()
        )
        for suffix in ("json", "log"):
            assert stat.S_IMODE((workers.directory / f"{name}.{suffix}").stat().st_mode) == 0o600
    assert workers.environ("task-worker")["WORKER_PREFETCH"] == "10"
    assert workers.environ("task-notifier")["WEBSOCKET_MANAGEMENT_ENDPOINT"] == workers.api.endpoint
    summary = json.loads((workers.state_dir / "summary.json").read_text())
    assert summary["workers"] == {
        name: {"log": str(workers.directory / f"{name}.log")} for name in ("task-worker", "task-notifier")
    }
    # The bundle beside them: what the kubernetes target would apply.
    bundle = load_rendered(workers.state_dir / "manifests" / "workers")
    assert [obj["kind"] for _, obj in bundle] == ["Deployment", "Deployment", "PodDisruptionBudget"]


def test_second_run_changes_nothing(workers: Workers) -> None:
    pids = {name: workers.pid(name) for name in ("task-worker", "task-notifier")}
    run = workers.run(whole=True)
    run.assert_ok()
    assert run.changed == 0, changes(run)
    assert {name: workers.pid(name) for name in pids} == pids


def wait_until(condition: Callable[[], bool], timeout: float, seen: Callable[[], object]) -> None:
    """Polls `condition`; on time out, fails showing what `seen` returns."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, seen()
        time.sleep(0.2)


def test_a_task_runs_once_and_its_statuses_reach_the_subscribed_connection(
    workers: Workers, carol: str
) -> None:
    watcher = open_websocket(workers.stack, carol, {"all": True})
    task_id = submit(workers.stack, carol, {"message": "through the role"})
    orchestrator = workers.stack.orchestrator()

    def task() -> dict[str, Any]:
        return call(orchestrator, api_event("GET", f"/api/tasks/{task_id}", carol))[1]

    wait_until(lambda: task()["status"] == "succeeded", 60, lambda: task())
    assert task()["result"] == {"echo": {"message": "through the role"}}

    def statuses() -> list[str]:
        return [
            body["status"]
            for connection_id, body in workers.api.received
            if connection_id == watcher and body["task_id"] == task_id
        ]

    wait_until(lambda: statuses() == ["running", "succeeded"], 30, statuses)
    (_, body) = next(item for item in workers.api.received if item[0] == watcher)
    assert body == {
        "event": "task.status",
        "task_id": task_id,
        "org_id": body["org_id"],
        "type": "echo",
        "status": "running",
    }
    assert runs(workers.stack, "acme")[task_id] == 1


def test_the_smoke_test_of_make_run_sends_a_task_through_the_running_workers(
    workers: Workers, tmp_path: Path
) -> None:
    """roles/lambdas/files: the smoke test that ends `make run`, with the notifier posting to the
    Management API's local stand-in, both run as `make run` runs them."""
    secretsmanager = workers.emulator.client("secretsmanager")
    prefix = f"tenantforge/{workers.environment}/"
    pem = workers.stack.signing_key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    signing = {"kid": workers.stack.signing_key.kid, "alg": "ES256", "private_key_pem": pem}
    for name, value in (
        ("jwt/jwks", workers.stack.jwks),
        ("jwt/signing-key", signing),
        (
            "rabbitmq/orchestrator",
            {"username": ORCHESTRATOR, "password": workers.stack.broker.values[ORCHESTRATOR]},
        ),
    ):
        secretsmanager.create_secret(Name=prefix + name, SecretString=json.dumps(value))

    files = REPO / "roles" / "lambdas" / "files"
    port = free_port()
    record = tmp_path / "posts.jsonl"
    stand_in = subprocess.Popen(
        [sys.executable, str(files / "management_api.py"), "--port", str(port), "--record", str(record)],
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        workers.run({"workers_websocket_management_endpoint": f"http://127.0.0.1:{port}/v1"}).assert_ok()
        lambdas = str(REPO / "lambdas")
        environment = {
            **os.environ,
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_JWKS_SECRET_ID": prefix + "jwt/jwks",
            "JWT_SIGNING_SECRET_ID": prefix + "jwt/signing-key",
            "DATABASE_URL": f"postgresql://127.0.0.1:{workers.stack.database.pgbouncer_port}/tenantforge",
            "DATABASE_SECRET_ID": prefix + "postgres/app",
            "AMQP_URL": ",".join(
                f"amqp://127.0.0.1:{node.amqp_port}/{VHOST}" for node in workers.stack.broker.nodes
            ),
            "AMQP_SECRET_ID": prefix + "rabbitmq/orchestrator",
            "AWS_ENDPOINT_URL": workers.emulator.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        execute = "arn:aws:execute-api:us-east-1:123456789012"
        smoke = subprocess.run(
            [
                sys.executable,
                str(files / "smoke_test.py"),
                "--lambdas",
                lambdas,
                "--org",
                "acme",
                "--email",
                "carol@acme.example",
                "--rest-api-arn",
                f"{execute}:rest123",
                "--websocket-api-arn",
                f"{execute}:ws456",
                "--record",
                str(record),
                "--timeout",
                "60",
            ],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        stand_in.terminate()
        stand_in.wait(timeout=10)
        # The notifier back on the module's recorder, for the tests that follow.
        workers.run().assert_ok()

    assert smoke.returncode == 0, smoke.stdout + smoke.stderr[-3000:]
    outcome = json.loads(smoke.stdout)
    assert outcome["ok"] and outcome["final_status"] == "succeeded"
    assert [step["step"] for step in outcome["steps"]] == [
        "issue a token",
        "authorizer (REST API)",
        "authorizer (WebSocket $connect)",
        "WebSocket $connect",
        "WebSocket subscribe (all tasks)",
        "POST /api/tasks (orchestrator)",
        "worker ran the task (GET /api/tasks/{id})",
        "status events reached the connection",
    ]
    assert outcome["steps"][-1]["events"] == ["running", "succeeded"]
    assert runs(workers.stack, "acme")[outcome["task_id"]] == 1
    # What the stand-in recorded: the notifier's posts, one JSON event each, to the smoke test's connection.
    posts = [json.loads(line) for line in record.read_text().splitlines()]
    connection = outcome["steps"][3]["connection_id"]
    mine = [json.loads(post["data"]) for post in posts if post["connection_id"] == connection]
    assert [event["status"] for event in mine if event["task_id"] == outcome["task_id"]] == [
        "running",
        "succeeded",
    ]
    # No token, password or secret in what the smoke test printed.
    printed = smoke.stdout + smoke.stderr
    assert "eyJ" not in printed
    for secret in [*workers.secret_values(), workers.stack.broker.values[ORCHESTRATOR], pem]:
        assert secret not in printed


def test_a_changed_source_file_restarts_both(workers: Workers) -> None:
    pids = {name: workers.pid(name) for name in ("task-worker", "task-notifier")}
    before = {name: workers.record(name) for name in pids}
    assert workers.lambdas is not None
    with (workers.lambdas / "tenantforge_lambda" / "tasks.py").open("a") as source:
        source.write("\n# A change of the code the consumers run.\n")
    run = workers.run()
    run.assert_ok()
    assert changes(run) == [
        "Record the settings and the code of each consumer",
        "Stop the consumers for the restart",
        "Start the consumers again",
    ]
    for name, pid in pids.items():
        assert workers.pid(name) != pid and not alive(pid) and alive(workers.pid(name))
        after = workers.record(name)
        assert after["environment"] == before[name]["environment"]
        assert after["code_sha256"] != before[name]["code_sha256"]


def test_a_changed_worker_setting_restarts_the_worker_only(workers: Workers) -> None:
    worker, notifier = workers.pid("task-worker"), workers.pid("task-notifier")
    workers.settings["workers_worker_prefetch"] = 5
    run = workers.run()
    run.assert_ok()
    assert changes(run) == [
        "Record the settings and the code of each consumer",
        "Stop the consumers for the restart",
        "Start the consumers again",
    ]
    assert workers.pid("task-worker") != worker and not alive(worker)
    assert workers.pid("task-notifier") == notifier and alive(notifier)
    assert workers.environ("task-worker")["WORKER_PREFETCH"] == "5"


def test_a_stop_lets_the_task_in_hand_finish(workers: Workers, carol: str) -> None:
    """`make stop`: no endpoint (the lambdas tier did not run); SIGTERM, then the worker finishes the
    2-second task it holds before it exits."""
    pids = {name: workers.pid(name) for name in ("task-worker", "task-notifier")}
    task_id = submit(workers.stack, carol, {"delay_ms": 2000})
    orchestrator = workers.stack.orchestrator()

    def status() -> str:
        return str(call(orchestrator, api_event("GET", f"/api/tasks/{task_id}", carol))[1]["status"])

    wait_until(lambda: status() == "running", 30, status)
    run = workers.run({"workers_local_state": "stopped", "workers_websocket_management_endpoint": ""})
    run.assert_ok()
    assert changes(run) == ["Stop the worker and the notifier"]
    assert run.changed == 1
    assert status() == "succeeded"
    assert runs(workers.stack, "acme")[task_id] == 1
    for name, pid in pids.items():
        assert not alive(pid)
        assert not workers.pid_file(name).exists()


def test_check_mode_on_the_stopped_service_reports_a_start_and_starts_nothing(workers: Workers) -> None:
    """And the default code directory is this checkout's lambdas/."""
    workers.settings.pop("workers_worker_prefetch", None)
    assert workers.lambdas is not None
    sources, workers.lambdas = workers.lambdas, None
    records = {
        name: (workers.directory / f"{name}.json").read_text() for name in ("task-worker", "task-notifier")
    }
    run = workers.run(args=("--check", "--diff"))
    run.assert_ok()
    assert changes(run) == ["Record the settings and the code of each consumer", "Start the consumers"]
    assert f'-        "PYTHONPATH": "{sources}",' in run.output
    assert f'+        "PYTHONPATH": "{REPO / "lambdas"}",' in run.output
    for name, text in records.items():
        assert not workers.pid_file(name).exists()
        assert (workers.directory / f"{name}.json").read_text() == text


def test_a_consumer_that_exits_at_start_fails_the_run_naming_its_log(workers: Workers) -> None:
    """Nothing listens on a port to wait for: a start counts once the process has outlived
    workers_local_settle_seconds. Here the worker's broker secret does not exist."""
    missing = f"tenantforge/{workers.environment}/rabbitmq/nobody"
    run = workers.run({"workers_local_worker_amqp_secret_id": missing})
    assert run.returncode != 0
    log = workers.directory / "task-worker.log"
    assert f"task-worker exited within 3 seconds of its start; see {log}" in run.output
    assert "ResourceNotFoundException" in log.read_text()
    assert not alive(workers.pid("task-worker"))
    assert alive(workers.pid("task-notifier"))
