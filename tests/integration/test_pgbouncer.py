"""The pgbouncer role: its Kubernetes objects (render target), and a real local PgBouncer in front of a
real local PostgreSQL, both started through playbooks/platform.yml (local target)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import psycopg
import pytest
import yaml
from conftest import REPO, PlaybookRun, free_port, run_playbook
from rendering import (
    KUBERNETES_VERSION,
    Rendered,
    assert_no_secret_in,
    assert_pod_policy,
    by_kind,
    load_rendered,
    render_component,
    validate_strictly,
)
from test_postgres import write_secrets

from ansible_collections.tenantforge.platform.plugins.module_utils.secrets_sync import render_template

pytestmark = pytest.mark.integration

PLAYBOOK = "playbooks/platform.yml"
ONLY_PGBOUNCER = {"tenantforge_platform_components": ["pgbouncer"]}
# The local target needs PostgreSQL running: the postgres role comes first.
WITH_POSTGRES = {"tenantforge_platform_components": ["postgres", "pgbouncer"]}
AUTH_QUERY = "SELECT usename, passwd FROM pgbouncer.get_auth($1)"


def parse_ini(text: str) -> dict[str, dict[str, str]]:
    """pgbouncer.ini as {section: {key: value}}; comments skipped, values as written."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert key.strip() not in current, f"{key.strip()} is set twice"
        current[key.strip()] = value.strip()
    return sections


def mapping_userlist(username: str, password: str) -> str:
    """The userlist.txt key that the platform_secrets mapping makes of the secret's fields.

    The mapping's template is rendered as secrets_sync renders it (its sandbox), after Ansible's own
    pass, which only removes the {% raw %} markers around it.
    """
    defaults = yaml.safe_load((REPO / "roles/platform_secrets/defaults/main.yml").read_text())
    (mapping,) = [m for m in defaults["platform_secrets_mappings"] if m["source"].endswith("pgbouncer/auth")]
    source = re.sub(r"\{%\s*(end)?raw\s*%\}", "", mapping["templates"]["userlist.txt"])
    return render_template(source, {"username": username, "password": password}, "pgbouncer/auth", "userlist")


# --- render target ---------------------------------------------------------------------------------

NON_DEFAULT = {
    "pgbouncer_namespace": "platform-db",
    "pgbouncer_replicas": 3,
    "pgbouncer_pool_mode": "session",
    "pgbouncer_max_client_conn": 5000,
    "pgbouncer_default_pool_size": 50,
    "pgbouncer_min_pool_size": 5,
    "pgbouncer_reserve_pool_size": 0,
    "pgbouncer_max_db_connections": 60,
    "pgbouncer_resources": {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    },
    "pgbouncer_pod_disruption_budget": False,
    "pgbouncer_secret_checksums": {"pgbouncer-auth": "abc123"},
    "pgbouncer_extra_settings": {"server_check_delay": 10, "application_name_add_host": 1},
}


@pytest.fixture(scope="module", params=["defaults", "non-default"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp(f"render-{request.param}")
    passwords = write_secrets(tmp_path)
    extra = {} if request.param == "defaults" else NON_DEFAULT
    return extra, passwords, render_component("pgbouncer", tmp_path, extra)


def ini_of(objects: Rendered) -> dict[str, dict[str, str]]:
    return parse_ini(by_kind(objects, "ConfigMap")["data"]["pgbouncer.ini"])


def test_render_writes_one_file_per_object(rendered) -> None:
    extra, _, objects = rendered
    expected = [
        ("00-configmap-pgbouncer-config.yaml", "ConfigMap", "pgbouncer-config"),
        ("01-service-pgbouncer.yaml", "Service", "pgbouncer"),
        ("02-deployment-pgbouncer.yaml", "Deployment", "pgbouncer"),
    ]
    if extra.get("pgbouncer_pod_disruption_budget", True):
        expected.append(("03-poddisruptionbudget-pgbouncer.yaml", "PodDisruptionBudget", "pgbouncer"))
    assert [(path.name, obj["kind"], obj["metadata"]["name"]) for path, obj in objects] == expected


def test_rendered_objects_validate_strictly(rendered) -> None:
    _, _, objects = rendered
    validate_strictly(objects)


def test_strict_validation_rejects_an_unknown_field(rendered) -> None:
    _, _, objects = rendered
    deployment = by_kind(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container["readinessProbe"]
    try:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    finally:
        del container["readinesProbe"]


def test_rendered_objects_follow_the_policy(rendered) -> None:
    _, passwords, objects = rendered
    deployment = by_kind(objects, "Deployment")
    assert_pod_policy(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 70
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/edoburu/pgbouncer:v1.24.1-p0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["tcpSocket"] == {"port": "pgbouncer"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "pgbouncer"}
    assert "env" not in container
    assert_no_secret_in(objects, list(passwords.values()))


def test_deployment_and_service_carry_the_variables(rendered) -> None:
    extra, _, objects = rendered
    namespace = extra.get("pgbouncer_namespace", "tenantforge")
    assert {obj["metadata"]["namespace"] for _, obj in objects} == {namespace}
    deployment = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == extra.get("pgbouncer_replicas", 2)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["resources"] == extra.get(
        "pgbouncer_resources",
        {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
    )
    assert container["ports"] == [{"name": "pgbouncer", "containerPort": 6432, "protocol": "TCP"}]
    assert set(template["metadata"]["annotations"]) == {
        "tenantforge.io/config-checksum",
        "tenantforge.io/secrets-checksum",
    }

    service = by_kind(objects, "Service", "pgbouncer")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "pgbouncer", "port": 6432, "targetPort": "pgbouncer", "protocol": "TCP"}
    ]
    selector = service["spec"]["selector"]
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    assert selector.items() <= template["metadata"]["labels"].items()
    if extra.get("pgbouncer_pod_disruption_budget", True):
        budget = by_kind(objects, "PodDisruptionBudget")
        assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}


def test_the_pod_reads_the_configmap_and_only_the_auth_file_of_the_secret(rendered) -> None:
    _, _, objects = rendered
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert container["command"] == ["pgbouncer"]
    assert container["args"] == [mounts["config"]["mountPath"] + "/pgbouncer.ini"]
    assert volumes["config"]["configMap"]["name"] == "pgbouncer-config"
    assert volumes["auth"]["secret"] == {
        "secretName": "pgbouncer-auth",
        "defaultMode": 0o440,
        "items": [{"key": "userlist.txt", "path": "userlist.txt"}],
    }
    assert mounts["config"]["readOnly"] is True and mounts["auth"]["readOnly"] is True
    settings = ini_of(objects)["pgbouncer"]
    assert settings["auth_file"] == mounts["auth"]["mountPath"] + "/userlist.txt"
    assert settings["unix_socket_dir"] == mounts["run"]["mountPath"]


def test_the_configmap_pools_transactions_and_authenticates_with_scram(rendered) -> None:
    extra, _, objects = rendered
    ini = ini_of(objects)
    namespace = extra.get("pgbouncer_namespace", "tenantforge")
    assert ini["databases"] == {
        "tenantforge": f"host=postgres.{namespace}.svc.cluster.local port=5432 dbname=tenantforge"
    }
    settings = ini["pgbouncer"]
    expected = {
        "listen_addr": "*",
        "listen_port": "6432",
        "logfile": "",
        "pidfile": "",
        "auth_type": "scram-sha-256",
        "auth_user": "pgbouncer_auth",
        "auth_query": AUTH_QUERY,
        "admin_users": "",
        "stats_users": "pgbouncer_auth",
        "pool_mode": extra.get("pgbouncer_pool_mode", "transaction"),
        "max_client_conn": str(extra.get("pgbouncer_max_client_conn", 1000)),
        "default_pool_size": str(extra.get("pgbouncer_default_pool_size", 20)),
        "min_pool_size": str(extra.get("pgbouncer_min_pool_size", 0)),
        "reserve_pool_size": str(extra.get("pgbouncer_reserve_pool_size", 5)),
        "reserve_pool_timeout": "5",
        "max_db_connections": str(extra.get("pgbouncer_max_db_connections", 40)),
        "max_user_connections": "0",
        "server_idle_timeout": "600",
        "server_lifetime": "3600",
        "query_wait_timeout": "120",
    }
    assert {key: settings.get(key) for key in expected} == expected
    for name, value in extra.get("pgbouncer_extra_settings", {}).items():
        assert settings[name] == str(value)


def test_pod_template_changes_with_secrets_and_configuration(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    key = "tenantforge.io/secrets-checksum", "tenantforge.io/config-checksum"

    def annotations(extra: dict[str, Any]) -> tuple[str, str]:
        pod = by_kind(render_component("pgbouncer", tmp_path, extra), "Deployment")["spec"]["template"]
        return pod["metadata"]["annotations"][key[0]], pod["metadata"]["annotations"][key[1]]

    secrets_before, config_before = annotations({})
    secrets_after, config_unchanged = annotations({"pgbouncer_secret_checksums": {"pgbouncer-auth": "1"}})
    secrets_unchanged, config_after = annotations({"pgbouncer_default_pool_size": 30})
    assert secrets_after != secrets_before and config_unchanged == config_before
    assert config_after != config_before and secrets_unchanged == secrets_before


def test_the_synced_secret_gets_the_auth_file_format() -> None:
    assert mapping_userlist("pgbouncer_auth", "s3cr3t") == '"pgbouncer_auth" "s3cr3t"\n'
    assert mapping_userlist("pgbouncer_auth", 'a"b') == '"pgbouncer_auth" "a""b"\n'


# --- local target ----------------------------------------------------------------------------------


@dataclass
class LocalStack:
    """PostgreSQL and PgBouncer of this module's own: a private state dir and free ports."""

    state_dir: Path
    postgres_port: int
    pgbouncer_port: int
    passwords: dict[str, str]
    # Settings of the last applied run, kept by the next ones.
    settings: dict[str, Any] = field(default_factory=dict)

    def run(
        self, extra: dict[str, Any] | None = None, args: tuple[str, ...] = (), postgres: bool = True
    ) -> PlaybookRun:
        return run_playbook(
            PLAYBOOK,
            self.state_dir,
            {
                # The target is inventories/local's: local.
                **(WITH_POSTGRES if postgres else ONLY_PGBOUNCER),
                "postgres_local_port": self.postgres_port,
                "pgbouncer_local_port": self.pgbouncer_port,
                **self.settings,
                **(extra or {}),
            },
            args,
        )

    def connect(
        self,
        user: str,
        password: str | None = None,
        dbname: str = "tenantforge",
        port: int | None = None,
        connect_timeout: int = 5,
        **options: Any,
    ) -> psycopg.Connection:
        """A connection through PgBouncer (or to `port`)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=port or self.pgbouncer_port,
            user=user,
            password=self.passwords[user] if password is None else password,
            dbname=dbname,
            connect_timeout=connect_timeout,
            **options,
        )

    def console(self, command: str) -> list[dict[str, Any]]:
        """A SHOW command on PgBouncer's console, as the auth user (a stats user): simple protocol."""
        with self.connect(
            "pgbouncer_auth", dbname="pgbouncer", autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as connection:
            cursor = connection.execute(command)
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def setting(self, name: str) -> str:
        (row,) = [row for row in self.console("SHOW CONFIG") if row["key"] == name]
        return str(row["value"])

    def postgres(self, sql: str) -> list[tuple[Any, ...]]:
        with self.connect("postgres", port=self.postgres_port) as connection:
            return connection.execute(sql).fetchall()

    @property
    def directory(self) -> Path:
        return self.state_dir / "pgbouncer"

    @property
    def pid_file(self) -> Path:
        return self.directory / "pgbouncer.pid"

    def pid(self) -> int:
        return int(self.pid_file.read_text())


# The platform play also writes the Kubernetes bundle beside the local services (the role's render
# tasks); the local target's own work is what the other tasks of the role did.
BUNDLE_TASKS = {"pgbouncer : Create the render directory", "pgbouncer : Write one file per object"}


def local_changes(run: PlaybookRun) -> list[str]:
    """The pgbouncer role's local-target tasks that reported a change, in order."""
    changed: list[str] = []
    task = None
    for line in run.output.splitlines():
        header = re.match(r"^TASK \[(.*)\] \*+$", line)
        if header:
            task = header.group(1)
        elif re.match(r"^changed: \[localhost\]", line) and task and task not in changed[-1:]:
            changed.append(task)
    return [
        name.removeprefix("pgbouncer : ")
        for name in changed
        if name.startswith("pgbouncer : ") and name not in BUNDLE_TASKS
    ]


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with private_stack(tmp_path_factory.mktemp("pgbouncer-local")) as local:
        yield local


@contextlib.contextmanager
def private_stack(state_dir: Path) -> Iterator[LocalStack]:
    """PostgreSQL and PgBouncer of its own: a private state dir with generated secrets, free ports
    (none of 5432-5433 and 6432-6433), stopped at the end even when a test failed; not started."""
    ports = {free_port(), free_port()}
    while len(ports) < 2 or ports & {5432, 5433, 6432, 6433}:
        ports = {free_port(), free_port()}
    postgres_port, pgbouncer_port = sorted(ports)
    local = LocalStack(state_dir, postgres_port, pgbouncer_port, write_secrets(state_dir))
    try:
        yield local
    finally:
        local.run({"tenantforge_platform_local_state": "stopped"})
        for pid_file in (local.pid_file, state_dir / "postgres" / "postgres.pid"):
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def test_check_mode_on_a_fresh_state_dir_starts_nothing(stack: LocalStack) -> None:
    run = stack.run(args=("--check",))
    run.assert_ok()
    assert run.changed > 0
    assert not stack.directory.exists()
    assert not (stack.state_dir / "postgres").exists()
    assert not listening(stack.pgbouncer_port) and not listening(stack.postgres_port)


def test_first_run_starts_pgbouncer_in_front_of_postgres(stack: LocalStack) -> None:
    run = stack.run()
    run.assert_ok()
    assert run.changed > 0
    for password in stack.passwords.values():
        assert password not in run.output
    assert stack.pid_file.exists()
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in stack.directory.iterdir()}
    assert modes["pgbouncer.ini"] == modes["userlist.txt"] == modes["pgbouncer.log"] == 0o600
    assert modes["run"] == 0o700 and stat.S_IMODE(stack.directory.stat().st_mode) == 0o700
    assert (stack.directory / "run" / f".s.PGSQL.{stack.pgbouncer_port}").is_socket()
    ini = parse_ini((stack.directory / "pgbouncer.ini").read_text())
    assert ini["databases"] == {
        "tenantforge": f"host=127.0.0.1 port={stack.postgres_port} dbname=tenantforge"
    }
    assert ini["pgbouncer"]["listen_addr"] == "127.0.0.1"
    assert ini["pgbouncer"]["listen_port"] == str(stack.pgbouncer_port)
    assert ini["pgbouncer"]["auth_file"] == str(stack.directory / "userlist.txt")
    assert ini["pgbouncer"]["auth_query"] == AUTH_QUERY
    assert "PgBouncer 1.18" in (stack.directory / "pgbouncer.log").read_text()
    # The summary names the endpoint only; the bundle beside it is what the cluster would get.
    summary = (stack.state_dir / "summary.json").read_text()
    assert json.loads(summary)["pgbouncer"] == {
        "host": "127.0.0.1",
        "port": stack.pgbouncer_port,
        "database": "tenantforge",
    }
    assert not [password for password in stack.passwords.values() if password in summary]
    bundle = load_rendered(stack.state_dir / "manifests" / "pgbouncer")
    assert [obj["kind"] for _, obj in bundle] == ["ConfigMap", "Service", "Deployment", "PodDisruptionBudget"]
    assert parse_ini(by_kind(bundle, "ConfigMap")["data"]["pgbouncer.ini"])["pgbouncer"]["listen_addr"] == "*"


def test_pgbouncer_runs_unprivileged_in_the_foreground(stack: LocalStack) -> None:
    runner = stack.pid()
    children = Path(f"/proc/{runner}/task/{runner}/children").read_text().split()
    assert len(children) == 1, children
    pgbouncer = int(children[0])
    command = Path(f"/proc/{pgbouncer}/cmdline").read_bytes().split(b"\0")
    assert Path(command[0].decode()).name == "pgbouncer" and b"-d" not in command
    # Root outside, an unprivileged uid in its own user namespace (PgBouncer refuses to run as root).
    assert Path(f"/proc/{pgbouncer}/uid_map").read_text().split() == ["1000", "0", "1"]


def test_the_auth_file_is_the_one_the_synced_secret_holds(stack: LocalStack) -> None:
    assert (stack.directory / "userlist.txt").read_text() == mapping_userlist(
        "pgbouncer_auth", stack.passwords["pgbouncer_auth"]
    )


def test_the_app_logs_in_with_its_password_only(stack: LocalStack) -> None:
    with stack.connect("tenantforge_app") as connection:
        assert connection.execute("SELECT current_user, current_database()").fetchone() == (
            "tenantforge_app",
            "tenantforge",
        )
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        stack.connect("tenantforge_app", password="wrong-" + stack.passwords["tenantforge_app"])


def test_the_superuser_cannot_log_in_through_pgbouncer(stack: LocalStack) -> None:
    # The same password works on PostgreSQL itself: PgBouncer refuses, get_auth() hides superusers.
    assert stack.postgres("SELECT current_user") == [("postgres",)]
    with pytest.raises(psycopg.OperationalError, match="no such user"):
        stack.connect("postgres")


def test_only_the_configured_database_and_no_console_for_the_app(stack: LocalStack) -> None:
    # PgBouncer answers an unknown database like a wrong password, so as not to tell which exist.
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        stack.connect("tenantforge_app", dbname="postgres")
    log = (stack.directory / "pgbouncer.log").read_text()
    assert re.search(r"\(nodb\)/tenantforge_app@127\.0\.0\.1:\d+ login attempt: db=postgres ", log)
    # The app is no console user: PgBouncer 1.18 never completes its login (it cannot run the auth
    # query for the console), so the client gives up.
    with pytest.raises(psycopg.OperationalError):
        stack.connect(
            "tenantforge_app",
            dbname="pgbouncer",
            connect_timeout=2,
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        )


def test_pools_are_in_transaction_mode(stack: LocalStack) -> None:
    with stack.connect("tenantforge_app", autocommit=True) as connection:
        connection.execute("SELECT 1")
    (pool,) = [row for row in stack.console("SHOW POOLS") if row["user"] == "tenantforge_app"]
    assert pool["database"] == "tenantforge" and pool["pool_mode"] == "transaction"
    assert stack.setting("pool_mode") == "transaction"
    # A transaction-local setting (how the app sets the tenant for row-level security) works.
    with stack.connect("tenantforge_app") as connection, connection.transaction():
        connection.execute("SET LOCAL app.current_org_id = 'org-a'")
        assert connection.execute("SELECT current_setting('app.current_org_id')").fetchone() == ("org-a",)


CLIENTS = 300


def test_300_clients_share_no_more_server_connections_than_the_pool(stack: LocalStack) -> None:
    """300 clients connected at once, each running a short transaction, get at most
    pgbouncer_default_pool_size (20) server connections. The transactions take about
    300 x 20 ms / 20 = 0.3 s in all, far below reserve_pool_timeout (5 s): the reserve pool stays shut."""
    pool_size = 20
    connected = threading.Barrier(CLIENTS + 1, timeout=120)
    queried = threading.Barrier(CLIENTS + 1, timeout=120)
    release = threading.Event()
    backends: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with stack.connect("tenantforge_app", autocommit=True, connect_timeout=60) as connection:
                connected.wait()
                row = connection.execute("SELECT pg_backend_pid() FROM pg_sleep(0.02)").fetchone()
                assert row is not None
                with lock:
                    backends.append(row[0])
                queried.wait()
                release.wait(timeout=120)
        except BaseException as error:  # reported by the test thread
            with lock:
                errors.append(error)
            connected.abort()
            queried.abort()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    peak = 0
    try:
        for thread in threads:
            thread.start()
        connected.wait()
        # Server connections of the app role seen from PostgreSQL while the clients query.
        with stack.connect("postgres", port=stack.postgres_port, autocommit=True) as admin:
            while queried.n_waiting < CLIENTS and not queried.broken:
                ((count,),) = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tenantforge_app'"
                ).fetchall()
                peak = max(peak, count)
                time.sleep(0.01)
            queried.wait()
            ((after,),) = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tenantforge_app'"
            ).fetchall()
        (pool,) = [row for row in stack.console("SHOW POOLS") if row["user"] == "tenantforge_app"]
    except threading.BrokenBarrierError:
        pytest.fail(f"clients failed: {errors[:3]}")
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors[:3]
    assert len(backends) == CLIENTS
    assert pool["cl_active"] + pool["cl_waiting"] == CLIENTS
    servers = sum(pool[key] for key in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
    assert 0 < servers <= pool_size
    assert len(set(backends)) <= pool_size
    assert 0 < peak <= pool_size and after <= pool_size


def test_second_run_changes_nothing(stack: LocalStack) -> None:
    run = stack.run()
    run.assert_ok()
    assert run.changed == 0


def wait_for_setting(stack: LocalStack, name: str, expected: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        value = stack.setting(name)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_check_mode_reports_a_configuration_change_and_applies_nothing(stack: LocalStack) -> None:
    ini = (stack.directory / "pgbouncer.ini").read_text()
    run = stack.run({"pgbouncer_default_pool_size": 25}, args=("--check", "--diff"), postgres=False)
    run.assert_ok()
    assert local_changes(run) == ["Write the configuration"]  # the reload is not run in check mode
    assert "+default_pool_size = 25" in run.output
    assert stack.passwords["pgbouncer_auth"] not in run.output
    assert (stack.directory / "pgbouncer.ini").read_text() == ini
    assert stack.setting("default_pool_size") == "20"


def test_a_pool_setting_is_reloaded_in_the_same_process(stack: LocalStack) -> None:
    pid = stack.pid()
    with stack.connect("tenantforge_app", autocommit=True) as client:
        stack.settings["pgbouncer_default_pool_size"] = 25
        run = stack.run(postgres=False)
        run.assert_ok()
        assert local_changes(run) == ["Write the configuration", "Reload PgBouncer"]
        assert wait_for_setting(stack, "default_pool_size", "25") == "25"
        assert stack.pid() == pid
        # The open client connection survived the reload.
        assert client.execute("SELECT 1").fetchone() == (1,)
    again = stack.run(postgres=False)
    again.assert_ok()
    assert again.changed == 0


def test_a_new_port_restarts_pgbouncer(stack: LocalStack) -> None:
    pid, old_port = stack.pid(), stack.pgbouncer_port
    stack.pgbouncer_port = free_port()
    run = stack.run(postgres=False)
    run.assert_ok()
    assert local_changes(run) == ["Write the configuration", "Stop PgBouncer", "Start PgBouncer again"]
    assert stack.pid() != pid
    assert not listening(old_port)
    with stack.connect("tenantforge_app") as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("tenantforge_app",)
    assert stack.setting("default_pool_size") == "25"


def test_pgbouncer_local_state_stopped_stops_pgbouncer_only(stack: LocalStack) -> None:
    stop = stack.run({"pgbouncer_local_state": "stopped"})
    stop.assert_ok()
    assert local_changes(stop) == ["Stop PgBouncer"]
    assert not stack.pid_file.exists()
    assert not listening(stack.pgbouncer_port)
    assert stack.postgres("SELECT 1") == [(1,)]
    again = stack.run({"pgbouncer_local_state": "stopped"}, postgres=False)
    again.assert_ok()
    assert local_changes(again) == []

    start = stack.run(postgres=False)
    start.assert_ok()
    assert local_changes(start) == ["Start PgBouncer"]  # the configuration is unchanged
    with stack.connect("tenantforge_app") as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_stopping_the_platform_stops_both(stack: LocalStack) -> None:
    stop = stack.run({"tenantforge_platform_local_state": "stopped"})
    stop.assert_ok()
    assert stop.changed == 2  # PgBouncer, then PostgreSQL
    assert local_changes(stop) == ["Stop PgBouncer"]
    assert not stack.pid_file.exists() and not (stack.state_dir / "postgres" / "postgres.pid").exists()
    assert not listening(stack.pgbouncer_port) and not listening(stack.postgres_port)
    again = stack.run({"tenantforge_platform_local_state": "stopped"})
    again.assert_ok()
    assert again.changed == 0
