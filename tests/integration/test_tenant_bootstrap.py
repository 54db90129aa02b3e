"""The tenant_bootstrap and tenant_info modules against a real PostgreSQL 15 with the project's
migrations (prisma/migrations), as tenantforge_owner; the application's view through PgBouncer, as
tenantforge_app, the way the runtime connects."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import jwt
import psycopg
import pytest
from ansible_module import ModuleRun, run_module
from conftest import REPO, Emulator, run_playbook
from psycopg import sql
from test_pgbouncer import LocalStack, private_stack
from test_prisma_schema import TENANT_TABLES

from ansible_collections.tenantforge.platform.plugins.module_utils import secret_material
from ansible_collections.tenantforge.platform.plugins.module_utils.prisma_migrations import (
    migrate,
    read_migrations,
)

pytestmark = pytest.mark.integration

MODULE = "tenantforge.platform.tenant_bootstrap"
INFO = "tenantforge.platform.tenant_info"
MIGRATIONS = REPO / "prisma" / "migrations"
ACME: dict[str, Any] = {
    "org_slug": "acme",
    "org_name": "ACME Corporation",
    "admin_email": "Ada@ACME.example",
    "users": [
        {"email": "bob@acme.example", "roles": ["member"]},
        {"email": "eve@acme.example", "roles": ["viewer"]},
    ],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """PostgreSQL and PgBouncer of this module's own, the database migrated."""
    with private_stack(tmp_path_factory.mktemp("tenants")) as local:
        local.run({"pgbouncer_local_bundle": False, "postgres_local_bundle": False}).assert_ok()
        with local.connect("tenantforge_owner", port=local.postgres_port, autocommit=True) as owner:
            migrate(owner, read_migrations(MIGRATIONS), check_mode=False)
        yield local


def owner_dsn(stack: LocalStack) -> str:
    password = stack.passwords["tenantforge_owner"]
    return f"host=127.0.0.1 port={stack.postgres_port} dbname=tenantforge user=tenantforge_owner password={password}"


def bootstrap(
    stack: LocalStack, params: dict[str, Any], check: bool = False, module: str = MODULE
) -> ModuleRun:
    run = run_module(module, {**params, "dsn": owner_dsn(stack)}, stack.state_dir, check=check, diff=True)
    assert stack.passwords["tenantforge_owner"] not in run.output
    return run


def as_org(stack: LocalStack, slug: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A query as the application (tenantforge_app through PgBouncer) with the organization set for
    the transaction, as the runtime does."""
    with stack.connect("tenantforge_app") as app:
        (org_id,) = owner_query(stack, "SELECT id FROM organizations WHERE slug = %s", (slug,))[0]
        app.execute("SELECT set_config('app.current_org_id', %s, true)", (str(org_id),))
        return app.execute(sql, params).fetchall()


def owner_query(stack: LocalStack, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with stack.connect("tenantforge_owner", port=stack.postgres_port) as owner:
        return owner.execute(sql, params).fetchall()


def audit_actions(stack: LocalStack, slug: str) -> list[str]:
    return [
        action
        for (action,) in as_org(stack, slug, "SELECT action FROM audit_events ORDER BY created_at, action")
    ]


# --- create, re-run, check mode, diff -------------------------------------------------------------


def test_check_mode_reports_a_new_organization_and_writes_nothing(stack: LocalStack) -> None:
    run = bootstrap(stack, ACME, check=True)
    result = run.assert_ok()
    assert result["changed"] is True
    assert result["organization_id"] is None
    assert result["changes"][:2] == ["create organization acme", "create role admin"]
    assert "create user ada@acme.example" in result["changes"]
    assert owner_query(stack, "SELECT count(*) FROM organizations") == [(0,)]


def test_create_an_organization_with_its_roles_and_users(stack: LocalStack) -> None:
    result = bootstrap(stack, ACME).assert_ok()
    assert result["changed"] is True
    assert set(result["roles"]) == {"owner", "admin", "member", "viewer"}
    assert set(result["users"]) == {"ada@acme.example", "bob@acme.example", "eve@acme.example"}
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["users"] == {
        "ada@acme.example": ["owner"],
        "bob@acme.example": ["member"],
        "eve@acme.example": ["viewer"],
    }
    held = as_org(
        stack,
        "acme",
        "SELECT u.email, r.name FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id "
        "ORDER BY 1",
    )
    assert held == [
        ("ada@acme.example", "owner"),
        ("bob@acme.example", "member"),
        ("eve@acme.example", "viewer"),
    ]
    viewer = as_org(
        stack,
        "acme",
        "SELECT p.key FROM roles r JOIN role_permissions rp ON rp.role_id = r.id JOIN permissions p ON p.id = rp.permission_id "
        "WHERE r.name = 'viewer' ORDER BY 1",
    )
    assert viewer == [("org:read",), ("roles:read",), ("tasks:read",), ("users:read",)]
    assert as_org(stack, "acme", "SELECT bool_and(is_system) FROM roles") == [(True,)]
    actions = audit_actions(stack, "acme")
    assert actions.count("user.created") == 3 and actions.count("role.created") == 4
    assert "organization.created" in actions


def test_a_second_run_changes_nothing(stack: LocalStack) -> None:
    ids = bootstrap(stack, ACME).assert_ok()
    assert ids["changed"] is False and ids["changes"] == []
    assert ids["diff"]["before"] == ids["diff"]["after"]
    check = bootstrap(stack, ACME, check=True).assert_ok()
    assert check["changed"] is False
    assert check["organization_id"] == ids["organization_id"] and check["users"] == ids["users"]


def test_a_modification_is_reported_by_check_mode_then_applied(stack: LocalStack) -> None:
    audited = len(audit_actions(stack, "acme"))
    changed = {
        **ACME,
        "org_name": "ACME Inc.",
        "roles": {
            "owner": ["org:write", "org:read"],
            "member": ["tasks:create", "tasks:read"],
            "auditor": ["audit:read"],
        },
        "users": [
            {"email": "bob@acme.example", "roles": ["member", "auditor"]},
            {"email": "zoe@acme.example", "roles": []},
        ],
    }
    check = bootstrap(stack, changed, check=True).assert_ok()
    assert check["changed"] is True
    assert len(audit_actions(stack, "acme")) == audited
    assert as_org(stack, "acme", "SELECT name FROM organizations") == [("ACME Corporation",)]
    run = bootstrap(stack, changed).assert_ok()
    assert run["changes"] == check["changes"]
    assert set(run["changes"]) >= {
        "rename organization acme",
        "create role auditor",
        "set the permissions of role owner",
        "delete role admin",
        "delete role viewer",
        "create user zoe@acme.example",
        "set the roles of user bob@acme.example",
    }
    assert run["diff"]["after"]["roles"] == {
        "auditor": ["audit:read"],
        "member": ["tasks:create", "tasks:read"],
        "owner": ["org:read", "org:write"],
    }
    # eve lost her only role with the viewer role; she is not listed any more, so she stays.
    assert run["diff"]["after"]["users"]["eve@acme.example"] == []
    assert as_org(stack, "acme", "SELECT name FROM roles ORDER BY 1") == [
        ("auditor",),
        ("member",),
        ("owner",),
    ]
    assert bootstrap(stack, changed).assert_ok()["changed"] is False
    bootstrap(stack, ACME).assert_ok()


def test_roles_the_organization_made_are_left_alone(stack: LocalStack) -> None:
    (org_id,) = owner_query(stack, "SELECT id FROM organizations WHERE slug = 'acme'")[0]
    with stack.connect("tenantforge_app") as app:
        app.execute("SELECT set_config('app.current_org_id', %s, true)", (str(org_id),))
        app.execute("INSERT INTO roles (organization_id, name) VALUES (%s, 'support')", (org_id,))
        (role_id,) = app.execute("SELECT id FROM roles WHERE name = 'support'").fetchone()
        (user_id,) = app.execute("SELECT id FROM users WHERE email = 'bob@acme.example'").fetchone()
        app.execute(
            "INSERT INTO user_roles (organization_id, user_id, role_id) VALUES (%s, %s, %s)",
            (org_id, user_id, role_id),
        )
    assert bootstrap(stack, ACME).assert_ok()["changed"] is False
    assert as_org(
        stack,
        "acme",
        "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id JOIN users u ON u.id = ur.user_id "
        "WHERE u.email = 'bob@acme.example' ORDER BY 1",
    ) == [("member",), ("support",)]


def test_suspend_and_reactivate(stack: LocalStack) -> None:
    suspended = {**ACME, "state": "suspended"}
    check = bootstrap(stack, suspended, check=True).assert_ok()
    assert check["changes"] == ["set organization acme suspended"]
    assert as_org(stack, "acme", "SELECT status::text FROM organizations") == [("active",)]
    assert bootstrap(stack, suspended).assert_ok()["changes"] == ["set organization acme suspended"]
    assert as_org(stack, "acme", "SELECT status::text FROM organizations") == [("suspended",)]
    assert bootstrap(stack, suspended).assert_ok()["changed"] is False
    assert bootstrap(stack, ACME).assert_ok()["changes"] == ["set organization acme active"]
    assert audit_actions(stack, "acme")[-2:] in (
        ["organization.suspended", "organization.reactivated"],
        ["organization.reactivated", "organization.suspended"],
    )


# --- isolation, through PgBouncer as the application ----------------------------------------------


def test_the_application_sees_only_the_organization_it_sets(stack: LocalStack) -> None:
    globex = {"org_slug": "globex", "org_name": "Globex", "admin_email": "hank@globex.example"}
    bootstrap(stack, globex).assert_ok()
    (acme_id,) = owner_query(stack, "SELECT id FROM organizations WHERE slug = 'acme'")[0]
    (globex_id,) = owner_query(stack, "SELECT id FROM organizations WHERE slug = 'globex'")[0]
    with stack.connect("tenantforge_app") as app:
        for table in ["organizations", *TENANT_TABLES]:
            column = "id" if table == "organizations" else "organization_id"
            with app.transaction():
                app.execute("SELECT set_config('app.current_org_id', %s, true)", (str(acme_id),))
                rows = app.execute(
                    sql.SQL("SELECT count(*) FILTER (WHERE {} = %s) FROM {}").format(
                        sql.Identifier(column), sql.Identifier(table)
                    ),
                    (globex_id,),
                ).fetchone()
                assert rows is not None and rows[0] == 0, table
            # No organization set: no rows at all.
            with app.transaction():
                assert app.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone() == (0,), table
        with app.transaction():
            app.execute("SELECT set_config('app.current_org_id', %s, true)", (str(acme_id),))
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
                app.transaction(),
            ):
                app.execute("INSERT INTO roles (organization_id, name) VALUES (%s, 'intruder')", (globex_id,))
            # An update naming the other organization touches nothing: its rows are invisible.
            cursor = app.execute(
                "UPDATE roles SET description = 'x' WHERE organization_id = %s", (globex_id,)
            )
            assert cursor.rowcount == 0
            with (
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
                app.transaction(),
            ):
                app.execute("UPDATE roles SET organization_id = %s WHERE name = 'owner'", (globex_id,))


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"org_slug": "Acme!"}, "org_slug must be 3-63 lower-case letters"),
        ({"org_slug": "-acme"}, "org_slug must be 3-63"),
        ({"org_name": "x" * 201}, "org_name must be 1-200 characters"),
        ({"admin_email": "ada-at-acme"}, "admin_email must be an email address"),
        ({"users": [{"email": "bob@acme", "roles": []}]}, "users[0].email must be an email address"),
        ({"roles": {"owner": ["tasks:fly"]}}, "roles.owner: unknown permission key tasks:fly"),
        ({"roles": {"owner": ["not a key"]}}, "roles.owner: 'not a key' is not a permission key"),
        (
            {"users": [{"email": "bob@acme.example", "roles": ["janitor"]}]},
            "users[0].roles: unknown role 'janitor'",
        ),
        (
            {
                "users": [
                    {"email": "bob@acme.example", "roles": []},
                    {"email": "BOB@acme.example", "roles": []},
                ]
            },
            "users[1].email: bob@acme.example is listed twice",
        ),
        ({"roles": {"Owner": []}}, "roles: role name 'Owner' must be"),
        ({"admin_email": "a@b.example", "roles": {"member": []}}, "admin_email gets the role owner"),
    ],
    ids=[
        "slug pattern",
        "slug leading hyphen",
        "over-long name",
        "malformed admin email",
        "malformed user email",
        "unknown permission key",
        "malformed permission key",
        "unknown role of a user",
        "duplicate users",
        "role name",
        "admin without owner role",
    ],
)
def test_bad_input_fails_before_any_write(stack: LocalStack, params: dict[str, Any], message: str) -> None:
    before = owner_query(stack, "SELECT count(*) FROM organizations")
    run = bootstrap(stack, {"org_slug": "initech", "org_name": "Initech", **params})
    assert run.failed
    assert message in run.result["msg"], run.result["msg"]
    assert owner_query(stack, "SELECT count(*) FROM organizations") == before


def test_a_bad_tenant_in_a_list_stops_the_whole_list(stack: LocalStack) -> None:
    tenants: list[dict[str, Any]] = [
        {"org_slug": "first-co", "org_name": "First"},
        {"org_slug": "second-co", "org_name": "Second", "users": [{"email": "x", "roles": []}]},
    ]
    run = bootstrap(stack, {"tenants": tenants})
    assert run.failed and "tenants[1].users[0].email must be an email address" in run.result["msg"]
    assert owner_query(stack, "SELECT count(*) FROM organizations WHERE slug = 'first-co'") == [(0,)]
    again = bootstrap(stack, {"tenants": [tenants[0], {**tenants[0], "org_name": "Again"}]})
    assert again.failed and "tenants[1].org_slug: first-co is listed twice" in again.result["msg"]


# --- many at once, concurrency ---------------------------------------------------------------------


def test_many_tenants_in_one_call(stack: LocalStack) -> None:
    tenants = [
        {
            "org_slug": f"bulk-{index}",
            "org_name": f"Bulk {index}",
            "admin_email": f"admin@bulk{index}.example",
        }
        for index in range(5)
    ]
    run = bootstrap(stack, {"tenants": tenants}).assert_ok()
    assert run["changed"] is True and [item["org_slug"] for item in run["tenants"]] == [
        t["org_slug"] for t in tenants
    ]
    assert set(run["diff"]["after"]) == {t["org_slug"] for t in tenants}
    again = bootstrap(stack, {"tenants": tenants}).assert_ok()
    assert again["changed"] is False


def converge_in_threads(stack: LocalStack, specs: list[dict[str, Any]]) -> list[Any]:
    """The module's core for each spec at the same time, each on a connection of its own."""
    from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import (
        check_permissions,
        check_tenants,
        converge,
    )

    results: list[Any] = [None] * len(specs)
    barrier = threading.Barrier(len(specs))

    def work(index: int) -> None:
        (tenant,) = check_tenants([specs[index]], prefix=False)
        with psycopg.connect(owner_dsn(stack), autocommit=True) as connection:
            catalog = check_permissions(connection, [tenant], prefix=False)
            barrier.wait()
            try:
                results[index] = converge(connection, tenant, catalog, check_mode=False)
            except Exception as exc:
                results[index] = exc

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_the_same_organization_twice_at_once_is_created_once(stack: LocalStack) -> None:
    spec = {**ACME, "org_slug": "race", "org_name": "Race", "admin_email": "r@race.example"}
    results = converge_in_threads(stack, [spec] * 4)
    assert all(isinstance(item, dict) for item in results), results
    assert sorted(item["changed"] for item in results) == [False, False, False, True]
    assert owner_query(stack, "SELECT count(*) FROM organizations WHERE slug = 'race'") == [(1,)]
    assert as_org(stack, "race", "SELECT count(*) FROM users") == [(3,)]
    assert as_org(stack, "race", "SELECT count(*) FROM roles") == [(4,)]


def test_different_organizations_at_once_do_not_interfere(stack: LocalStack) -> None:
    specs = [{**ACME, "org_slug": f"parallel-{index}", "org_name": f"P{index}"} for index in range(4)]
    results = converge_in_threads(stack, specs)
    assert all(isinstance(item, dict) and item["changed"] for item in results), results
    ids = {item["organization_id"] for item in results}
    assert len(ids) == 4
    for index in range(4):
        assert as_org(stack, f"parallel-{index}", "SELECT count(*) FROM users") == [(3,)]


# --- the playbooks -----------------------------------------------------------------------------------


def test_the_playbooks_migrate_and_bootstrap_with_the_owner_secret(
    stack: LocalStack, emulator: Emulator
) -> None:
    """playbooks/database.yml and playbooks/tenants.yml as site.yml runs them on inventories/local: the
    owner's credentials from Secrets Manager (the emulator), nothing but the address in the inventory;
    then a token for the demo user, issued as the application through PgBouncer with the signing key
    of the secret."""
    sm = emulator.client("secretsmanager")
    for user in ("tenantforge_owner", "tenantforge_app"):
        secret = {"username": user, "password": stack.passwords[user]}
        name = "tenantforge/pbtest/postgres/" + user.removeprefix("tenantforge_")
        sm.create_secret(Name=name, SecretString=json.dumps(secret))
    key = secret_material.generate_private_key("ES256")
    jwk = secret_material.public_jwk(key)
    sm.create_secret(
        Name="tenantforge/pbtest/jwt/signing-key",
        SecretString=json.dumps(
            {"kid": jwk["kid"], "alg": "ES256", "private_key_pem": secret_material.private_key_to_pem(key)}
        ),
    )
    sm.create_secret(Name="tenantforge/pbtest/jwt/jwks", SecretString=json.dumps({"keys": [jwk]}))
    settings: dict[str, Any] = {
        "tenantforge_environment": "pbtest",
        "local_emulator_port": emulator.port,
        "database_local_port": stack.postgres_port,
        "tenants": [
            {"org_slug": "playbook-a", "org_name": "A", "admin_email": "a@a.example"},
            {
                "org_slug": "playbook-b",
                "org_name": "B",
                "users": [{"email": "b@b.example", "roles": ["viewer"]}],
            },
        ],
        "tenantforge_demo_user": {"org_slug": "playbook-b", "email": "B@b.example"},
        "database_app_port": stack.pgbouncer_port,
    }
    migrations = run_playbook("playbooks/database.yml", stack.state_dir, settings)
    migrations.assert_ok()
    assert migrations.changed == 0  # the fixture applied them
    for expected in (1, 0):
        tenants = run_playbook("playbooks/tenants.yml", stack.state_dir, settings)
        tenants.assert_ok()
        assert tenants.changed == expected
        for password in stack.passwords.values():
            assert password not in tenants.output
        (token,) = set(re.findall(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", tenants.output))
        claims = jwt.decode(
            token,
            key.public_key(),
            algorithms=["ES256"],
            audience="tenantforge-api",
            issuer="urn:tenantforge:pbtest",
        )
        assert (claims["org_slug"], claims["roles"]) == ("playbook-b", ["viewer"])
        assert claims["permissions"] == ["org:read", "roles:read", "tasks:read", "users:read"]
    assert as_org(stack, "playbook-b", "SELECT email FROM users") == [("b@b.example",)]
    # Check mode does not issue one (the database may not exist yet).
    checked = run_playbook("playbooks/tenants.yml", stack.state_dir, settings, ("--check",))
    checked.assert_ok()
    assert checked.changed == 0
    assert "eyJ" not in checked.output


# --- absent, and the listing -----------------------------------------------------------------------


def test_tenant_info_lists_organizations_and_one_in_detail(stack: LocalStack) -> None:
    listing = bootstrap(stack, {}, module=INFO).assert_ok()
    slugs = [org["slug"] for org in listing["organizations"]]
    assert "acme" in slugs and slugs == sorted(slugs)
    detail = bootstrap(stack, {"org_slug": "acme"}, module=INFO).assert_ok()
    organization = detail["organization"]
    assert organization["slug"] == "acme" and organization["status"] == "active"
    assert organization["roles"]["viewer"]["permissions"] == [
        "org:read",
        "roles:read",
        "tasks:read",
        "users:read",
    ]
    assert organization["users"]["ada@acme.example"]["roles"] == ["owner"]
    missing = bootstrap(stack, {"org_slug": "nowhere"}, module=INFO).assert_ok()
    assert missing["organization"] is None


def test_absent_deletes_the_organization_and_everything_it_owns(stack: LocalStack) -> None:
    absent = {"org_slug": "acme", "state": "absent"}
    check = bootstrap(stack, absent, check=True).assert_ok()
    assert check["changes"] == ["delete organization acme"]
    assert owner_query(stack, "SELECT count(*) FROM organizations WHERE slug = 'acme'") == [(1,)]
    (acme_id,) = owner_query(stack, "SELECT id FROM organizations WHERE slug = 'acme'")[0]
    run = bootstrap(stack, absent).assert_ok()
    assert run["changed"] is True and run["diff"]["after"] == {}
    assert owner_query(stack, "SELECT count(*) FROM organizations WHERE slug = 'acme'") == [(0,)]
    with stack.connect("tenantforge_app") as app:
        app.execute("SELECT set_config('app.current_org_id', %s, true)", (str(acme_id),))
        for table in TENANT_TABLES:
            assert app.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone() == (0,), table
    assert bootstrap(stack, absent).assert_ok()["changed"] is False
