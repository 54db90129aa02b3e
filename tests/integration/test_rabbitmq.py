"""The rabbitmq role: its Kubernetes objects (render target) and a real 3-node cluster (local target)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import string
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pika
import pika.exceptions
import pytest
from conftest import free_port, run_playbook
from rendering import (
    KUBERNETES_VERSION,
    Rendered,
    assert_no_secret_in,
    assert_pod_policy,
    assert_selected_by_none,
    by_kind,
    load_rendered,
    pod_spec,
    render_component,
    run_job_locally,
    selectors,
    validate_strictly,
    write_secret_files,
)

pytestmark = pytest.mark.integration

PLAYBOOK = "playbooks/platform.yml"
# This module tests the rabbitmq role alone.
ONLY_RABBITMQ = {"tenantforge_platform_components": ["rabbitmq"]}
IMAGE = "docker.io/library/rabbitmq:4.1.8-management"
USERS = {
    "rabbitmq-admin": "tenantforge_admin",
    "rabbitmq-orchestrator": "tenantforge_orchestrator",
    "rabbitmq-worker": "tenantforge_worker",
    "rabbitmq-notifier": "tenantforge_notifier",
}
ADMIN, ORCHESTRATOR, WORKER, NOTIFIER = USERS.values()
VHOST = "tenantforge"
# The settings of rabbitmq_peer_discovery_k8s as of RabbitMQ 4.1 (the plugin's schema); every other
# cluster_formation.k8s.* key belongs to the 3.7-4.0 plugin and is ignored by 4.1.
K8S_DISCOVERY_KEYS_4_1 = {"cluster_formation.k8s.ordinal_start", "cluster_formation.k8s.seed_node"}
# How the 4.1 plugin finds the seed node in the node's own name (rabbit_peer_discovery_k8s:seed_node/2).
SEED_NODE_PATTERN = r"^([^@]+@)([^.]*-)([0-9]+)"


def write_secrets(state_dir: Path) -> dict[str, str]:
    """The synced secret files of USERS, each with a new password, and of a new Erlang cookie; returns
    user -> password and `cookie` -> the Erlang cookie."""
    values = {username: secrets.token_urlsafe(24) for username in USERS.values()}
    values["cookie"] = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(48))
    files = {
        secret: {"username": username, "password": values[username]} for secret, username in USERS.items()
    }
    write_secret_files(state_dir, {**files, "rabbitmq-erlang-cookie": {"cookie": values["cookie"]}})
    return values


def parse_conf(text: str) -> dict[str, str]:
    """rabbitmq.conf (sysctl format) as a dict; comments and blank lines dropped."""
    pairs = [line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


# --- render target ---------------------------------------------------------------------------------

NON_DEFAULT = {
    "rabbitmq_namespace": "platform-mq",
    "rabbitmq_storage_class": "gp3",
    "rabbitmq_storage_size": "20Gi",
    "rabbitmq_resources": {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    },
    "rabbitmq_memory_high_watermark": 0.5,
    "rabbitmq_disk_free_limit": "5GB",
    "rabbitmq_task_types": ["echo", "http_check", "report"],
    "rabbitmq_delivery_limit": 3,
    "rabbitmq_secret_checksums": {"rabbitmq-admin": "abc123"},
}


@pytest.fixture(scope="module", params=["defaults", "non-default"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp(f"render-{request.param}")
    values = write_secrets(tmp_path)
    extra = {} if request.param == "defaults" else NON_DEFAULT
    return extra, values, render_component("rabbitmq", tmp_path, extra)


def configmap_data(objects: Rendered) -> dict[str, str]:
    return by_kind(objects, "ConfigMap", "rabbitmq-config")["data"]


def test_render_writes_one_file_per_object(rendered) -> None:
    _, _, objects = rendered
    assert [path.name for path, _ in objects] == [
        "00-configmap-rabbitmq-config.yaml",
        "01-serviceaccount-rabbitmq.yaml",
        "02-role-rabbitmq-peer-discovery.yaml",
        "03-rolebinding-rabbitmq-peer-discovery.yaml",
        "04-service-rabbitmq-headless.yaml",
        "05-service-rabbitmq.yaml",
        "06-poddisruptionbudget-rabbitmq.yaml",
        "07-statefulset-rabbitmq.yaml",
        "08-configmap-rabbitmq-access.yaml",
        f"09-job-{by_kind(objects, 'Job')['metadata']['name']}.yaml",
    ]
    assert re.fullmatch(r"rabbitmq-access-[0-9a-f]{10}", by_kind(objects, "Job")["metadata"]["name"])


def test_rendered_objects_validate_strictly(rendered) -> None:
    _, _, objects = rendered
    validate_strictly(objects)


def test_strict_validation_rejects_an_unknown_field(rendered) -> None:
    _, _, objects = rendered
    role = dict(by_kind(objects, "Role"), rule=[])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, KUBERNETES_VERSION, strict=True)


def test_rendered_objects_carry_the_variables(rendered) -> None:
    extra, _, objects = rendered
    namespace = extra.get("rabbitmq_namespace", "tenantforge")
    assert {obj["metadata"]["namespace"] for _, obj in objects} == {namespace}
    statefulset = by_kind(objects, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["serviceName"] == "rabbitmq-headless"
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == extra.get("rabbitmq_storage_class", "local-path")
    assert claim["spec"]["resources"]["requests"]["storage"] == extra.get("rabbitmq_storage_size", "10Gi")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == extra.get(
        "rabbitmq_resources",
        {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    )
    headless = by_kind(objects, "Service", "rabbitmq-headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert {port["port"] for port in headless["spec"]["ports"]} == {4369, 5672, 25672}
    client = by_kind(objects, "Service", "rabbitmq")
    assert "clusterIP" not in client["spec"]
    assert {port["name"]: port["port"] for port in client["spec"]["ports"]} == {
        "amqp": 5672,
        "management": 15672,
        "prometheus": 15692,
    }
    budget = by_kind(objects, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": statefulset["spec"]["selector"]}
    pod = statefulset["spec"]["template"]["spec"]
    (preferred,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred["podAffinityTerm"]["labelSelector"] == statefulset["spec"]["selector"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["podAntiAffinity"]
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"tenantforge.io/config-checksum", "tenantforge.io/secrets-checksum"}


def test_rendered_objects_follow_the_policy(rendered) -> None:
    _, _, objects = rendered
    statefulset = by_kind(objects, "StatefulSet")
    assert_pod_policy(statefulset)
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 999
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "rabbitmq"
    for container in pod["containers"] + pod["initContainers"]:
        assert container["image"] == IMAGE
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The access Job runs to completion: no probes, the rest of the policy holds.
    job = by_kind(objects, "Job")
    assert_pod_policy(job, probes=False)
    (container,) = pod_spec(job)["containers"]
    assert container["image"] == "docker.io/library/python:3.12.11-slim-bookworm"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec(job)["automountServiceAccountToken"] is False


def test_the_access_job_is_never_selected_as_a_node(rendered) -> None:
    _, _, objects = rendered
    assert len(selectors(objects)) == 4
    assert_selected_by_none(by_kind(objects, "Job"), objects)


def test_the_access_request_holds_no_secret(rendered) -> None:
    """Its ConfigMap names environment variables; the Job sets them from the Secrets."""
    _, _, objects = rendered
    request = json.loads(by_kind(objects, "ConfigMap", "rabbitmq-access")["data"]["request.json"])
    assert request["url"] == {"env": "RABBITMQ_MANAGEMENT_URL"}
    assert request["admin"] == {
        "username": {"env": "RABBITMQ_ADMIN_USERNAME"},
        "password": {"env": "RABBITMQ_ADMIN_PASSWORD"},
    }
    assert [user["password"] for user in request["users"]] == [
        {"env": f"RABBITMQ_{name}_PASSWORD"} for name in ("ADMIN", "ORCHESTRATOR", "WORKER", "NOTIFIER")
    ]
    (container,) = pod_spec(by_kind(objects, "Job"))["containers"]
    from_secrets = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]["name"]
        for variable in container["env"]
        if "valueFrom" in variable
    }
    assert from_secrets == {
        f"RABBITMQ_{name}_{key}": secret
        for name, secret in (
            ("ADMIN", "rabbitmq-admin"),
            ("ORCHESTRATOR", "rabbitmq-orchestrator"),
            ("WORKER", "rabbitmq-worker"),
            ("NOTIFIER", "rabbitmq-notifier"),
        )
        for key in ("USERNAME", "PASSWORD")
    }


def test_rbac_grants_nothing(rendered) -> None:
    """The 4.1 peer discovery makes no Kubernetes API call: an empty Role, bound to the pods' own
    ServiceAccount, whose token is not even mounted."""
    extra, _, objects = rendered
    namespace = extra.get("rabbitmq_namespace", "tenantforge")
    assert by_kind(objects, "Role")["rules"] == []
    binding = by_kind(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "rabbitmq-peer-discovery",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rabbitmq", "namespace": namespace}]
    assert by_kind(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    kinds = [obj["kind"] for _, obj in objects]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds


def test_peer_discovery_keys_match_the_pinned_version(rendered) -> None:
    _, _, objects = rendered
    statefulset = by_kind(objects, "StatefulSet")
    image = statefulset["spec"]["template"]["spec"]["containers"][0]["image"]
    major, minor, _ = (int(part) for part in re.match(r".*:(\d+)\.(\d+)\.(\d+)-", image).groups())  # type: ignore[union-attr]
    assert (major, minor) >= (4, 1)
    conf = parse_conf(configmap_data(objects)["rabbitmq.conf"])
    assert conf["cluster_formation.peer_discovery_backend"] == "k8s"
    k8s_keys = {key for key in conf if key.startswith("cluster_formation.k8s.")}
    assert k8s_keys == {"cluster_formation.k8s.ordinal_start"}
    assert k8s_keys <= K8S_DISCOVERY_KEYS_4_1
    assert conf["cluster_formation.k8s.ordinal_start"] == "0"
    assert "rabbitmq_peer_discovery_k8s" in configmap_data(objects)["enabled_plugins"]
    # The node name the plugin parses: rabbit@<statefulset>-<ordinal>.<headless service>...
    env = {var["name"]: var for var in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    node_name = env["RABBITMQ_NODENAME"]["value"].replace("$(POD_NAME)", "rabbitmq-2")
    match = re.match(SEED_NODE_PATTERN, node_name)
    assert match and match.groups() == ("rabbit@", "rabbitmq-", "2")
    assert env["RABBITMQ_USE_LONGNAME"]["value"] == "true"


def test_rendered_configuration(rendered) -> None:
    extra, _, objects = rendered
    data = configmap_data(objects)
    conf = parse_conf(data["rabbitmq.conf"])
    limit_mib = {"2Gi": 2048, "4Gi": 4096}[
        extra.get("rabbitmq_resources", {}).get("limits", {}).get("memory", "2Gi")
    ]
    watermark = extra.get("rabbitmq_memory_high_watermark", 0.6)
    assert conf["cluster_partition_handling"] == "pause_minority"
    assert conf["vm_memory_high_watermark.absolute"] == f"{int(limit_mib * watermark)}MiB"
    assert conf["disk_free_limit.absolute"] == extra.get("rabbitmq_disk_free_limit", "2GB")
    assert conf["quorum_queue.continuous_membership_reconciliation.enabled"] == "true"
    assert conf["quorum_queue.continuous_membership_reconciliation.target_group_size"] == "3"
    assert conf["definitions.import_backend"] == "local_filesystem"
    assert conf["definitions.local.path"] == "/etc/rabbitmq/definitions.json"
    assert data["enabled_plugins"].strip() == (
        "[rabbitmq_management,rabbitmq_prometheus,rabbitmq_peer_discovery_k8s]."
    )
    definitions = json.loads(data["definitions.json"])
    assert set(definitions) == {"vhosts", "exchanges", "queues", "bindings"}  # no users, no permissions
    types = extra.get("rabbitmq_task_types", ["echo", "http_check"])
    limit = extra.get("rabbitmq_delivery_limit", 5)
    assert {(e["name"], e["type"]) for e in definitions["exchanges"]} == {
        ("tasks", "topic"),
        ("task-status", "topic"),
        ("dead-letter", "fanout"),
    }
    queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
    dead_lettered = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "dead-letter",
        "x-delivery-limit": limit,
    }
    assert queues == {
        **{f"tasks.{t}": dead_lettered for t in types},
        "task-status.notifier": dead_lettered,
        "dead-letter": {"x-queue-type": "quorum"},
    }
    assert all(q["durable"] and not q["auto_delete"] for q in definitions["queues"])
    assert {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]} == {
        *{("tasks", f"tasks.{t}", f"*.{t}") for t in types},
        ("task-status", "task-status.notifier", "#"),
        ("dead-letter", "dead-letter", ""),
    }


def test_secrets_come_from_secrets_only(rendered) -> None:
    _, values, objects = rendered
    assert_no_secret_in(objects, list(values.values()))
    statefulset = by_kind(objects, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    env = {var["name"]: var for var in pod["containers"][0]["env"]}
    assert env["RABBITMQ_DEFAULT_USER"]["valueFrom"] == {
        "secretKeyRef": {"name": "rabbitmq-admin", "key": "username"}
    }
    assert env["RABBITMQ_DEFAULT_PASS"]["valueFrom"] == {
        "secretKeyRef": {"name": "rabbitmq-admin", "key": "password"}
    }
    assert "RABBITMQ_ERLANG_COOKIE" not in env  # deprecated: the cookie is a file
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["erlang-cookie"]["secret"] == {
        "secretName": "rabbitmq-erlang-cookie",
        "defaultMode": 0o400,
        "items": [{"key": "cookie", "path": "cookie"}],
    }
    (init,) = pod["initContainers"]
    assert (
        "install -m 0400 /etc/rabbitmq-cookie/cookie /var/lib/rabbitmq/.erlang.cookie" in init["command"][-1]
    )


def test_secret_checksums_change_the_pod_template(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    first = by_kind(render_component("rabbitmq", tmp_path, {}), "StatefulSet")
    second = by_kind(
        render_component("rabbitmq", tmp_path, {"rabbitmq_secret_checksums": {"rabbitmq-admin": "1"}}),
        "StatefulSet",
    )
    key = "tenantforge.io/secrets-checksum"
    annotations = [obj["spec"]["template"]["metadata"]["annotations"] for obj in (first, second)]
    assert annotations[0][key] != annotations[1][key]
    assert (
        annotations[0]["tenantforge.io/config-checksum"] == annotations[1]["tenantforge.io/config-checksum"]
    )


def test_the_access_job_reruns_when_its_secrets_change(tmp_path: Path) -> None:
    write_secrets(tmp_path)

    def name(extra: dict[str, Any]) -> str:
        return str(by_kind(render_component("rabbitmq", tmp_path, extra), "Job")["metadata"]["name"])

    first = name({})
    assert name({"platform_secrets_checksums": {"tenantforge/rabbitmq-erlang-cookie": "1"}}) == first
    rotated = {name({"platform_secrets_checksums": {f"tenantforge/{secret}": "1"}}) for secret in USERS}
    assert len(rotated) == len(USERS) and first not in rotated


# --- local target ----------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    amqp_port: int
    management_port: int
    dist_port: int

    @property
    def erlang_name(self) -> str:
        return f"{self.name}@localhost"


@dataclass
class LocalStack:
    state_dir: Path
    nodes: list[Node]
    epmd_port: int
    values: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)

    def run(self, extra: dict[str, Any] | None = None, args: tuple[str, ...] = ()):
        return run_playbook(
            PLAYBOOK,
            self.state_dir,
            # The local target comes from inventories/local. The bundle beside the services is
            # tested once, below: the other runs count the nodes' changes only.
            {
                **ONLY_RABBITMQ,
                "rabbitmq_local_bundle": False,
                "rabbitmq_local_nodes": [vars(node) for node in self.nodes],
                "rabbitmq_local_epmd_port": self.epmd_port,
                **self.settings,
                **(extra or {}),
            },
            args,
        )

    def api(self, path: str, node: Node | None = None, method: str = "GET") -> Any:
        node = node or self.nodes[0]
        token = base64.b64encode(f"{ADMIN}:{self.values[ADMIN]}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{node.management_port}{path}",
            headers={"Authorization": f"Basic {token}"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            content = response.read()
            return json.loads(content) if content else None

    def connect(
        self, user: str, node: Node | None = None, password: str | None = None
    ) -> pika.BlockingConnection:
        node = node or self.nodes[0]
        credentials = pika.PlainCredentials(user, self.values[user] if password is None else password)
        parameters = pika.ConnectionParameters("127.0.0.1", node.amqp_port, VHOST, credentials)
        return pika.BlockingConnection(parameters)

    def pid_file(self, node: Node) -> Path:
        return self.state_dir / "rabbitmq" / node.name / "rabbitmq.pid"

    def pid(self, node: Node) -> int:
        return int(self.pid_file(node).read_text())

    def running_nodes(self, node: Node | None = None) -> list[str]:
        return sorted(n["name"] for n in self.api("/api/nodes", node) if n["running"])

    def kill(self, node: Node) -> None:
        """Stop one node behind the playbook's back, as a crash or an operator would."""
        pid = self.pid(node)
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(pid)


def listening_addresses(port: int) -> set[str]:
    """The addresses that TCP sockets listen on at this port, from /proc/net/tcp and tcp6."""
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, packed))
    return found


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks that reported a change, for assertion messages."""
    tasks, current = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            current = line.split("]", 1)[0] + "]"
        elif line.startswith("changed:"):
            tasks.append(current)
    return tasks


def alive(pid: int) -> bool:
    """A process that has not exited (a zombie has an empty command line)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@contextlib.contextmanager
def private_cluster(state_dir: Path) -> Iterator[LocalStack]:
    """Three nodes of their own: a private state dir, epmd and free ports (never 5672-5675, 4369 or
    4370), stopped at the end even when a test failed; not started."""
    ports = distinct_free_ports(10)
    nodes = [Node(f"tenantforge-{i + 1}", *ports[3 * i : 3 * i + 3]) for i in range(3)]
    local = LocalStack(state_dir, nodes, ports[9], write_secrets(state_dir))
    try:
        yield local
    finally:
        local.run({"tenantforge_platform_local_state": "stopped"})
        for pid_file in [*(local.pid_file(node) for node in nodes), state_dir / "rabbitmq" / "epmd.pid"]:
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """This module's own cluster, not started: the first tests start it."""
    with private_cluster(tmp_path_factory.mktemp("rabbitmq-local")) as local:
        yield local


def test_check_mode_on_a_fresh_state_dir_starts_nothing(stack: LocalStack) -> None:
    run = stack.run(args=("--check",))
    run.assert_ok()
    assert run.changed > 0
    assert not (stack.state_dir / "rabbitmq").exists()


def test_first_run_forms_one_cluster_of_three(stack: LocalStack) -> None:
    run = stack.run()
    run.assert_ok()
    assert run.changed > 0
    for value in stack.values.values():
        assert value not in run.output
    expected = sorted(node.erlang_name for node in stack.nodes)
    for node in stack.nodes:
        assert stack.running_nodes(node) == expected  # every node sees the same three
    assert listening_addresses(stack.epmd_port) <= {"127.0.0.1", "::1"}
    overview = stack.api("/api/overview")
    assert overview["rabbitmq_version"].startswith("3.")  # Debian's package, not the image's 4.1
    listeners = {(entry["node"], entry["protocol"]): entry for entry in overview["listeners"]}
    for node in stack.nodes:
        assert listeners[(node.erlang_name, "amqp")]["ip_address"] == "127.0.0.1"
        assert listeners[(node.erlang_name, "amqp")]["port"] == node.amqp_port
        assert listeners[(node.erlang_name, "clustering")]["ip_address"] == "127.0.0.1"
        assert listeners[(node.erlang_name, "clustering")]["port"] == node.dist_port
        for port in (node.amqp_port, node.management_port, node.dist_port):
            assert listening_addresses(port) == {"127.0.0.1"}, port
        cookie = stack.state_dir / "rabbitmq" / node.name / ".erlang.cookie"
        assert cookie.read_text() == stack.values["cookie"]
        assert cookie.stat().st_mode & 0o777 == 0o400
        assert (stack.state_dir / "rabbitmq" / node.name / "data").is_dir()


def test_users_and_permissions_are_least_privilege(stack: LocalStack) -> None:
    users = {user["name"]: user["tags"] for user in stack.api("/api/users")}
    assert users == {ADMIN: ["administrator"], ORCHESTRATOR: [], WORKER: [], NOTIFIER: []}  # no guest
    permissions = {
        (p["user"], p["vhost"]): (p["configure"], p["write"], p["read"])
        for p in stack.api("/api/permissions")
    }
    assert permissions == {
        (ADMIN, "/"): (".*", ".*", ".*"),
        (ADMIN, VHOST): (".*", ".*", ".*"),
        (ORCHESTRATOR, VHOST): ("^$", "^tasks$", "^$"),
        (WORKER, VHOST): ("^$", "^task\\-status$", "^tasks\\.(echo|http_check)$"),
        (NOTIFIER, VHOST): ("^$", "^$", "^task\\-status\\.notifier$"),
    }


def test_quorum_queues_span_the_three_nodes(stack: LocalStack) -> None:
    for name in ["tasks.echo", "tasks.http_check", "task-status.notifier", "dead-letter"]:
        queue = stack.api(f"/api/queues/{VHOST}/{name}")
        assert queue["type"] == "quorum"
        assert queue["durable"] is True and queue["auto_delete"] is False
        assert sorted(queue["members"]) == sorted(node.erlang_name for node in stack.nodes)
    for name in ["tasks.echo", "task-status.notifier"]:
        assert stack.api(f"/api/queues/{VHOST}/{name}")["arguments"] == {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "dead-letter",
            "x-delivery-limit": 5,
        }
    bindings = stack.api(f"/api/queues/{VHOST}/task-status.notifier/bindings")
    assert {(b["source"], b["routing_key"]) for b in bindings} == {
        ("", "task-status.notifier"),  # the default exchange's implicit binding
        ("task-status", "#"),
    }


def assert_refused(action, *args, **kwargs) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        action(*args, **kwargs)
    assert closed.value.reply_code == 403  # ACCESS_REFUSED


def test_the_orchestrator_only_publishes_tasks(stack: LocalStack) -> None:
    with stack.connect(ORCHESTRATOR) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "tasks", "org-1.echo", b"hello", pika.BasicProperties(delivery_mode=2), mandatory=True
        )
        assert_refused(channel.basic_get, "tasks.echo")
        channel = connection.channel()
        channel.confirm_delivery()
        assert_refused(channel.basic_publish, "task-status", "org-1.echo", b"status")
        channel = connection.channel()
        channel.confirm_delivery()
        assert_refused(channel.basic_publish, "", "tasks.echo", b"direct")  # the default exchange
        channel = connection.channel()
        assert_refused(channel.queue_declare, "mine", durable=True)


def test_a_worker_consumes_tasks_and_publishes_status(stack: LocalStack) -> None:
    with stack.connect(WORKER, stack.nodes[1]) as connection:
        channel = connection.channel()
        method, properties, body = channel.basic_get("tasks.echo")
        assert method is not None and body == b"hello" and method.routing_key == "org-1.echo"
        assert properties.delivery_mode == 2
        channel.basic_ack(method.delivery_tag)
        channel.confirm_delivery()
        channel.basic_publish("task-status", "org-1.echo.done", b"done")
        assert_refused(channel.basic_publish, "tasks", "org-1.echo", b"task")
        channel = connection.channel()
        assert_refused(channel.basic_get, "dead-letter")
        channel = connection.channel()
        assert_refused(channel.queue_delete, "tasks.echo")


def test_the_notifier_only_consumes_its_queue_of_status_events(stack: LocalStack) -> None:
    """Every status event a worker publishes waits in task-status.notifier (the previous test's and
    this one's); the notifier consumes and acknowledges them, and may do nothing else."""
    with stack.connect(WORKER) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("task-status", "org-5.http_check.failed", b"failed", mandatory=True)
    with stack.connect(NOTIFIER, stack.nodes[2]) as connection:
        channel = connection.channel()
        received = []
        for method, _, body in channel.consume("task-status.notifier", inactivity_timeout=2):
            if method is None:
                break
            received.append((method.routing_key, body))
            channel.basic_ack(method.delivery_tag)
        channel.cancel()
        assert received == [("org-1.echo.done", b"done"), ("org-5.http_check.failed", b"failed")]
        assert channel.queue_declare("task-status.notifier", passive=True).method.message_count == 0
        assert_refused(channel.queue_declare, "notifier-own", durable=True)
        channel = connection.channel()
        assert_refused(channel.queue_bind, "task-status.notifier", "task-status", "org-1.#")
        channel = connection.channel()
        assert_refused(channel.queue_delete, "task-status.notifier")
        for exchange, routing_key in (("tasks", "org-1.echo"), ("task-status", "org-1.echo.done")):
            channel = connection.channel()
            channel.confirm_delivery()
            assert_refused(channel.basic_publish, exchange, routing_key, b"forged")
        channel = connection.channel()
        assert_refused(channel.basic_get, "tasks.echo")
        channel = connection.channel()
        assert_refused(channel.basic_consume, "tasks.http_check", lambda *_: None)
        channel = connection.channel()
        assert_refused(channel.basic_get, "dead-letter")


def test_a_message_rejected_too_often_is_dead_lettered(stack: LocalStack) -> None:
    with stack.connect(ORCHESTRATOR) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("tasks", "org-2.echo", b"poison", mandatory=True)
    with stack.connect(WORKER) as connection:
        channel = connection.channel()
        deliveries = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            method, _, _ = channel.basic_get("tasks.echo")
            if method is None:
                break
            deliveries += 1
            channel.basic_nack(method.delivery_tag, requeue=True)
        assert deliveries == 6  # the first delivery and five redeliveries (rabbitmq_delivery_limit)
    with stack.connect(ADMIN) as connection:
        channel = connection.channel()
        method, _, body = channel.basic_get("dead-letter", auto_ack=True)
        assert method is not None and body == b"poison"


def test_confirmed_messages_survive_the_loss_of_their_leader(stack: LocalStack) -> None:
    count = 300
    with stack.connect(ORCHESTRATOR) as connection:
        channel = connection.channel()
        channel.confirm_delivery()  # each publish returns once the queue's majority has the message
        for index in range(count):
            channel.basic_publish(
                "tasks", "org-3.http_check", f"task-{index}".encode(), pika.BasicProperties(delivery_mode=2)
            )
    leader_name = stack.api(f"/api/queues/{VHOST}/tasks.http_check")["leader"]
    (leader,) = [node for node in stack.nodes if node.erlang_name == leader_name]
    survivors = [node for node in stack.nodes if node is not leader]
    stack.kill(leader)
    expected = sorted(node.erlang_name for node in survivors)
    deadline = time.monotonic() + 60
    while stack.running_nodes(survivors[0]) != expected and time.monotonic() < deadline:
        time.sleep(1)

    received: list[str] = []
    with stack.connect(WORKER, survivors[-1]) as connection:
        channel = connection.channel()
        deadline = time.monotonic() + 60
        while len(received) < count and time.monotonic() < deadline:
            method, _, body = channel.basic_get("tasks.http_check")
            if method is None:
                time.sleep(0.5)  # a new leader is being elected
                continue
            received.append(body.decode())
            channel.basic_ack(method.delivery_tag)
    assert sorted(received) == sorted(f"task-{index}" for index in range(count))

    run = stack.run()
    run.assert_ok()
    assert run.changed == 1, changed_tasks(run.output)  # the stopped node started again; nothing else to do
    assert stack.running_nodes() == sorted(node.erlang_name for node in stack.nodes)


def test_second_run_changes_nothing(stack: LocalStack) -> None:
    run = stack.run()
    run.assert_ok()
    assert run.changed == 0, changed_tasks(run.output)
    check = stack.run(args=("--check",))
    check.assert_ok()
    assert check.changed == 0, changed_tasks(check.output)


def node_metric(stack: LocalStack, node: Node, name: str) -> Any:
    """A node's metric from the management API, which reports it only once the restarted node's
    statistics have been collected."""
    deadline = time.monotonic() + 30
    while True:
        value = stack.api(f"/api/nodes/{node.erlang_name}").get(name)
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_a_changed_configuration_restarts_the_nodes_one_at_a_time(stack: LocalStack) -> None:
    with stack.connect(ORCHESTRATOR) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("tasks", "org-4.echo", b"kept", pika.BasicProperties(delivery_mode=2))
    pids = {node.name: stack.pid(node) for node in stack.nodes}
    stack.settings = {"rabbitmq_local_memory_high_watermark": "600MiB"}
    check = stack.run(args=("--check",))
    check.assert_ok()
    assert check.changed > 0
    assert {node.name: stack.pid(node) for node in stack.nodes} == pids
    run = stack.run()
    run.assert_ok()
    # The three files, then each node stopped and started again before the next one goes down.
    conf, stop, start = (
        "TASK [rabbitmq : Write each node's rabbitmq.conf]",
        "TASK [rabbitmq : Stop the node for the restart]",
        "TASK [rabbitmq : Start the node again]",
    )
    assert changed_tasks(run.output) == [conf, conf, conf, stop, start, stop, start, stop, start]
    assert run.changed == 7
    assert all(stack.pid(node) != pids[node.name] for node in stack.nodes)
    for node in stack.nodes:
        settings = parse_conf((stack.state_dir / "rabbitmq" / node.name / "rabbitmq.conf").read_text())
        assert settings["vm_memory_high_watermark.absolute"] == "600MiB"
        assert node_metric(stack, node, "mem_limit") == 600 * 1024 * 1024
    assert stack.running_nodes() == sorted(node.erlang_name for node in stack.nodes)
    with stack.connect(ADMIN) as connection:
        assert connection.channel().queue_declare("tasks.echo", passive=True).method.message_count == 1
    again = stack.run()
    again.assert_ok()
    assert again.changed == 0, changed_tasks(again.output)


def test_local_target_writes_the_bundle_it_would_apply(stack: LocalStack, tmp_path: Path) -> None:
    run = stack.run({"rabbitmq_local_bundle": True})
    run.assert_ok()
    assert run.changed == 2, changed_tasks(run.output)  # the directory, the files
    bundle = load_rendered(stack.state_dir / "manifests" / "rabbitmq")
    assert [obj for _, obj in bundle] == [obj for _, obj in render_component("rabbitmq", tmp_path, {})]
    again = stack.run({"rabbitmq_local_bundle": True})
    again.assert_ok()
    assert again.changed == 0, changed_tasks(again.output)


def test_stop_and_start_keep_the_data(stack: LocalStack) -> None:
    stop = stack.run({"tenantforge_platform_local_state": "stopped"})
    stop.assert_ok()
    assert stop.changed == 2, changed_tasks(stop.output)  # the nodes (one loop) and epmd
    assert not any(stack.pid_file(node).exists() for node in stack.nodes)
    assert not (stack.state_dir / "rabbitmq" / "epmd.pid").exists()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        stack.connect(ADMIN)
    again = stack.run({"tenantforge_platform_local_state": "stopped"})
    again.assert_ok()
    assert again.changed == 0, changed_tasks(again.output)

    start = stack.run()
    start.assert_ok()
    assert start.changed == 2, changed_tasks(
        start.output
    )  # epmd and the nodes: the users and topology are kept
    with stack.connect(WORKER, stack.nodes[2]) as connection:
        channel = connection.channel()
        method, _, body = channel.basic_get("tasks.echo", auto_ack=True)
        assert method is not None and body == b"kept"


def test_the_access_job_restores_what_the_role_applies(stack: LocalStack, tmp_path: Path) -> None:
    """The cluster's access Job (its command, script, request and environment, secrets resolved as the
    kubelet would) against the three local nodes: with the orchestrator, worker and notifier users
    deleted it creates them again with their passwords and permissions, a second run changes nothing,
    and the role finds nothing to change after it."""

    def users() -> dict[str, list[str]]:
        return {user["name"]: user["tags"] for user in stack.api("/api/users")}

    before, permissions = users(), stack.api("/api/permissions")
    for user in (ORCHESTRATOR, WORKER, NOTIFIER):
        stack.api(f"/api/users/{user}", method="DELETE")
    objects = render_component("rabbitmq", tmp_path, {})
    workdir = tmp_path / "job"
    workdir.mkdir()
    created = [
        action
        for user in (ORCHESTRATOR, WORKER, NOTIFIER)
        for action in (f"create user {user}", f"set the permissions of user {user} in vhost {VHOST}")
    ]
    for expected in (created, []):
        job = run_job_locally(
            by_kind(objects, "Job"),
            objects,
            stack.state_dir / "secrets",
            workdir,
            # The client Service's address in the cluster.
            {"RABBITMQ_MANAGEMENT_URL": f"http://127.0.0.1:{stack.nodes[1].management_port}"},
            os.environ["PATH"],
        )
        assert job.returncode == 0, job.stdout + job.stderr
        assert json.loads(job.stdout)["actions"] == expected
        for value in stack.values.values():
            assert value not in job.stdout + job.stderr
    assert users() == before
    assert stack.api("/api/permissions") == permissions
    for user in (ORCHESTRATOR, WORKER, NOTIFIER):
        stack.connect(user).close()
    run = stack.run()
    run.assert_ok()
    assert run.changed == 0, changed_tasks(run.output)
