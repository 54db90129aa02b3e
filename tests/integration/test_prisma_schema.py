"""prisma/schema.prisma and prisma/migrations: the schema as Prisma itself reads it (its WebAssembly
engines, through scripts/prisma.mjs), the migrations applied to a real PostgreSQL 15 started by the
postgres role (local target), the two compared in both directions, and row-level security between
organizations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import REPO
from psycopg import sql
from test_postgres import LocalServer, private_server

pytestmark = pytest.mark.integration

SCHEMA = REPO / "prisma" / "schema.prisma"
MIGRATIONS = REPO / "prisma" / "migrations"
INIT_MIGRATION = MIGRATIONS / "20261127000000_init" / "migration.sql"

# Every table with an organization_id; the catalog-wide test below makes sure the list is complete.
TENANT_TABLES = [
    "users",
    "roles",
    "role_permissions",
    "user_roles",
    "user_credentials",
    "tasks",
    "websocket_connections",
    "audit_events",
]
PERMISSION_KEYS = [
    "audit:read",
    "org:read",
    "org:write",
    "roles:read",
    "roles:write",
    "tasks:cancel",
    "tasks:create",
    "tasks:read",
    "users:read",
    "users:write",
]


# --- Prisma's reading of the schema -----------------------------------------------------------------


def prisma(command: str, schema: Path = SCHEMA) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    installed = REPO / "node_modules" / "@prisma" / "prisma-schema-wasm"
    assert node and installed.is_dir(), "Node.js and the npm packages are missing: run scripts/setup.sh --dev"
    return subprocess.run(
        [node, str(REPO / "scripts" / "prisma.mjs"), command, str(schema)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def dmmf() -> dict[str, Any]:
    run = prisma("dmmf")
    assert run.returncode == 0, run.stderr
    datamodel: dict[str, Any] = json.loads(run.stdout)["datamodel"]
    return datamodel


def test_the_schema_validates_with_one_known_warning() -> None:
    run = prisma("validate")
    assert run.returncode == 0, run.stderr
    lint = prisma("lint")
    assert lint.returncode == 0, lint.stderr
    # The audit actor's SetNull on a composite key; the row_level_security migration narrows it to
    # the actor column (see schema.prisma). Any other warning is new.
    (warning,) = json.loads(lint.stdout)
    assert warning["is_warning"] is True
    assert warning["text"].startswith(
        "The `onDelete` referential action of a relation should not be set to `SetNull` when a "
        "referenced field is required."
    )


def test_an_invalid_schema_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "schema.prisma"
    broken.write_text(SCHEMA.read_text().replace("references: [organizationId, id]", "references: [id]", 1))
    run = prisma("validate", broken)
    assert run.returncode == 1
    assert "Validation Error Count" in run.stderr


def test_the_schema_is_formatted_as_prisma_formats_it() -> None:
    run = prisma("format")
    assert run.returncode == 0, run.stderr
    assert run.stdout == SCHEMA.read_text()


# Where a migration's hand-written part starts; what comes before it is the engine's SQL.
HAND_WRITTEN = "\n-- Written by hand from here on.\n"
# The hand-written migrations, whole.
HAND_WRITTEN_MIGRATIONS = {"20261127000100_row_level_security"}


def engine_parts() -> list[tuple[str, str]]:
    """(migration, SQL) of the engine's part of every migration that changes the model, in order."""
    parts = []
    for directory in sorted(path for path in MIGRATIONS.iterdir() if path.is_dir()):
        text = (directory / "migration.sql").read_text()
        if directory.name in HAND_WRITTEN_MIGRATIONS:
            assert HAND_WRITTEN not in text
            continue
        if directory != INIT_MIGRATION.parent:
            assert HAND_WRITTEN in text, f"{directory.name}: no line marks where the engine's SQL ends"
            text = text.split(HAND_WRITTEN, 1)[0]
        parts.append((directory.name, text))
    return parts


def test_the_migrations_start_with_the_engines_sql() -> None:
    """Each migration that changes the model starts with SQL in the engine's own shape: `-- Step`
    comment lines, each followed by its statement (the first migration is nothing else)."""
    run = prisma("init-sql")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith('-- CreateEnum\nCREATE TYPE "organization_status"')
    for name, text in engine_parts():
        steps = re.split(r"\n\n(?=-- [A-Z][A-Za-z]+\n)", text.strip("\n"))
        if name != INIT_MIGRATION.parent.name:
            steps = steps[1:]  # the migration's own header comment
        assert steps and all(re.match(r"-- [A-Z][A-Za-z]+\n[A-Z]", step) for step in steps), name


def test_the_migrations_use_prisma_migrates_layout() -> None:
    assert (MIGRATIONS / "migration_lock.toml").read_text() == (
        "# Please do not edit this file manually\n"
        "# It should be added in your version-control system (e.g., Git)\n"
        'provider = "postgresql"\n'
    )
    directories = sorted(path for path in MIGRATIONS.iterdir() if path.is_dir())
    assert [path.name for path in directories] == [
        "20261127000000_init",
        "20261127000100_row_level_security",
        "20261127000200_sign_in",
        "20261127000300_websocket_subscriptions",
    ]
    for directory in directories:
        assert [path.name for path in directory.iterdir()] == ["migration.sql"]


# --- the migrated database ---------------------------------------------------------------------------


def apply_migrations(server: LocalServer) -> None:
    """Each migration in its own transaction, as tenantforge_owner, in directory order."""
    with server.connect("tenantforge_owner") as owner:
        owner.autocommit = True
        for directory in sorted(path for path in MIGRATIONS.iterdir() if path.is_dir()):
            with owner.transaction():
                owner.execute((directory / "migration.sql").read_bytes())


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """This module's own PostgreSQL 15 (private state dir, free port), migrated."""
    with private_server(tmp_path_factory.mktemp("prisma-postgres"), start=True) as server:
        apply_migrations(server)
        yield server


# The shape of a database's tables, comparable between two databases.
SHAPE_QUERIES = {
    "columns": "SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default "
    "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "enums": "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)::text FROM pg_type t "
    "JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY 1 ORDER BY 1",
}


def shape(server: LocalServer, dbname: str) -> dict[str, list[tuple[Any, ...]]]:
    with server.connect("postgres", dbname=dbname) as connection:
        return {name: connection.execute(query).fetchall() for name, query in SHAPE_QUERIES.items()}


def test_the_engines_parts_of_the_migrations_make_the_schemas_tables(database: LocalServer) -> None:
    """Applied in order to an empty database, the engine's parts of the migrations give exactly the
    tables, columns, defaults, keys, indexes and enums that the engine's SQL for the current schema
    from nothing gives (what `prisma migrate diff` would find: nothing). The hand-written parts are
    checked against the catalog below."""
    run = prisma("init-sql")
    assert run.returncode == 0, run.stderr
    with server_admin(database) as admin:
        for name in ("engine_migrations", "engine_reference"):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with database.connect("postgres", dbname="engine_reference") as reference:
        reference.execute(run.stdout.encode())
    with database.connect("postgres", dbname="engine_migrations") as migrated:
        for _, text in engine_parts():
            migrated.execute(text.encode())
    expected = shape(database, "engine_reference")
    assert len(expected["columns"]) > 50
    assert shape(database, "engine_migrations") == expected


@contextmanager
def server_admin(server: LocalServer) -> Iterator[psycopg.Connection]:
    with server.connect("postgres", dbname="postgres") as connection:
        connection.autocommit = True  # CREATE DATABASE runs outside a transaction
        yield connection


def catalog(server: LocalServer, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A catalog query as the superuser, which row-level security does not apply to."""
    with server.connect("postgres") as connection:
        return connection.execute(query, params or None).fetchall()


# Prisma scalar types and @db native types -> format_type() of the column.
SCALAR_TYPES = {
    "String": "text",
    "Boolean": "boolean",
    "Int": "integer",
    "BigInt": "bigint",
    "Float": "double precision",
    "Decimal": "numeric(65,30)",
    "DateTime": "timestamp(3) without time zone",
    "Json": "jsonb",
    "Bytes": "bytea",
}
NATIVE_TYPES = {"Uuid": "uuid"}
# relationOnDelete / relationOnUpdate -> pg_constraint.confdeltype / confupdtype.
REFERENTIAL_ACTIONS = {"Cascade": "c", "Restrict": "r", "NoAction": "a", "SetNull": "n", "SetDefault": "d"}


def table_of(model: dict[str, Any]) -> str:
    return str(model["dbName"] or model["name"])


def column_of(field: dict[str, Any]) -> str:
    return str(field.get("dbName") or field["name"])


def models(dmmf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {model["name"]: model for model in dmmf["models"]}


def enum_types(dmmf: dict[str, Any]) -> dict[str, str]:
    return {enum["name"]: enum["dbName"] or enum["name"] for enum in dmmf["enums"]}


def columns_of(model: dict[str, Any], field_names: list[str]) -> list[str]:
    fields = {field["name"]: field for field in model["fields"]}
    return [column_of(fields[name]) for name in field_names]


def expected_type(field: dict[str, Any], enums: dict[str, str]) -> str:
    suffix = "[]" if field["isList"] else ""
    if field["kind"] == "enum":
        return enums[field["type"]] + suffix
    native = field.get("nativeType")
    if native:
        assert native[1] == [], f"{field['name']}: native type arguments have no rule here"
        return NATIVE_TYPES[native[0]] + suffix
    return SCALAR_TYPES[field["type"]] + suffix


def expected_nullable(field: dict[str, Any]) -> bool:
    """Prisma's scalar lists are nullable arrays in PostgreSQL, whatever the field says."""
    return bool(field["isList"]) or not field["isRequired"]


def expected_default(field: dict[str, Any], enums: dict[str, str]) -> str | None:
    """The column default PostgreSQL shows (pg_get_expr) for the field's @default, None for none."""
    default = field.get("default")
    if default is None:
        return None
    if isinstance(default, dict):
        if default["name"] == "now":
            return "CURRENT_TIMESTAMP"
        if default["name"] == "dbgenerated":
            return str(default["args"][0])
        raise AssertionError(f"{field['name']}: no rule for @default({default['name']})")
    if field["kind"] == "enum":
        return f"'{default}'::{enums[field['type']]}"
    if isinstance(default, bool):
        return "true" if default else "false"
    if default == [] and field["isList"]:
        return f"ARRAY[]::{expected_type(field, enums)}"
    raise AssertionError(f"{field['name']}: no rule for @default({default!r})")


def test_every_model_is_a_table_and_every_table_a_model(database: LocalServer, dmmf: dict[str, Any]) -> None:
    expected = sorted(table_of(model) for model in dmmf["models"])
    tables = catalog(
        database,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'f') "
        "AND relname <> '_prisma_migrations' ORDER BY relname",
    )
    assert [name for (name,) in tables] == expected
    assert len(expected) == 10


def test_enums_match(database: LocalServer, dmmf: dict[str, Any]) -> None:
    expected = {
        enum["dbName"] or enum["name"]: [value["dbName"] or value["name"] for value in enum["values"]]
        for enum in dmmf["enums"]
    }
    rows = catalog(
        database,
        "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_type t "
        "JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = 'public'::regnamespace GROUP BY t.typname",
    )
    assert dict(rows) == expected
    assert expected["task_status"] == ["queued", "running", "succeeded", "failed", "cancelled"]


def test_every_field_is_a_column_and_every_column_a_field(
    database: LocalServer, dmmf: dict[str, Any]
) -> None:
    """Column by column: type, nullability and default (an @updatedAt without @default has none)."""
    enums = enum_types(dmmf)
    expected = {
        table_of(model): {
            column_of(field): (
                expected_type(field, enums),
                expected_nullable(field),
                expected_default(field, enums),
            )
            for field in model["fields"]
            if field["kind"] in ("scalar", "enum")
        }
        for model in dmmf["models"]
    }
    scalar_lists = [
        f"{model['name']}.{field['name']}"
        for model in dmmf["models"]
        for field in model["fields"]
        if field["isList"] and field["kind"] != "object"
    ]
    assert scalar_lists == ["WebSocketConnection.taskIds"]
    rows = catalog(
        database,
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname <> '_prisma_migrations' "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
    )
    actual: dict[str, dict[str, tuple[str, bool, str | None]]] = {}
    for table, column, type_, nullable, default in rows:
        actual.setdefault(table, {})[column] = (type_, nullable, default)
    assert actual == expected
    # Spot checks of the mapping itself, written out.
    assert actual["organizations"]["id"] == ("uuid", False, "gen_random_uuid()")
    assert actual["organizations"]["status"] == (
        "organization_status",
        False,
        "'active'::organization_status",
    )
    assert actual["tasks"]["payload"] == ("jsonb", False, None)
    assert actual["tasks"]["result"] == ("jsonb", True, None)
    assert actual["websocket_connections"]["task_ids"] == ("uuid[]", True, "ARRAY[]::uuid[]")
    assert actual["users"]["updated_at"] == ("timestamp(3) without time zone", False, "CURRENT_TIMESTAMP")
    assert actual["roles"]["is_system"] == ("boolean", False, "false")


def test_keys_and_indexes_match(database: LocalServer, dmmf: dict[str, Any]) -> None:
    """Primary keys, @unique/@@unique and @@index, with Prisma's default names, nothing more."""
    by_name = models(dmmf)
    suffix = {"id": "pkey", "unique": "key", "normal": "idx"}
    expected: dict[str, dict[str, tuple[str, list[str]]]] = {table_of(model): {} for model in dmmf["models"]}
    for index in dmmf["indexes"]:
        model = by_name[index["model"]]
        table = table_of(model)
        columns = columns_of(model, [field["name"] for field in index["fields"]])
        kind = suffix[index["type"]]
        name = f"{table}_pkey" if kind == "pkey" else f"{table}_{'_'.join(columns)}_{kind}"
        expected[table][name] = (kind, columns)
    rows = catalog(
        database,
        "SELECT t.relname, i.relname, CASE WHEN x.indisprimary THEN 'pkey' WHEN x.indisunique THEN 'key' "
        "ELSE 'idx' END, ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(attnum, n) "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.n) "
        "FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE t.relnamespace = 'public'::regnamespace AND t.relname <> '_prisma_migrations'",
    )
    actual: dict[str, dict[str, tuple[str, list[str]]]] = {table: {} for table in expected}
    for table, name, kind, columns in rows:
        actual.setdefault(table, {})[name] = (kind, columns)
    assert actual == expected
    assert actual["users"]["users_organization_id_email_key"] == ("key", ["organization_id", "email"])
    assert actual["role_permissions"] == {
        "role_permissions_pkey": ("pkey", ["organization_id", "role_id", "permission_id"])
    }


def test_every_index_of_a_tenant_table_leads_with_organization_id(database: LocalServer) -> None:
    """The primary keys of single-row tables aside (a uuid or the gateway's connection id)."""
    rows = catalog(
        database,
        "SELECT t.relname, i.relname, (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = t.oid "
        "AND a.attnum = x.indkey[0]) FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_class i ON i.oid = x.indexrelid WHERE t.relnamespace = 'public'::regnamespace "
        "AND t.relname = ANY(%s) AND NOT (x.indisprimary AND x.indnatts = 1)",
        (TENANT_TABLES,),
    )
    assert {table for table, _, _ in rows} == set(TENANT_TABLES)
    assert [(table, index) for table, index, first in rows if first != "organization_id"] == []


def test_foreign_keys_match(database: LocalServer, dmmf: dict[str, Any]) -> None:
    """Columns, referenced table and columns, ON DELETE and ON UPDATE; every onDelete is explicit."""
    by_name = models(dmmf)
    expected: dict[str, dict[str, tuple[list[str], str, list[str], str, str]]] = {
        table_of(model): {} for model in dmmf["models"]
    }
    for model in dmmf["models"]:
        table = table_of(model)
        for field in model["fields"]:
            if field["kind"] != "object" or not field.get("relationFromFields"):
                continue
            assert field.get("relationOnDelete"), f"{model['name']}.{field['name']}: onDelete not chosen"
            target = by_name[field["type"]]
            columns = columns_of(model, field["relationFromFields"])
            expected[table][f"{table}_{'_'.join(columns)}_fkey"] = (
                columns,
                table_of(target),
                columns_of(target, field["relationToFields"]),
                REFERENTIAL_ACTIONS[field["relationOnDelete"]],
                REFERENTIAL_ACTIONS[field.get("relationOnUpdate") or "Cascade"],
            )
    rows = catalog(
        database,
        "SELECT c.conrelid::regclass::text, c.conname, "
        "ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n) JOIN pg_attribute a "
        "ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.n), c.confrelid::regclass::text, "
        "ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(attnum, n) JOIN pg_attribute a "
        "ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.n), c.confdeltype, c.confupdtype "
        "FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    )
    actual: dict[str, dict[str, tuple[list[str], str, list[str], str, str]]] = {
        table: {} for table in expected
    }
    for table, name, columns, target, target_columns, on_delete, on_update in rows:
        actual.setdefault(table, {})[name] = (columns, target, target_columns, on_delete, on_update)
    assert actual == expected
    assert actual["tasks"]["tasks_organization_id_creator_id_fkey"] == (
        ["organization_id", "creator_id"],
        "users",
        ["organization_id", "id"],
        "r",
        "c",
    )


def test_only_the_audit_actor_is_nulled_on_its_deletion(database: LocalServer) -> None:
    """PostgreSQL 15's SET NULL column list: the one deliberate difference from Prisma's SQL."""
    rows = catalog(
        database,
        "SELECT conname, ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = conrelid "
        "AND attnum = ANY(confdelsetcols)) FROM pg_constraint WHERE contype = 'f' "
        "AND connamespace = 'public'::regnamespace AND confdelsetcols IS NOT NULL",
    )
    assert rows == [("audit_events_organization_id_actor_id_fkey", ["actor_id"])]


def test_check_constraints_are_the_documented_ones(database: LocalServer) -> None:
    rows = catalog(
        database,
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'c' AND connamespace = 'public'::regnamespace ORDER BY 1",
    )
    assert rows == [
        (
            "organizations",
            "organizations_slug_check",
            "CHECK ((slug ~ '^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$'::text))",
        ),
        (
            "user_credentials",
            "user_credentials_password_hash_check",
            "CHECK ((password_hash ~ '^\\$argon2id\\$v=19\\$m=[0-9]+,t=[0-9]+,p=[0-9]+\\$[A-Za-z0-9+/]+\\$[A-Za-z0-9+/]+$'::text))",
        ),
        ("users", "users_email_check", "CHECK ((email = lower(email)))"),
        (
            "websocket_connections",
            "websocket_connections_task_ids_check",
            "CHECK (((cardinality(task_ids) <= 100) AND (array_position(task_ids, NULL::uuid) IS NULL)))",
        ),
    ]


# --- tenants ------------------------------------------------------------------------------------------


def set_org(connection: psycopg.Connection, org_id: Any) -> None:
    """The tenant of the current transaction, as the application sets it."""
    connection.execute("SELECT set_config('app.current_org_id', %s, true)", (str(org_id),))


@contextmanager
def connected(server: LocalServer, user: str) -> Iterator[psycopg.Connection]:
    with server.connect(user) as connection:
        connection.autocommit = True  # every block below is a transaction of its own
        yield connection


# An Argon2id hash (of "correct horse battery staple", salt "saltsaltsaltsalt"), as sign-in stores them.
PASSWORD_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$opK/12lewr2z5YpUKucJCUXASikIGYN+qjR3vL2e8go"
)


def seed_organization(owner: psycopg.Connection, slug: str) -> dict[str, Any]:
    """An organization with one row in every tenant table, written the way the bootstrap can under
    FORCE ROW LEVEL SECURITY: as the owner, with app.current_org_id set to the new organization's
    id (generated first) for the whole transaction."""
    with owner.transaction():
        ((org_id,),) = owner.execute("SELECT gen_random_uuid()").fetchall()
        set_org(owner, org_id)
        owner.execute(
            "INSERT INTO organizations (id, slug, name) VALUES (%s, %s, %s)", (org_id, slug, slug.title())
        )

        def insert(sql: str, params: tuple[Any, ...]) -> Any:
            row = owner.execute(sql, params).fetchone()
            assert row is not None
            return row[0]

        user_id = insert(
            "INSERT INTO users (organization_id, email) VALUES (%s, %s) RETURNING id",
            (org_id, f"ada@{slug}.test"),
        )
        other_user_id = insert(
            "INSERT INTO users (organization_id, email) VALUES (%s, %s) RETURNING id",
            (org_id, f"bob@{slug}.test"),
        )
        role_id = insert(
            "INSERT INTO roles (organization_id, name, is_system) VALUES (%s, 'admin', true) RETURNING id",
            (org_id,),
        )
        owner.execute(
            "INSERT INTO role_permissions (organization_id, role_id, permission_id) "
            "SELECT %s, %s, id FROM permissions WHERE key IN ('tasks:create', 'users:read')",
            (org_id, role_id),
        )
        for user in (user_id, other_user_id):
            owner.execute(
                "INSERT INTO user_roles (organization_id, user_id, role_id) VALUES (%s, %s, %s)",
                (org_id, user, role_id),
            )
        owner.execute(
            "INSERT INTO user_credentials (organization_id, user_id, password_hash) VALUES (%s, %s, %s)",
            (org_id, user_id, PASSWORD_HASH),
        )
        task_id = insert(
            "INSERT INTO tasks (organization_id, creator_id, type, payload) VALUES (%s, %s, 'report', '{\"n\": 1}') "
            "RETURNING id",
            (org_id, user_id),
        )
        connection_id = f"{slug}-connection"
        owner.execute(
            "INSERT INTO websocket_connections (connection_id, organization_id, user_id, expires_at) "
            "VALUES (%s, %s, %s, now() + interval '1 hour')",
            (connection_id, org_id, other_user_id),
        )
        owner.execute(
            "INSERT INTO audit_events (organization_id, actor_id, action, target_type, target_id) "
            "VALUES (%s, NULL, 'organization.create', 'organization', %s), (%s, %s, 'user.invite', 'user', %s)",
            (org_id, str(org_id), org_id, other_user_id, str(user_id)),
        )
    return {
        "org": org_id,
        "user": user_id,
        "other_user": other_user_id,
        "role": role_id,
        "task": task_id,
        "connection": connection_id,
    }


@pytest.fixture(scope="module")
def tenants(database: LocalServer) -> dict[str, dict[str, Any]]:
    with connected(database, "tenantforge_owner") as owner:
        return {slug: seed_organization(owner, slug) for slug in ("acme", "globex")}


def counts(connection: psycopg.Connection, org_id: Any | None) -> dict[str, dict[str, int]]:
    """Per table, the rows visible in one transaction, by organization id."""
    visible: dict[str, dict[str, int]] = {}
    with connection.transaction():
        if org_id is not None:
            set_org(connection, org_id)
        for table in ["organizations", *TENANT_TABLES]:
            column = "id" if table == "organizations" else "organization_id"
            query = sql.SQL("SELECT {}, count(*) FROM {} GROUP BY 1").format(
                sql.Identifier(column), sql.Identifier(table)
            )
            visible[table] = {str(org): count for org, count in connection.execute(query).fetchall()}
    return visible


# Rows per table of one seeded organization.
SEEDED = {
    "organizations": 1,
    "users": 2,
    "roles": 1,
    "role_permissions": 2,
    "user_roles": 2,
    "user_credentials": 1,
    "tasks": 1,
    "websocket_connections": 1,
    "audit_events": 2,
}


def test_the_application_sees_its_organization_only(database: LocalServer, tenants: dict[str, Any]) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    with connected(database, "tenantforge_app") as app:
        assert counts(app, acme["org"]) == {table: {str(acme["org"]): n} for table, n in SEEDED.items()}
        assert counts(app, globex["org"]) == {table: {str(globex["org"]): n} for table, n in SEEDED.items()}
        # The permission catalog is global, and readable.
        assert [key for (key,) in app.execute("SELECT key FROM permissions ORDER BY key").fetchall()] == (
            PERMISSION_KEYS
        )


def test_no_organization_set_means_no_rows(database: LocalServer, tenants: dict[str, Any]) -> None:
    empty: dict[str, dict[str, int]] = {table: {} for table in SEEDED}
    with connected(database, "tenantforge_app") as app:
        assert counts(app, None) == empty
        # After a transaction that set it, the session reads '' rather than nothing: same result.
        with app.transaction():
            set_org(app, tenants["acme"]["org"])
        assert app.execute("SELECT current_setting('app.current_org_id', true)").fetchone() == ("",)
        assert counts(app, None) == empty
        # A value that is not an organization id is an error, never a match.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation), app.transaction():
            set_org(app, "acme")
            app.execute("SELECT count(*) FROM users")
    with connected(database, "tenantforge_owner") as owner:
        assert counts(owner, None)["users"] == {}


def insert_statements(org: Any, ids: dict[str, Any]) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """One INSERT per tenant table, naming organization `org` and rows of `ids`' organization."""
    return {
        "users": ("INSERT INTO users (organization_id, email) VALUES (%s, 'eve@x.test')", (org,)),
        "roles": ("INSERT INTO roles (organization_id, name) VALUES (%s, 'intruder')", (org,)),
        "role_permissions": (
            "INSERT INTO role_permissions (organization_id, role_id, permission_id) "
            "SELECT %s, %s, id FROM permissions WHERE key = 'audit:read'",
            (org, ids["role"]),
        ),
        "user_roles": (
            "INSERT INTO user_roles (organization_id, user_id, role_id) VALUES (%s, %s, %s)",
            (org, ids["user"], uuid.uuid4()),
        ),
        "user_credentials": (
            "INSERT INTO user_credentials (organization_id, user_id, password_hash) VALUES (%s, %s, %s)",
            (org, ids["other_user"], PASSWORD_HASH),
        ),
        "tasks": (
            "INSERT INTO tasks (organization_id, creator_id, type, payload) VALUES (%s, %s, 'x', '{}')",
            (org, ids["user"]),
        ),
        "websocket_connections": (
            "INSERT INTO websocket_connections (connection_id, organization_id, user_id, expires_at) "
            "VALUES ('intruder', %s, %s, now())",
            (org, ids["user"]),
        ),
        "audit_events": (
            "INSERT INTO audit_events (organization_id, action, target_type, target_id) VALUES (%s, 'x', 'x', 'x')",
            (org,),
        ),
    }


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_inserts_naming_another_organization_are_refused(
    database: LocalServer, tenants: dict[str, Any], table: str
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    statement, params = insert_statements(globex["org"], globex)[table]
    with connected(database, "tenantforge_app") as app:
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            app.transaction(),
        ):
            set_org(app, acme["org"])
            app.execute(statement, params)
        # Nothing set: refused as well.
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            app.transaction(),
        ):
            app.execute(statement, params)


@pytest.mark.parametrize("table", [table for table in TENANT_TABLES if table != "audit_events"])
def test_updates_and_deletes_cannot_reach_another_organization(
    database: LocalServer, tenants: dict[str, Any], table: str
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    with connected(database, "tenantforge_app") as app:
        name = sql.Identifier(table)
        with app.transaction():
            set_org(app, acme["org"])
            for statement in (
                sql.SQL("UPDATE {} SET organization_id = organization_id WHERE organization_id = %s").format(
                    name
                ),
                sql.SQL("DELETE FROM {} WHERE organization_id = %s").format(name),
            ):
                assert app.execute(statement, (globex["org"],)).rowcount == 0
        # Moving its own rows into the other organization fails the policy's WITH CHECK.
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            app.transaction(),
        ):
            set_org(app, acme["org"])
            app.execute(sql.SQL("UPDATE {} SET organization_id = %s").format(name), (globex["org"],))
        assert counts(app, globex["org"])[table] == {str(globex["org"]): SEEDED[table]}


def test_references_cannot_cross_organizations(database: LocalServer, tenants: dict[str, Any]) -> None:
    """Foreign key checks bypass row-level security; the composite keys keep them inside a tenant."""
    acme, globex = tenants["acme"], tenants["globex"]
    with connected(database, "tenantforge_app") as app:
        for statement, params in [
            (
                "INSERT INTO tasks (organization_id, creator_id, type, payload) VALUES (%s, %s, 'x', '{}')",
                (acme["org"], globex["user"]),
            ),
            (
                "INSERT INTO user_roles (organization_id, user_id, role_id) VALUES (%s, %s, %s)",
                (acme["org"], acme["user"], globex["role"]),
            ),
            (
                "INSERT INTO audit_events (organization_id, actor_id, action, target_type, target_id) "
                "VALUES (%s, %s, 'x', 'x', 'x')",
                (acme["org"], globex["user"]),
            ),
        ]:
            with pytest.raises(psycopg.errors.ForeignKeyViolation), app.transaction():
                set_org(app, acme["org"])
                app.execute(statement, params)


def test_the_application_writes_only_what_it_is_granted(
    database: LocalServer, tenants: dict[str, Any]
) -> None:
    grants = catalog(
        database,
        "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type) "
        "FROM information_schema.role_table_grants WHERE grantee = 'tenantforge_app' GROUP BY 1 ORDER BY 1",
    )
    dml = "DELETE,INSERT,SELECT,UPDATE"
    assert grants == [
        ("audit_events", "INSERT,SELECT"),
        ("organizations", "SELECT"),
        ("permissions", "SELECT"),
        ("role_permissions", dml),
        ("roles", dml),
        ("tasks", dml),
        ("user_credentials", dml),
        ("user_roles", dml),
        ("users", dml),
        ("websocket_connections", dml),
    ]
    assert catalog(
        database,
        "SELECT column_name, privilege_type FROM information_schema.column_privileges "
        "WHERE grantee = 'tenantforge_app' AND table_name = 'organizations' AND privilege_type <> 'SELECT' ORDER BY 1",
    ) == [("name", "UPDATE"), ("updated_at", "UPDATE")]
    acme = tenants["acme"]
    with connected(database, "tenantforge_app") as app:
        for statement in (
            "INSERT INTO permissions (key, description) VALUES ('x:y', 'x')",
            "DELETE FROM permissions",
            "UPDATE audit_events SET action = 'forged'",
            "DELETE FROM audit_events",
            "INSERT INTO organizations (slug, name) VALUES ('new-org', 'x')",
            "DELETE FROM organizations",
            "UPDATE organizations SET status = 'active'",
            "TRUNCATE users",
        ):
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
                app.transaction(),
            ):
                set_org(app, acme["org"])
                app.execute(statement)
        with app.transaction():
            set_org(app, acme["org"])
            renamed = app.execute("UPDATE organizations SET name = 'Acme Inc', updated_at = now()")
            assert renamed.rowcount == 1


def test_the_application_owns_nothing_and_cannot_lift_row_level_security(database: LocalServer) -> None:
    owned = catalog(
        database,
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_proc "
        "WHERE proowner = r.oid) + (SELECT count(*) FROM pg_type WHERE typowner = r.oid) + (SELECT count(*) "
        "FROM pg_namespace WHERE nspowner = r.oid), r.rolbypassrls, r.rolsuper FROM pg_roles r "
        "WHERE r.rolname = 'tenantforge_app'",
    )
    assert owned == [(0, False, False)]
    with connected(database, "tenantforge_app") as app:
        for statement in (
            "ALTER TABLE users DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE users NO FORCE ROW LEVEL SECURITY",
            "DROP POLICY tenant_isolation ON users",
            "CREATE POLICY everything ON users USING (true)",
            "ALTER FUNCTION current_org_id() STABLE",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
                app.execute(statement)
        app.execute("SET row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            app.execute("SELECT count(*) FROM users")


def test_every_table_with_an_organization_is_forced_under_row_level_security(database: LocalServer) -> None:
    """Catalog-wide: a future table with organization_id and no row-level security fails here, and
    so does any table without it besides the global permission catalog."""
    rows = catalog(
        database,
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
        "EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'organization_id' "
        "AND NOT a.attisdropped), "
        "ARRAY(SELECT p.polname || ':' || p.polcmd::text || ':' || pg_get_expr(p.polqual, p.polrelid) || ':' "
        "|| coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') FROM pg_policy p WHERE p.polrelid = c.oid "
        "AND p.polname = 'tenant_isolation') "
        "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
        "AND c.relname <> '_prisma_migrations' ORDER BY c.relname",
    )
    with_organization = sorted(table for table, _, _, has_column, _ in rows if has_column)
    assert with_organization == sorted(TENANT_TABLES)
    for table, enabled, forced, has_column, policies in rows:
        if table == "permissions":
            assert (enabled, forced, policies) == (False, False, []), table
            continue
        key = "organization_id" if has_column else "id"
        assert (table, enabled, forced) == (table, True, True)
        assert policies == [f"tenant_isolation:*:({key} = current_org_id()):({key} = current_org_id())"], (
            table
        )
    assert {table for table, *_ in rows} == {*TENANT_TABLES, "organizations", "permissions"}


def test_the_owner_is_bound_too_but_for_its_directory(database: LocalServer, tenants: dict[str, Any]) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    with connected(database, "tenantforge_owner") as owner:
        # The directory: every organization, to find one by its slug.
        found = owner.execute("SELECT slug FROM organizations WHERE slug IN ('acme', 'globex') ORDER BY slug")
        assert found.fetchall() == [("acme",), ("globex",)]
        with owner.transaction():
            set_org(owner, acme["org"])
            assert owner.execute("SELECT count(*) FROM users").fetchone() == (2,)
            cursor = owner.execute("UPDATE organizations SET name = 'taken' WHERE id = %s", (globex["org"],))
            assert cursor.rowcount == 0
            assert (
                owner.execute("DELETE FROM users WHERE organization_id = %s", (globex["org"],)).rowcount == 0
            )
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            owner.transaction(),
        ):
            set_org(owner, acme["org"])
            owner.execute(
                "INSERT INTO users (organization_id, email) VALUES (%s, 'eve@x.test')", (globex["org"],)
            )


def test_sign_in_finds_an_organization_by_slug_and_nothing_more(
    database: LocalServer, tenants: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    with connected(database, "tenantforge_app") as app:
        # Before any organization is set, the application sees none, and the function finds one.
        assert app.execute("SELECT count(*) FROM organizations").fetchone() == (0,)
        found = app.execute("SELECT id, status::text FROM organization_for_sign_in('acme')").fetchall()
        assert found == [(acme["org"], "active")]
        assert app.execute("SELECT * FROM organization_for_sign_in('nobody')").fetchall() == []
        # A pattern is a slug like any other, not a wildcard.
        assert app.execute("SELECT * FROM organization_for_sign_in('%')").fetchall() == []
        # Still no organization set: the function lifts row-level security for its own query only.
        assert app.execute("SELECT count(*) FROM organizations").fetchone() == (0,)
    ((definer, config, public_execute),) = catalog(
        database,
        "SELECT prosecdef, proconfig, has_function_privilege('public', oid, 'EXECUTE') FROM pg_proc "
        "WHERE proname = 'organization_for_sign_in'",
    )
    assert (definer, config, public_execute) == (True, ["search_path=public, pg_temp"], False)
    # The migration's search_path setting ended with its transaction.
    with connected(database, "tenantforge_owner") as owner:
        assert owner.execute("SHOW search_path").fetchone() == ('"$user", public',)


def test_a_password_is_stored_as_an_argon2id_hash_only(
    database: LocalServer, tenants: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    with connected(database, "tenantforge_app") as app:
        for value in ("correct horse battery staple", "$argon2i$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", ""):
            with (
                pytest.raises(psycopg.errors.CheckViolation, match="user_credentials_password_hash_check"),
                app.transaction(),
            ):
                set_org(app, acme["org"])
                app.execute(
                    "UPDATE user_credentials SET password_hash = %s WHERE user_id = %s", (value, acme["user"])
                )


@pytest.mark.parametrize(
    ("slug", "accepted"),
    [
        ("abc", True),
        ("a-b", True),
        ("0rg-9", True),
        ("a" * 63, True),
        ("ab", False),
        ("a" * 64, False),
        ("Acme", False),
        ("-abc", False),
        ("abc-", False),
        ("a_c", False),
        ("acme\n", False),
    ],
)
def test_the_slug_pattern_is_enforced(database: LocalServer, slug: str, accepted: bool) -> None:
    """PostgreSQL's `$` is the end of the string: a trailing newline does not pass (Python's `re`
    would let it through with match(); the module's check needs fullmatch)."""

    def insert(owner: psycopg.Connection) -> None:
        ((org_id,),) = owner.execute("SELECT gen_random_uuid()").fetchall()
        set_org(owner, org_id)
        owner.execute("INSERT INTO organizations (id, slug, name) VALUES (%s, %s, 'x')", (org_id, slug))

    with connected(database, "tenantforge_owner") as owner:
        if accepted:
            with owner.transaction():
                insert(owner)
                raise psycopg.Rollback
        else:
            with (
                pytest.raises(psycopg.errors.CheckViolation, match="organizations_slug_check"),
                owner.transaction(),
            ):
                insert(owner)


def test_emails_are_stored_lower_case(database: LocalServer, tenants: dict[str, Any]) -> None:
    with (
        connected(database, "tenantforge_app") as app,
        pytest.raises(psycopg.errors.CheckViolation, match="users_email_check"),
        app.transaction(),
    ):
        set_org(app, tenants["acme"]["org"])
        app.execute(
            "INSERT INTO users (organization_id, email) VALUES (%s, 'Eve@X.test')", (tenants["acme"]["org"],)
        )


def test_deletion_follows_each_relations_rule(database: LocalServer, tenants: dict[str, Any]) -> None:
    with connected(database, "tenantforge_owner") as owner:
        initech = seed_organization(owner, "initech")
        # A user who created tasks stays (disable them instead).
        with (
            pytest.raises(psycopg.errors.ForeignKeyViolation, match="tasks_organization_id_creator_id_fkey"),
            owner.transaction(),
        ):
            set_org(owner, initech["org"])
            owner.execute("DELETE FROM users WHERE id = %s", (initech["user"],))
        # A catalog permission stays while a role holds it.
        with (
            pytest.raises(psycopg.errors.ForeignKeyViolation, match="role_permissions_permission_id_fkey"),
            owner.transaction(),
        ):
            owner.execute("DELETE FROM permissions WHERE key = 'tasks:create'")
        # Another user goes with their roles and connections; their audit events stay, actor unset.
        with owner.transaction():
            set_org(owner, initech["org"])
            owner.execute("DELETE FROM users WHERE id = %s", (initech["other_user"],))
            assert owner.execute("SELECT count(*) FROM user_roles").fetchone() == (1,)
            assert owner.execute("SELECT count(*) FROM websocket_connections").fetchone() == (0,)
            events = owner.execute(
                "SELECT action, actor_id, organization_id FROM audit_events ORDER BY action"
            )
            assert events.fetchall() == [
                ("organization.create", None, initech["org"]),
                ("user.invite", None, initech["org"]),
            ]
        # The organization goes with everything it owns, its tasks' creator included.
        with owner.transaction():
            set_org(owner, initech["org"])
            assert owner.execute("DELETE FROM organizations WHERE id = %s", (initech["org"],)).rowcount == 1
        left = counts(owner, initech["org"])
        # The owner's directory still lists the other organizations.
        assert sorted(left.pop("organizations")) == sorted(
            str(tenants[slug]["org"]) for slug in ("acme", "globex")
        )
        assert left == {table: {} for table in TENANT_TABLES}
        assert counts(owner, tenants["acme"]["org"])["users"] == {str(tenants["acme"]["org"]): 2}
        assert owner.execute("SELECT count(*) FROM permissions").fetchone() == (len(PERMISSION_KEYS),)


def test_the_migrations_seed_the_permission_catalog_once(database: LocalServer) -> None:
    """Re-running the seed (as a repeated migration would) adds nothing."""
    seed = (MIGRATIONS / "20261127000100_row_level_security" / "migration.sql").read_text()
    insert = re.search(r"^INSERT INTO \"permissions\".*?;$", seed, re.MULTILINE | re.DOTALL)
    assert insert
    with connected(database, "tenantforge_owner") as owner:
        owner.execute(insert.group(0).encode())
        keys = owner.execute("SELECT key FROM permissions ORDER BY key").fetchall()
    assert [key for (key,) in keys] == PERMISSION_KEYS
