"""The db_migrate module against a real PostgreSQL 15 (the postgres role's local target), as the
schema owner: Prisma's history table and checksums, check mode, idempotence, refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ansible_module import run_module
from conftest import Emulator
from test_postgres import LocalServer, private_server

pytestmark = pytest.mark.integration

MODULE = "tenantforge.platform.db_migrate"
INIT = "20260101000000_init"
NOTES = "20260102000000_notes"
# Two small migrations of the module's own: the project's schema has tests of its own
# (test_prisma_schema.py); here only how migrations are applied matters.
SCRIPTS = {
    INIT: '-- CreateTable\nCREATE TABLE "organizations" (\n    "id" UUID NOT NULL,\n    "slug" TEXT NOT NULL,\n\n'
    '    CONSTRAINT "organizations_pkey" PRIMARY KEY ("id")\n);\n\n-- CreateIndex\n'
    'CREATE UNIQUE INDEX "organizations_slug_key" ON "organizations"("slug");\n',
    NOTES: 'CREATE TABLE "notes" ("id" SERIAL PRIMARY KEY, "body" TEXT NOT NULL);\n'
    'INSERT INTO "notes" ("body") VALUES (\'first\');\n',
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with private_server(tmp_path_factory.mktemp("db-migrate"), start=True) as local:
        yield local


@pytest.fixture
def database(server: LocalServer) -> Iterator[str]:
    """A fresh database owned by tenantforge_owner for each test; returns its name."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with server.connect("postgres", dbname="postgres") as admin:
        admin.autocommit = True
        admin.execute(f'CREATE DATABASE "{name}" OWNER tenantforge_owner')
        admin.execute(f'GRANT CONNECT ON DATABASE "{name}" TO tenantforge_app')
    with server.connect("tenantforge_owner", dbname=name) as owner:
        owner.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tenantforge_app"
        )
        owner.commit()
    yield name
    with server.connect("postgres", dbname="postgres") as admin:
        admin.autocommit = True
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def write_migrations(directory: Path, names: list[str]) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "migration_lock.toml").write_text('# Prisma\nprovider = "postgresql"\n')
    for name in names:
        (directory / name).mkdir(exist_ok=True)
        (directory / name / "migration.sql").write_text(SCRIPTS.get(name, ""))
    return directory


def owner_dsn(server: LocalServer, database: str, password: bool = True) -> str:
    secret = f" password={server.passwords['tenantforge_owner']}" if password else ""
    return f"host=127.0.0.1 port={server.port} dbname={database} user=tenantforge_owner{secret}"


def migrate(server: LocalServer, database: str, directory: Path, check: bool = False, **extra: Any):
    params = {"migrations_dir": str(directory), "dsn": owner_dsn(server, database), **extra}
    return run_module(MODULE, params, server.state_dir, check=check, diff=True)


def history(server: LocalServer, database: str) -> list[tuple[Any, ...]]:
    with server.connect("tenantforge_owner", dbname=database) as owner:
        return owner.execute(
            "SELECT id, checksum, migration_name, finished_at IS NOT NULL, rolled_back_at, logs, applied_steps_count "
            'FROM "_prisma_migrations" ORDER BY started_at'
        ).fetchall()


def tables(server: LocalServer, database: str) -> list[str]:
    with server.connect("tenantforge_owner", dbname=database) as owner:
        rows = owner.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [name for (name,) in rows]


def test_check_mode_lists_the_pending_migrations_and_creates_nothing(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [NOTES, INIT])
    run = migrate(server, database, directory, check=True)
    result = run.assert_ok()
    assert result["changed"] is True
    assert result["pending"] == [INIT, NOTES]
    assert result["applied"] == [] and result["already_applied"] == []
    assert tables(server, database) == []


def test_migrations_are_applied_in_order_and_recorded_as_prisma_does(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT, NOTES])
    run = migrate(server, database, directory)
    result = run.assert_ok()
    assert result["changed"] is True and result["applied"] == [INIT, NOTES]
    assert result["diff"] == {"before": {"applied": []}, "after": {"applied": [INIT, NOTES]}}
    assert server.passwords["tenantforge_owner"] not in run.output
    rows = history(server, database)
    assert [
        (name, finished, rolled_back, logs, steps) for _, _, name, finished, rolled_back, logs, steps in rows
    ] == [
        (INIT, True, None, None, 1),
        (NOTES, True, None, None, 1),
    ]
    for row_id, checksum, name, *_ in rows:
        assert uuid.UUID(row_id).version == 4
        assert checksum == hashlib.sha256(SCRIPTS[name].encode()).hexdigest()
    assert tables(server, database) == ["_prisma_migrations", "notes", "organizations"]
    # Prisma's own columns and types, so the CLI reads this history.
    with server.connect("tenantforge_owner", dbname=database) as owner:
        columns = owner.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable FROM information_schema.columns "
            "WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position"
        ).fetchall()
    assert columns == [
        ("id", "character varying", 36, "NO"),
        ("checksum", "character varying", 64, "NO"),
        ("finished_at", "timestamp with time zone", None, "YES"),
        ("migration_name", "character varying", 255, "NO"),
        ("logs", "text", None, "YES"),
        ("rolled_back_at", "timestamp with time zone", None, "YES"),
        ("started_at", "timestamp with time zone", None, "NO"),
        ("applied_steps_count", "integer", None, "NO"),
    ]


def test_the_runtime_role_cannot_touch_the_history(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    migrate(server, database, write_migrations(tmp_path / "migrations", [INIT])).assert_ok()
    with server.connect("tenantforge_app", dbname=database) as app:
        # Default privileges gave it the owner's new tables; the history was taken back.
        assert app.execute("SELECT count(*) FROM organizations").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute('DELETE FROM "_prisma_migrations"')


def test_a_second_run_changes_nothing(server: LocalServer, database: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT, NOTES])
    migrate(server, database, directory).assert_ok()
    before = history(server, database)
    again = migrate(server, database, directory).assert_ok()
    assert again["changed"] is False and again["applied"] == []
    assert again["already_applied"] == [INIT, NOTES]
    check = migrate(server, database, directory, check=True).assert_ok()
    assert check["changed"] is False and check["pending"] == []
    assert history(server, database) == before


def test_a_new_migration_is_applied_after_the_others(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT])
    migrate(server, database, directory).assert_ok()
    write_migrations(directory, [INIT, NOTES])
    check = migrate(server, database, directory, check=True).assert_ok()
    assert check["pending"] == [NOTES] and check["already_applied"] == [INIT]
    result = migrate(server, database, directory).assert_ok()
    assert result["applied"] == [NOTES]


def test_a_modified_migration_is_refused_before_anything_is_applied(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT])
    migrate(server, database, directory).assert_ok()
    write_migrations(directory, [INIT, NOTES])
    script = directory / INIT / "migration.sql"
    script.write_text(script.read_text() + 'ALTER TABLE "organizations" ADD COLUMN "name" TEXT;\n')
    for check in (True, False):
        run = migrate(server, database, directory, check=check)
        assert run.failed
        assert f"migration {INIT} was modified after it was applied" in run.result["msg"]
    assert tables(server, database) == ["_prisma_migrations", "organizations"]


def test_line_endings_changed_by_a_checkout_are_not_a_modification(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT])
    migrate(server, database, directory).assert_ok()
    script = directory / INIT / "migration.sql"
    script.write_bytes(script.read_bytes().replace(b"\n", b"\r\n"))
    assert migrate(server, database, directory).assert_ok()["changed"] is False


def test_a_failing_migration_is_rolled_back_with_its_history_row(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT])
    broken = "20260103000000_broken"
    (directory / broken).mkdir()
    (directory / broken / "migration.sql").write_text(
        'CREATE TABLE "half" ("id" INT);\nALTER TABLE "missing" ADD COLUMN "x" INT;\n'
    )
    run = migrate(server, database, directory)
    assert run.failed
    assert run.result["msg"].startswith(
        f'migration {broken} failed and was rolled back: relation "missing" does not exist'
    )
    # The migration before it stays applied; nothing of the broken one is left, not even its row.
    assert [row[2] for row in history(server, database)] == [INIT]
    assert tables(server, database) == ["_prisma_migrations", "organizations"]


def test_an_unfinished_migration_in_the_history_is_refused(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT, NOTES])
    migrate(server, database, write_migrations(tmp_path / "first", [INIT])).assert_ok()
    with server.connect("tenantforge_owner", dbname=database) as owner:
        # What `prisma migrate deploy` leaves when a migration fails half-way.
        owner.execute(
            'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, logs) VALUES (%s, %s, %s, %s)',
            (str(uuid.uuid4()), "0" * 64, NOTES, "error"),
        )
        owner.commit()
    run = migrate(server, database, directory)
    assert run.failed
    assert (
        f"migration {NOTES} started at" in run.result["msg"] and "prisma migrate resolve" in run.result["msg"]
    )
    assert "notes" not in tables(server, database)


def test_a_migration_missing_from_the_directory_is_refused(
    server: LocalServer, database: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "migrations", [INIT, NOTES])
    migrate(server, database, directory).assert_ok()
    shutil.rmtree(directory / NOTES)
    run = migrate(server, database, directory)
    assert run.failed
    assert (
        run.result["msg"]
        == f"migration {NOTES} is applied to the database but missing from the migrations directory"
    )


def test_the_connection_can_come_from_secrets_manager(
    server: LocalServer, database: str, tmp_path: Path, emulator: Emulator
) -> None:
    """Our credentials secrets hold a username and a password: the address comes from dsn."""
    name = f"tenantforge/test/postgres/owner-{uuid.uuid4().hex[:6]}"
    value = json.dumps({"username": "tenantforge_owner", "password": server.passwords["tenantforge_owner"]})
    emulator.client("secretsmanager").create_secret(Name=name, SecretString=value)
    directory = write_migrations(tmp_path / "migrations", [INIT])
    params = {
        "migrations_dir": str(directory),
        "dsn": f"postgresql://127.0.0.1:{server.port}/{database}",
        "dsn_secret_id": name,
        "endpoint_url": emulator.endpoint_url,
        "region": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
    }
    run = run_module(MODULE, params, server.state_dir)
    assert run.assert_ok()["applied"] == [INIT]
    assert server.passwords["tenantforge_owner"] not in run.output


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "one of the following is required: dsn, dsn_secret_id"),
        (
            {"dsn": "host=127.0.0.1 port=1 dbname=x user=y password=sekrit-value"},
            "cannot connect to PostgreSQL at 127.0.0.1:1/x as y",
        ),
        ({"dsn": "postgresql://y:sekrit-value@[bad"}, "dsn is not a valid libpq connection string or URL"),
    ],
    ids=["no connection", "nothing listening", "malformed url"],
)
def test_bad_connections_are_named_without_the_password(
    server: LocalServer, tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    run = run_module(
        MODULE, {"migrations_dir": str(write_migrations(tmp_path / "m", [INIT])), **params}, server.state_dir
    )
    assert run.failed
    assert message in run.result["msg"]
    assert "sekrit-value" not in run.output


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"migration_lock.toml": 'provider = "mysql"\n'}, "does not name the provider postgresql"),
        ({"notes/migration.sql": "SELECT 1;"}, "notes in"),
        ({"20260101000000_empty/readme.md": "x"}, "migration 20260101000000_empty has no migration.sql"),
    ],
    ids=["other provider", "not a migration name", "no script"],
)
def test_a_bad_migrations_directory_is_refused_before_connecting(
    server: LocalServer, tmp_path: Path, layout: dict[str, str], message: str
) -> None:
    directory = tmp_path / "migrations"
    for relative, text in layout.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(text)
    # Nothing listens on port 1: a message about the directory proves it was checked first.
    run = run_module(
        MODULE, {"migrations_dir": str(directory), "dsn": "host=127.0.0.1 port=1"}, server.state_dir
    )
    assert run.failed
    assert message in run.result["msg"]
