"""The postgres role: its Kubernetes objects (render target) and a real local server (local target)."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import psycopg
import pytest
from conftest import free_port, run_playbook
from rendering import (
    KUBERNETES_VERSION,
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
# This module tests the postgres role alone.
ONLY_POSTGRES = {"tenantforge_platform_components": ["postgres"]}
USERS = {
    "postgres-superuser": "postgres",
    "postgres-owner": "tenantforge_owner",
    "postgres-app": "tenantforge_app",
    "pgbouncer-auth": "pgbouncer_auth",
}


def write_secrets(state_dir: Path) -> dict[str, str]:
    """The synced secret files of USERS, each with a new password; returns user -> password."""
    passwords = {username: secrets.token_urlsafe(24) for username in USERS.values()}
    write_secret_files(
        state_dir,
        {
            secret: {"username": username, "password": passwords[username]}
            for secret, username in USERS.items()
        },
    )
    return passwords


# --- render target ---------------------------------------------------------------------------------

NON_DEFAULT = {
    "postgres_namespace": "platform-db",
    "postgres_storage_class": "gp3",
    "postgres_storage_size": "50Gi",
    "postgres_resources": {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    },
    "postgres_secret_checksums": {"postgres-superuser": "abc123"},
}


@pytest.fixture(scope="module", params=["defaults", "non-default"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp(f"render-{request.param}")
    passwords = write_secrets(tmp_path)
    extra = {} if request.param == "defaults" else NON_DEFAULT
    return extra, passwords, render_component("postgres", tmp_path, extra)


def test_render_writes_one_file_per_object(rendered) -> None:
    _, _, objects = rendered
    assert [(obj["kind"], obj["metadata"]["name"]) for _, obj in objects] == [
        ("ConfigMap", "postgres-config"),
        ("Service", "postgres-headless"),
        ("Service", "postgres"),
        ("StatefulSet", "postgres"),
        ("ConfigMap", "postgres-bootstrap"),
        ("Job", by_kind(objects, "Job")["metadata"]["name"]),
    ]
    assert re.fullmatch(r"postgres-bootstrap-[0-9a-f]{10}", by_kind(objects, "Job")["metadata"]["name"])


def test_rendered_objects_validate_strictly(rendered) -> None:
    _, _, objects = rendered
    validate_strictly(objects)


def test_strict_validation_rejects_an_unknown_field(rendered) -> None:
    _, _, objects = rendered
    statefulset = copy.deepcopy(by_kind(objects, "StatefulSet"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def test_rendered_objects_carry_the_variables(rendered) -> None:
    extra, _, objects = rendered
    namespace = extra.get("postgres_namespace", "tenantforge")
    assert {obj["metadata"]["namespace"] for _, obj in objects} == {namespace}
    statefulset = by_kind(objects, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == "postgres-headless"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == extra.get("postgres_storage_class", "local-path")
    assert claim["spec"]["resources"]["requests"]["storage"] == extra.get("postgres_storage_size", "10Gi")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    expected_resources = extra.get(
        "postgres_resources",
        {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    )
    assert container["resources"] == expected_resources
    assert by_kind(objects, "Service", "postgres-headless")["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in by_kind(objects, "Service", "postgres")["spec"]
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert set(annotations) == {"tenantforge.io/config-checksum", "tenantforge.io/secrets-checksum"}


def test_secret_checksums_change_the_pod_template(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    first = by_kind(render_component("postgres", tmp_path, {}), "StatefulSet")
    second = by_kind(
        render_component("postgres", tmp_path, {"postgres_secret_checksums": {"postgres-app": "1"}}),
        "StatefulSet",
    )
    key = "tenantforge.io/secrets-checksum"
    assert (
        first["spec"]["template"]["metadata"]["annotations"][key]
        != (second["spec"]["template"]["metadata"]["annotations"][key])
    )


def test_only_the_secrets_the_pod_reads_roll_it(tmp_path: Path) -> None:
    """The last sync's checksums (platform_secrets_checksums) reach the annotation for the superuser
    Secret, whose password the pod reads; the others' passwords are set by the bootstrap, not the pod."""
    write_secrets(tmp_path)
    key = "tenantforge.io/secrets-checksum"

    def annotation(checksums: dict[str, str]) -> str:
        statefulset = by_kind(
            render_component("postgres", tmp_path, {"platform_secrets_checksums": checksums}), "StatefulSet"
        )
        return str(statefulset["spec"]["template"]["metadata"]["annotations"][key])

    unrelated = annotation({"tenantforge/postgres-app": "1"})
    assert annotation({}) == unrelated
    assert annotation({"tenantforge/postgres-superuser": "1"}) != unrelated
    assert annotation({"tenantforge/postgres-superuser": "2"}) != annotation(
        {"tenantforge/postgres-superuser": "1"}
    )


def test_rendered_objects_follow_the_policy(rendered) -> None:
    _, _, objects = rendered
    statefulset = by_kind(objects, "StatefulSet")
    assert_pod_policy(statefulset)
    assert pod_spec(statefulset)["securityContext"]["runAsUser"] == 999
    images = {container["image"] for container in pod_spec(statefulset)["containers"]}
    assert images == {"docker.io/library/postgres:15.13-bookworm"}
    # The Job runs to completion: no probes, the rest of the policy holds.
    job = by_kind(objects, "Job")
    assert_pod_policy(job, probes=False)
    assert pod_spec(job)["containers"][0]["image"] == "docker.io/library/postgres:15.13-bookworm"


def test_the_bootstrap_job_is_never_selected_as_the_server(rendered) -> None:
    _, _, objects = rendered
    assert len(selectors(objects)) == 3
    assert_selected_by_none(by_kind(objects, "Job"), objects)


def test_the_bootstrap_job_reruns_when_its_script_or_secrets_change(tmp_path: Path) -> None:
    """Its name hashes the script, the image and the four Secrets it reads: applying it again changes
    nothing, a rotated password (or another database) makes a new Job."""
    write_secrets(tmp_path)

    def name(extra: dict[str, Any]) -> str:
        return str(by_kind(render_component("postgres", tmp_path, extra), "Job")["metadata"]["name"])

    first = name({})
    assert name({"platform_secrets_checksums": {"tenantforge/pgbouncer-config": "1"}}) == first
    rotated = {name({"platform_secrets_checksums": {f"tenantforge/{secret}": "1"}}) for secret in USERS}
    assert len(rotated) == len(USERS) and first not in rotated
    assert name({"postgres_database": "other"}) != first


def test_rendered_configuration_is_scram_only(rendered) -> None:
    _, _, objects = rendered
    data = by_kind(objects, "ConfigMap", "postgres-config")["data"]
    assert "password_encryption = scram-sha-256" in data["postgresql.conf"]
    rules = [line.split() for line in data["pg_hba.conf"].splitlines() if line and not line.startswith("#")]
    assert rules == [
        ["local", "all", "all", "scram-sha-256"],
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
        ["host", "all", "all", "10.42.0.0/16", "scram-sha-256"],
    ]


def test_rendered_files_hold_no_secret_value(rendered) -> None:
    _, passwords, objects = rendered
    assert_no_secret_in(objects, list(passwords.values()))


# --- local target ----------------------------------------------------------------------------------


@dataclass
class LocalServer:
    state_dir: Path
    port: int
    passwords: dict[str, str]

    def run(self, extra: dict[str, Any] | None = None, args: tuple[str, ...] = ()):
        return run_playbook(
            PLAYBOOK,
            self.state_dir,
            {
                **ONLY_POSTGRES,
                "tenantforge_platform_target": "local",
                "postgres_local_port": self.port,
                # The bundle has a test of its own: the others count the server's changes only.
                "postgres_local_bundle": False,
                **(extra or {}),
            },
            args,
        )

    def connect(
        self, user: str, password: str | None = None, dbname: str = "tenantforge"
    ) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=self.passwords[user] if password is None else password,
            dbname=dbname,
            connect_timeout=5,
        )

    def query(self, sql: str, user: str = "postgres") -> list[tuple[Any, ...]]:
        with self.connect(user) as connection:
            return connection.execute(sql).fetchall()

    @property
    def runner_pid_file(self) -> Path:
        return self.state_dir / "postgres" / "postgres.pid"


@contextlib.contextmanager
def private_server(state_dir: Path, start: bool = False) -> Iterator[LocalServer]:
    """A local server of its own: a private state dir with generated secrets and a free port (never
    5432 or make run's 5433), stopped at the end even when a test failed."""
    port = free_port()
    while port in (5432, 5433):
        port = free_port()
    local = LocalServer(state_dir, port, write_secrets(state_dir))
    try:
        if start:
            local.run().assert_ok()
        yield local
    finally:
        local.run({"tenantforge_platform_local_state": "stopped"})
        if local.runner_pid_file.exists():
            os.killpg(int(local.runner_pid_file.read_text()), signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """This module's own server, not started: the first tests start it."""
    with private_server(tmp_path_factory.mktemp("postgres-local")) as local:
        yield local


def test_check_mode_on_a_fresh_state_dir_starts_nothing(server: LocalServer) -> None:
    run = server.run(args=("--check",))
    run.assert_ok()
    assert run.changed > 0
    assert not (server.state_dir / "postgres").exists()


def test_first_run_starts_postgres_15(server: LocalServer) -> None:
    run = server.run()
    run.assert_ok()
    assert run.changed > 0
    for password in server.passwords.values():
        assert password not in run.output
    ((version,),) = server.query("SHOW server_version_num")
    assert int(version) // 10000 == 15
    ((encryption,),) = server.query("SHOW password_encryption")
    assert encryption == "scram-sha-256"
    data = server.state_dir / "postgres" / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    assert not (server.state_dir / "postgres" / "initdb.pwfile").exists()


def test_only_scram_from_loopback(server: LocalServer) -> None:
    rules = server.query("SELECT type, address, auth_method FROM pg_hba_file_rules ORDER BY line_number")
    assert rules == [("local", None, "scram-sha-256"), ("host", "127.0.0.1", "scram-sha-256")]
    ((listen,),) = server.query("SHOW listen_addresses")
    assert listen == "127.0.0.1"
    verifiers = server.query("SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin ORDER BY rolname")
    assert [name for name, _ in verifiers] == sorted(USERS.values())
    assert all(verifier.startswith("SCRAM-SHA-256$4096:") for _, verifier in verifiers)


@pytest.mark.parametrize("user", ["postgres", "tenantforge_owner", "tenantforge_app", "pgbouncer_auth"])
def test_logins_need_the_right_password(server: LocalServer, user: str) -> None:
    with server.connect(user) as connection:
        assert connection.execute("SELECT current_user").fetchone() == (user,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        server.connect(user, password="wrong-" + server.passwords[user])


def test_roles_and_database(server: LocalServer) -> None:
    rows = server.query(
        "SELECT rolname, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles "
        "WHERE rolname IN ('tenantforge_owner', 'tenantforge_app', 'pgbouncer_auth') ORDER BY rolname"
    )
    assert rows == [
        ("pgbouncer_auth", False, False, False, False, True),
        ("tenantforge_app", False, False, False, False, True),
        ("tenantforge_owner", False, False, False, False, True),
    ]
    assert server.query("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'tenantforge'") == [
        ("tenantforge_owner",)
    ]
    assert server.query("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'") == [
        ("tenantforge_owner",)
    ]


def test_pgbouncer_auth_query(server: LocalServer) -> None:
    with server.connect("pgbouncer_auth") as connection:
        ((usename, passwd),) = connection.execute(
            "SELECT * FROM pgbouncer.get_auth('tenantforge_app')"
        ).fetchall()
        assert usename == "tenantforge_app" and passwd.startswith("SCRAM-SHA-256$")
        assert connection.execute("SELECT * FROM pgbouncer.get_auth('postgres')").fetchall() == []
    with server.connect("tenantforge_app") as connection, pytest.raises(psycopg.errors.InsufficientPrivilege):
        connection.execute("SELECT * FROM pgbouncer.get_auth('postgres')")


def test_row_level_security_binds_the_app_role(server: LocalServer) -> None:
    with server.connect("tenantforge_owner") as owner:
        owner.execute("CREATE TABLE notes (id serial PRIMARY KEY, org_id text NOT NULL, body text NOT NULL)")
        owner.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
        owner.execute("ALTER TABLE notes FORCE ROW LEVEL SECURITY")
        owner.execute(
            "CREATE POLICY org_isolation ON notes USING (org_id = current_setting('app.current_org_id', true)) "
            "WITH CHECK (org_id = current_setting('app.current_org_id', true))"
        )
        for org, body in [("org-a", "a1"), ("org-a", "a2"), ("org-b", "b1")]:
            owner.execute("SELECT set_config('app.current_org_id', %s, true)", (org,))
            owner.execute("INSERT INTO notes (org_id, body) VALUES (%s, %s)", (org, body))
            owner.commit()
    with server.connect("tenantforge_app") as app:
        with app.transaction():
            app.execute("SET LOCAL app.current_org_id = 'org-a'")
            assert app.execute("SELECT body FROM notes ORDER BY body").fetchall() == [("a1",), ("a2",)]
        with app.transaction():
            app.execute("SET LOCAL app.current_org_id = 'org-b'")
            assert app.execute("SELECT body FROM notes").fetchall() == [("b1",)]
        assert app.execute("SELECT body FROM notes").fetchall() == []
        app.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("ALTER TABLE notes DISABLE ROW LEVEL SECURITY")
        app.rollback()
        app.execute("SET row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            app.execute("SELECT body FROM notes")
        app.rollback()


def test_second_run_changes_nothing(server: LocalServer) -> None:
    run = server.run()
    run.assert_ok()
    assert run.changed == 0


def test_local_target_writes_the_bundle_it_would_apply(server: LocalServer, tmp_path: Path) -> None:
    run = server.run({"postgres_local_bundle": True})
    run.assert_ok()
    assert run.changed == 2  # the directory, the files
    bundle = load_rendered(server.state_dir / "manifests" / "postgres")
    rendered = render_component("postgres", tmp_path, {})
    assert [obj for _, obj in bundle] == [obj for _, obj in rendered]
    again = server.run({"postgres_local_bundle": True})
    again.assert_ok()
    assert again.changed == 0


def wait_for_setting(server: LocalServer, name: str, expected: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        ((value,),) = server.query(f"SHOW {name}")
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_reloadable_setting_is_reloaded(server: LocalServer) -> None:
    started = server.query("SELECT pg_postmaster_start_time()")
    run = server.run({"postgres_log_min_duration_statement": 250})
    run.assert_ok()
    assert run.changed == 2  # the file, the reload
    assert wait_for_setting(server, "log_min_duration_statement", "250ms") == "250ms"
    assert server.query("SELECT pg_postmaster_start_time()") == started
    again = server.run({"postgres_log_min_duration_statement": 250})
    again.assert_ok()
    assert again.changed == 0


# The settings of the last runs: the configuration stays as they left it.
SETTINGS = {"postgres_log_min_duration_statement": 250, "postgres_max_connections": 120}


def test_restart_only_setting_restarts(server: LocalServer) -> None:
    started = server.query("SELECT pg_postmaster_start_time()")
    run = server.run(SETTINGS)
    run.assert_ok()
    assert run.changed > 0
    assert server.query("SHOW max_connections") == [("120",)]
    assert server.query("SELECT pg_postmaster_start_time()") != started


def test_data_survives_stop_and_start(server: LocalServer) -> None:
    stop = server.run({"tenantforge_platform_local_state": "stopped"})
    stop.assert_ok()
    assert stop.changed == 1
    assert not server.runner_pid_file.exists()
    with pytest.raises(psycopg.OperationalError):
        server.connect("postgres")
    again = server.run({"tenantforge_platform_local_state": "stopped"})
    again.assert_ok()
    assert again.changed == 0
    start = server.run(SETTINGS)
    start.assert_ok()
    assert start.changed == 1  # the start only: the data directory is kept, nothing to bootstrap
    with server.connect("tenantforge_owner") as owner:
        owner.execute("SELECT set_config('app.current_org_id', 'org-a', false)")
        assert owner.execute("SELECT count(*) FROM notes").fetchone() == (2,)


def test_other_superuser_credentials_are_refused_with_the_way_out(server: LocalServer) -> None:
    password_file = server.state_dir / "secrets" / "tenantforge" / "postgres-superuser" / "password"
    kept = password_file.read_text()
    password_file.write_text(secrets.token_urlsafe(24))
    try:
        run = server.run(SETTINGS)
        assert run.returncode != 0
        assert "does not accept the superuser of the synced secret postgres-superuser" in run.output
        assert "password authentication failed" in run.output
        assert kept not in run.output
    finally:
        password_file.write_text(kept)
    again = server.run(SETTINGS)
    again.assert_ok()
    assert again.changed == 0


# --- the cluster's bootstrap Job, run here --------------------------------------------------------

# What the bootstrap leaves in the catalog: roles, the database, schemas, default privileges and the
# auth function, with every access list sorted (the order of grants is not part of the result).
CATALOG = {
    "roles": "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
    "rolreplication, rolbypassrls, left(rolpassword, 19) FROM pg_authid "
    "WHERE rolname IN ('tenantforge_owner', 'tenantforge_app', 'pgbouncer_auth') ORDER BY rolname",
    "database": "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), "
    "ARRAY(SELECT unnest(datacl)::text ORDER BY 1) FROM pg_database WHERE datname = 'tenantforge'",
    "schemas": "SELECT nspname, pg_get_userbyid(nspowner), ARRAY(SELECT unnest(nspacl)::text ORDER BY 1) "
    "FROM pg_namespace WHERE nspname IN ('public', 'pgbouncer') ORDER BY nspname",
    "default privileges": "SELECT pg_get_userbyid(defaclrole), defaclnamespace::regnamespace::text, "
    "defaclobjtype, ARRAY(SELECT unnest(defaclacl)::text ORDER BY 1) FROM pg_default_acl ORDER BY 1, 2, 3",
    "auth function": "SELECT pg_get_userbyid(proowner), prosrc, prosecdef, provolatile, proconfig, "
    "pg_get_function_result(oid), ARRAY(SELECT unnest(proacl)::text ORDER BY 1) FROM pg_proc "
    "WHERE oid = to_regprocedure('pgbouncer.get_auth(text)')",
}


def catalog(server: LocalServer) -> dict[str, list[tuple[Any, ...]]]:
    with server.connect("postgres") as connection:
        return {name: connection.execute(sql).fetchall() for name, sql in CATALOG.items()}


def test_the_bootstrap_job_builds_what_the_role_builds(server: LocalServer, tmp_path: Path) -> None:
    """The cluster's Job (its command, script and environment, secrets resolved as the kubelet would)
    against the real server: from an empty server it leaves the catalog exactly as tasks/bootstrap.yml
    does, a second run changes nothing, and the role finds nothing to change after it."""
    by_role = catalog(server)
    assert by_role["roles"] and by_role["auth function"]
    objects = render_component("postgres", tmp_path, {})
    with server.connect("postgres", dbname="postgres") as admin:
        admin.autocommit = True
        admin.execute("DROP DATABASE tenantforge WITH (FORCE)")
        admin.execute("DROP ROLE tenantforge_owner, tenantforge_app, pgbouncer_auth")
    workdir = tmp_path / "job"
    workdir.mkdir()
    for attempt in ("first", "second"):
        job = run_job_locally(
            by_kind(objects, "Job"),
            objects,
            server.state_dir / "secrets",
            workdir,
            # The client Service's address in the cluster; the image's PATH has psql and pg_isready.
            {"PGHOST": "127.0.0.1", "PGPORT": str(server.port)},
            f"/usr/lib/postgresql/15/bin:{os.environ['PATH']}",
        )
        assert job.returncode == 0, f"{attempt} run: {job.stdout}{job.stderr}"
        assert job.stdout == job.stderr == "", attempt
        assert catalog(server) == by_role, attempt
    for user in USERS.values():
        with server.connect(user) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (user,)
    run = server.run(SETTINGS)
    run.assert_ok()
    assert run.changed == 0
