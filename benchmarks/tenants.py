"""Bootstrap many organizations through playbooks/tenants.yml, cold and again, next to the module's core.

A private stack: PostgreSQL 15 started with ``playbooks/platform.yml`` (component postgres, local
target) on a free port, with generated secret files and a private state directory, migrated with the
project's Prisma migrations as ``tenantforge_owner``; and a private moto server (from
``infrastructure.py``) on a free port holding the owner's credentials in Secrets Manager, where the
``database`` role's ``tenant_bootstrap`` task reads them. Everything lives in a temporary directory
outside the repository and is stopped and removed at the end, also on error, Ctrl-C or SIGTERM.
Nothing of ``make run`` (ports 4566/5433, ``.local/``) is touched.

Measured (``--count N`` organizations, default 1000, each with the default four roles and five
users: ``admin_email`` and four users with one role each):

1. the cold run of ``ansible-playbook playbooks/tenants.yml`` on an empty database;
2. the idempotent re-run of the same command (which should change nothing);
3. the module's core in this process, without Ansible: ``check_tenants``, ``check_permissions`` and
   ``converge`` per organization over one psycopg connection, on N other organizations, cold and warm.

Nothing is asserted: the figures are printed (and written as JSON with ``--json``); a re-run that
changes something or a database that does not hold what was declared prints a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from infrastructure import ACCESS_KEY, REGION, SECRET_KEY, Emulator
from pgbouncer import BenchmarkError, free_port, table, write_secrets

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COLLECTIONS = REPO / ".local" / "collections"
INVENTORY_VARS = REPO / "inventories" / "local" / "group_vars" / "all.yml"
PLATFORM = "playbooks/platform.yml"
TENANTS = "playbooks/tenants.yml"
MIGRATIONS = REPO / "prisma" / "migrations"
MODULE = "tenantforge.platform.tenant_bootstrap"
CALLBACK_PLUGINS = Path(__file__).resolve().parent / "callback_plugins"
CALLBACK = "tenants_benchmark"
DATABASE = "tenantforge"
OWNER = "tenantforge_owner"
# The four users beside admin_email (role owner): one role each, every default role held.
USER_ROLES = (("ben", "admin"), ("cleo", "member"), ("dev", "member"), ("fay", "viewer"))
# Per organization: the default catalog's four roles, and admin_email plus the four users.
ROLES_PER_ORG = 4
USERS_PER_ORG = 1 + len(USER_ROLES)


def tenant_specs(prefix: str, count: int) -> list[dict[str, Any]]:
    """`count` organizations in the module's `tenants` shape; roles left out: the default catalog."""
    specs = []
    for index in range(1, count + 1):
        slug = f"{prefix}-{index:05d}"
        domain = f"{slug}.example"  # RFC 2606 documentation domain
        specs.append(
            {
                "org_slug": slug,
                "org_name": f"Benchmark organization {index}",
                "admin_email": f"admin@{domain}",
                "users": [{"email": f"{name}@{domain}", "roles": [role]} for name, role in USER_ROLES],
            }
        )
    return specs


def inventory_environment() -> str:
    """tenantforge_environment of inventories/local: the middle of the owner secret's name."""
    import yaml

    return str(yaml.safe_load(INVENTORY_VARS.read_text())["tenantforge_environment"])


def playbook_env(state_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "TENANTFORGE_STATE_DIR": str(state_dir),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


class Termination:
    """SIGTERM and SIGINT end the benchmark with SystemExit, so that every `finally` stops what was
    started. While a process is being started they are held back until its pid is known: raised
    inside Popen, they would leave a process nobody stops."""

    def __init__(self) -> None:
        self.holding = False
        self.pending: int | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.pending = signum
            return
        raise SystemExit(128 + signum)

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.handler)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            raise SystemExit(128 + self.pending)


TERMINATION = Termination()


def run_playbook(
    playbook: str,
    arguments: Sequence[str],
    env: dict[str, str],
    log: Path,
    timeout: float,
    errors: Path | None = None,
) -> tuple[float, float, int]:
    """(time.monotonic() at the start and at the end, exit code) of one ansible-playbook run, its
    output in `log` (its stderr in `errors` if given); on a timeout or an interrupt the playbook's
    whole process group is killed."""
    command = [str(BIN / "ansible-playbook"), playbook, *arguments]
    started = time.monotonic()
    process = None
    with log.open("wb") as out, (errors or log).open("ab") as err:
        try:
            with TERMINATION.held():
                process = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=err if errors else subprocess.STDOUT,
                    start_new_session=True,
                )
            returncode = process.wait(timeout=timeout)
        except BaseException:
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise
    return started, time.monotonic(), returncode


# --------------------------------------------------------------------------------------------------
# The private PostgreSQL


@dataclass
class Postgres:
    """PostgreSQL of playbooks/platform.yml (component postgres, local target) in `state_dir`."""

    state_dir: Path
    port: int
    passwords: dict[str, str]
    timeout: float
    seconds: dict[str, float] = field(default_factory=dict)

    def playbook(self, name: str, extra: dict[str, Any] | None = None) -> None:
        # The local target comes from inventories/local (ansible.cfg's inventory); the bundle of
        # rendered objects is of no use here.
        extra_vars = {
            "tenantforge_platform_components": ["postgres"],
            "postgres_local_port": self.port,
            "postgres_local_bundle": False,
            **(extra or {}),
        }
        log = self.state_dir / f"postgres-{name}.log"
        print(f"postgres {name}: ansible-playbook {PLATFORM} ...", end=" ", flush=True)
        started, finished, returncode = run_playbook(
            PLATFORM,
            ["--extra-vars", json.dumps(extra_vars)],
            playbook_env(self.state_dir),
            log,
            self.timeout,
        )
        seconds = finished - started
        self.seconds[name] = seconds
        print(f"{seconds:.1f}s, rc={returncode}", flush=True)
        if returncode != 0:
            print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
            raise BenchmarkError(f"postgres {name}: ansible-playbook failed with exit code {returncode}")

    def stop(self) -> None:
        try:
            self.playbook("stop", {"tenantforge_platform_local_state": "stopped"})
        finally:
            # Whatever the playbook could not stop (it failed, or was interrupted) goes now.
            with contextlib.suppress(OSError, ValueError, ProcessLookupError):
                pid = int((self.state_dir / "postgres" / "postgres.pid").read_text().split()[0])
                os.killpg(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        try:
            self.playbook("start")
            yield
        finally:
            self.stop()

    def connect(self, user: str) -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=self.passwords[user],
            dbname=DATABASE,
            autocommit=True,
        )


def counts(postgres: Postgres, prefix: str) -> dict[str, int]:
    """Rows of the organizations whose slug starts with `prefix-`, per table; as the superuser, whom
    row-level security does not confine."""
    tables = ("roles", "role_permissions", "users", "user_roles", "audit_events")
    with postgres.connect("postgres") as connection:
        found = {
            "organizations": connection.execute(
                "SELECT count(*) FROM organizations WHERE slug LIKE %s", (prefix + "-%",)
            ).fetchone()[0]
        }
        for name in tables:
            found[name] = connection.execute(
                f"SELECT count(*) FROM {name} t JOIN organizations o ON o.id = t.organization_id "  # noqa: S608
                "WHERE o.slug LIKE %s",
                (prefix + "-%",),
            ).fetchone()[0]
    return found


# --------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Measurement:
    name: str
    seconds: float
    organizations: int
    changed: int | None  # organizations the module reported changed
    task_seconds: float | None = None  # the tenant_bootstrap task alone, from the callback's times
    recap: dict[str, int] = field(default_factory=dict)
    # Playbook runs, from the tenants_benchmark callback: ansible-playbook's start until the play
    # starts, each task's seconds, between the tasks, and from the recap until the process ended.
    start_seconds: float | None = None
    tasks: list[tuple[str, float]] = field(default_factory=list)
    between_seconds: float | None = None
    end_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.organizations / self.seconds if self.seconds else 0.0


class PlaybookRunner:
    """ansible-playbook playbooks/tenants.yml with the tenants in an @file of extra vars, the private
    database's port and the private emulator's endpoint. The default stdout callback prints what a
    person would see; the tenants_benchmark callback (callback_plugins/) notes the times and the
    module's changed organizations."""

    def __init__(
        self, workdir: Path, state_dir: Path, emulator: Emulator, postgres: Postgres, timeout: float
    ) -> None:
        self.workdir = workdir
        self.state_dir = state_dir
        self.timeout = timeout
        self.extra_vars = {
            "database_local_port": postgres.port,
            "local_emulator_port": emulator.port,
            "tenantforge_aws_endpoint_url": emulator.endpoint_url,
        }

    def run(self, name: str, specs: list[dict[str, Any]]) -> Measurement:
        tenants_file = self.workdir / "tenants.json"
        tenants_file.write_text(json.dumps({"tenants": specs}))
        arguments = ["--extra-vars", f"@{tenants_file}", "--extra-vars", json.dumps(self.extra_vars)]
        timings = self.workdir / "timings.json"
        timings.unlink(missing_ok=True)
        env = playbook_env(
            self.state_dir,
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_PLUGINS),
            ANSIBLE_CALLBACKS_ENABLED=CALLBACK,
            TENANTS_BENCHMARK_OUTPUT=str(timings),
        )
        log = self.workdir / f"{name.replace(' ', '-')}.log"
        print(f"{name}: ansible-playbook {TENANTS} ({len(specs)} organizations) ...", end=" ", flush=True)
        started, finished, returncode = run_playbook(TENANTS, arguments, env, log, self.timeout)
        seconds = finished - started
        print(f"{seconds:.1f}s, rc={returncode}", flush=True)
        if returncode != 0:
            print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
            raise BenchmarkError(f"{name}: ansible-playbook failed with exit code {returncode}")
        try:
            document = json.loads(timings.read_text())
        except (OSError, ValueError) as error:
            raise BenchmarkError(f"{name}: no timings from the {CALLBACK} callback: {error}") from None
        tasks = [(task["name"], round(task["seconds"], 3)) for task in document["tasks"]]
        module = [task["seconds"] for task in document["tasks"] if task["action"] == MODULE]
        return Measurement(
            name,
            seconds,
            len(specs),
            document["changed_organizations"],
            task_seconds=module[0] if module else None,
            recap={key: int(value) for key, value in document["recap"].items()},
            start_seconds=document["play_started"] - started,
            tasks=tasks,
            between_seconds=document["stats"] - document["play_started"] - sum(s for _, s in tasks),
            end_seconds=finished - document["stats"],
        )


class CoreRunner:
    """The module's run() without Ansible: the same functions in this process, one connection."""

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres

    def run(self, name: str, specs: list[dict[str, Any]]) -> Measurement:
        from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import (
            check_permissions,
            check_tenants,
            converge,
        )

        print(f"{name}: check_tenants + check_permissions + converge in-process ...", end=" ", flush=True)
        started = time.perf_counter()
        tenants = check_tenants(specs, prefix=True)
        with self.postgres.connect(OWNER) as connection:
            catalog = check_permissions(connection, tenants, prefix=True)
            results = [converge(connection, tenant, catalog, check_mode=False) for tenant in tenants]
        seconds = time.perf_counter() - started
        changed = sum(bool(item["changed"]) for item in results)
        print(f"{seconds:.1f}s, {changed} changed", flush=True)
        return Measurement(name, seconds, len(specs), changed)


# --------------------------------------------------------------------------------------------------
# Report


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def versions(postgres_version: str) -> dict[str, str]:
    found = {"postgresql": postgres_version, "python": sys.version.split()[0]}
    for package in ("ansible-core", "psycopg", "moto"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "?"
    return found


def report(runs: dict[str, Measurement], data: dict[str, Any]) -> None:
    v = data["versions"]
    print(
        f"\n{data['organizations']} organizations, each {ROLES_PER_ORG} roles and {USERS_PER_ORG} users; "
        f"PostgreSQL {v['postgresql']}, ansible-core {v['ansible-core']}, psycopg {v['psycopg']}, "
        f"Python {v['python']}; load average {data['load_before']} before, {data['load_after']} after\n"
    )
    rows = []
    for key, label in (
        ("playbook_cold", "playbook, cold"),
        ("playbook_rerun", "playbook, idempotent re-run"),
        ("core_cold", "core in-process, cold"),
        ("core_warm", "core in-process, warm"),
    ):
        m = runs[key]
        recap = f"ok={m.recap.get('ok')} changed={m.recap.get('changed')}" if m.recap else "-"
        task = f"{m.task_seconds:.2f}" if m.task_seconds is not None else "-"
        rows.append([label, f"{m.seconds:.2f}", f"{m.rate:.1f}", task, m.changed, recap])
    headers = ["run", "seconds", "orgs/s", "module task s", "orgs changed", "playbook recap"]
    print("\n".join(table(headers, rows)))
    r = data["ratios"]
    print(
        f"\nAnsible overhead (playbook / core): cold {r['cold']}x, warm {r['warm']}x; "
        f"tenant_bootstrap task alone / core: cold {r['cold_task']}x, warm {r['warm_task']}x"
    )
    print(
        "module task s: the tenant_bootstrap task from its start to its result, "
        "i.e. without ansible-playbook's start, inventory and the other tasks"
    )
    for key in ("playbook_cold", "playbook_rerun"):
        m = runs[key]
        print(f"\nplaybook, {m.name}, where the time goes (tasks of 0.05 s and more):")
        parts: list[tuple[str, float | None]] = [
            ("ansible-playbook start until the play (inventory, extra vars, playbook)", m.start_seconds),
            *((f"task: {task}", seconds) for task, seconds in m.tasks if seconds >= 0.05),
            ("between the tasks", m.between_seconds),
            ("after the recap until the process ended", m.end_seconds),
        ]
        breakdown = [[label, "-" if seconds is None else f"{seconds:.2f}"] for label, seconds in parts]
        print("\n".join(table(["part", "seconds"], breakdown)))
    print(
        f"\nstack: PostgreSQL started by {PLATFORM} in {data['stack_seconds']['start']:.1f}s, "
        f"migrated in {data['migrate_seconds']:.2f}s"
    )
    expected = data["expected_rows"]
    for prefix, found in data["rows"].items():
        print(f"rows of {prefix}-*: " + ", ".join(f"{table_} {n}" for table_, n in found.items()))
        if any(found[key] != value for key, value in expected.items()):
            print(f"WARNING: {prefix}-* does not hold what was declared ({expected})")
    if runs["playbook_cold"].changed != data["organizations"]:
        print(f"WARNING: the cold run changed {runs['playbook_cold'].changed} organizations")
    for key in ("playbook_rerun", "core_warm"):
        if runs[key].changed:
            print(f"WARNING: {key} is not idempotent: {runs[key].changed} organizations changed")


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def create_owner_secret(emulator: Emulator, secret_id: str, password: str) -> None:
    import boto3

    client = boto3.client(
        "secretsmanager",
        endpoint_url=emulator.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_secret(Name=secret_id, SecretString=json.dumps({"username": OWNER, "password": password}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000, help="organizations per run (default 1000)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one playbook run may take")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 99999:
        parser.error("--count must be 1 to 99999")
    if not (COLLECTIONS / "ansible_collections" / "tenantforge" / "platform").exists():
        print(f"{COLLECTIONS} does not link the collection: run `make setup-dev`", file=sys.stderr)
        return 2
    sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.tenantforge.platform.plugins.module_utils.prisma_migrations import (
        migrate,
        read_migrations,
    )
    from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import DEFAULT_ROLES

    TERMINATION.install()
    load_before = load()
    playbook_specs, core_specs = tenant_specs("bench", args.count), tenant_specs("core", args.count)
    secret_id = f"tenantforge/{inventory_environment()}/postgres/owner"
    runs: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="tenantforge-tenants-benchmark-") as tmp:
        workdir = Path(tmp).resolve()
        if workdir.is_relative_to(REPO):
            print(f"the temporary directory {workdir} is inside the repository; set TMPDIR", file=sys.stderr)
            return 2
        state_dir = workdir / "state"
        state_dir.mkdir()
        emulator = Emulator(workdir)
        postgres = Postgres(state_dir, free_port({emulator.port}), write_secrets(state_dir), args.timeout)
        print(f"PostgreSQL on 127.0.0.1:{postgres.port}; state directory {state_dir}", flush=True)
        try:
            with contextlib.ExitStack() as running:
                with TERMINATION.held():  # the emulator's pid is known before a signal is acted on
                    running.enter_context(emulator.running())
                running.enter_context(postgres.running())
                create_owner_secret(emulator, secret_id, postgres.passwords[OWNER])
                started = time.perf_counter()
                with postgres.connect(OWNER) as owner:
                    applied = migrate(owner, read_migrations(MIGRATIONS), check_mode=False)["applied"]
                    (postgres_version,) = owner.execute("SHOW server_version").fetchone()
                migrate_seconds = time.perf_counter() - started
                print(
                    f"{len(applied)} migrations applied as {OWNER} in {migrate_seconds:.2f}s; "
                    f"{secret_id} in the emulator",
                    flush=True,
                )

                playbook = PlaybookRunner(workdir, state_dir, emulator, postgres, args.timeout)
                runs["playbook_cold"] = playbook.run("cold", playbook_specs)
                runs["playbook_rerun"] = playbook.run("re-run", playbook_specs)
                core = CoreRunner(postgres)
                runs["core_cold"] = core.run("core cold", core_specs)
                runs["core_warm"] = core.run("core warm", core_specs)
                rows = {prefix: counts(postgres, prefix) for prefix in ("bench", "core")}
        except Exception as error:
            print(f"benchmark failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1

    n = args.count
    data: dict[str, Any] = {
        "organizations": n,
        "versions": versions(str(postgres_version)),
        "load_before": load_before,
        "load_after": load(),
        "stack_seconds": postgres.seconds,
        "migrate_seconds": round(migrate_seconds, 3),
        "runs": {key: {**asdict(m), "orgs_per_second": round(m.rate, 2)} for key, m in runs.items()},
        "ratios": {
            "cold": ratio(runs["playbook_cold"].seconds, runs["core_cold"].seconds),
            "warm": ratio(runs["playbook_rerun"].seconds, runs["core_warm"].seconds),
            "cold_task": ratio(runs["playbook_cold"].task_seconds, runs["core_cold"].seconds),
            "warm_task": ratio(runs["playbook_rerun"].task_seconds, runs["core_warm"].seconds),
        },
        "rows": rows,
        # One audit event per change: organization, each role and its permissions, each user and its roles.
        "expected_rows": {
            "organizations": n,
            "roles": ROLES_PER_ORG * n,
            "role_permissions": sum(len(keys) for keys in DEFAULT_ROLES.values()) * n,
            "users": USERS_PER_ORG * n,
            "user_roles": USERS_PER_ORG * n,
            "audit_events": (1 + 2 * ROLES_PER_ORG + 2 * USERS_PER_ORG) * n,
        },
    }
    report(runs, data)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
