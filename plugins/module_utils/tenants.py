# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Tenants in the database of prisma/schema.prisma: checking a declared organization, and converging
the database to it as tenantforge_owner under FORCE ROW LEVEL SECURITY.

The owner reads every organization row (the `owner_directory` policy) to find one by its slug, then
sets app.current_org_id to that organization's id, for the transaction only, before it touches any of
its rows; a new organization's id is drawn first and set before the insert. The roles the bootstrap
declares are system roles (is_system): it creates, changes and deletes those, and leaves the roles an
organization made itself alone. Listed users are created when missing, and their system roles set to
the declared ones; other users are left alone. Each organization converges in one transaction, under
a transaction advisory lock on its slug, so two runs for one organization queue up and two for
different organizations do not wait for each other."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

try:
    from psycopg import sql
    from psycopg.types.json import Jsonb
except ImportError:
    pass

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Deliberately loose (one @, a dot in the domain, no spaces): the address is checked by sending mail
# to it, not by a pattern.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PERMISSION_KEY = re.compile(r"^[a-z]+:[a-z]+$")
MAX_NAME = 200
MAX_EMAIL = 254
STATES = ("present", "suspended", "absent")

# The default role catalog, over the permission keys of the migrations' seed.
DEFAULT_ROLES: dict[str, list[str]] = {
    "owner": [
        "tasks:create", "tasks:read", "tasks:cancel", "users:read", "users:write",
        "roles:read", "roles:write", "org:read", "org:write", "audit:read",
    ],
    "admin": [
        "tasks:create", "tasks:read", "tasks:cancel", "users:read", "users:write",
        "roles:read", "roles:write", "org:read", "audit:read",
    ],
    "member": ["tasks:create", "tasks:read", "tasks:cancel", "users:read", "roles:read", "org:read"],
    "viewer": ["tasks:read", "users:read", "roles:read", "org:read"],
}  # fmt: skip
# The role of admin_email.
ADMIN_ROLE = "owner"


class TenantInputError(Exception):
    """Bad input, found before anything is written; the message names the field."""


@dataclass
class Tenant:
    slug: str
    name: str
    state: str
    roles: dict[str, list[str]]
    # email -> sorted role names
    users: dict[str, list[str]] = field(default_factory=dict)

    def desired(self) -> dict[str, Any]:
        """The declared state, in the shape of the diff."""
        if self.state == "absent":
            return {}
        return {
            "slug": self.slug,
            "name": self.name,
            "status": "suspended" if self.state == "suspended" else "active",
            "roles": {name: sorted(keys) for name, keys in sorted(self.roles.items())},
            "users": dict(sorted(self.users.items())),
        }


def check_tenant(spec: dict[str, Any], where: str) -> Tenant:
    """One organization's parameters, checked and normalised (emails lower-case, sorted lists)."""
    slug = spec.get("org_slug")
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        raise TenantInputError(
            f"{where}org_slug must be 3-63 lower-case letters, digits and inner hyphens "
            f"(^[a-z0-9](?:[a-z0-9-]{{1,61}}[a-z0-9])$); got {slug!r}"
        )
    state = spec.get("state") or "present"
    if state not in STATES:
        raise TenantInputError(f"{where}state must be one of {', '.join(STATES)}; got {state!r}")
    if state == "absent":
        return Tenant(slug, "", state, {})
    name = spec.get("org_name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise TenantInputError(f"{where}org_name must be 1-{MAX_NAME} characters; got {name!r:.60}")

    roles_spec = spec.get("roles")
    roles = DEFAULT_ROLES if roles_spec is None else roles_spec
    if not isinstance(roles, dict) or not roles:
        raise TenantInputError(f"{where}roles must map role names to lists of permission keys")
    checked_roles: dict[str, list[str]] = {}
    for role, keys in roles.items():
        if not isinstance(role, str) or not ROLE_NAME.fullmatch(role):
            raise TenantInputError(
                f"{where}roles: role name {role!r:.70} must be 1-63 lower-case letters, digits, '_' and '-', "
                "starting with a letter"
            )
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise TenantInputError(f"{where}roles.{role} must be a list of permission keys")
        for key in keys:
            if not PERMISSION_KEY.fullmatch(key):
                raise TenantInputError(
                    f"{where}roles.{role}: {key!r:.70} is not a permission key (such as tasks:create)"
                )
        if len(set(keys)) != len(keys):
            raise TenantInputError(f"{where}roles.{role} lists a permission key twice")
        checked_roles[role] = sorted(keys)

    # The admin may also be listed in users (with more roles); an address listed twice there is an error.
    users: dict[str, list[str]] = {}
    admin = spec.get("admin_email")
    if admin is not None:
        if ADMIN_ROLE not in checked_roles:
            raise TenantInputError(
                f"{where}admin_email gets the role {ADMIN_ROLE}, which roles does not declare"
            )
        users[check_email(admin, f"{where}admin_email")] = [ADMIN_ROLE]
    listed: set[str] = set()
    user_specs = spec.get("users") or []
    if not isinstance(user_specs, list):
        raise TenantInputError(f"{where}users must be a list of {{email, roles}}")
    for index, user in enumerate(user_specs):
        at = f"{where}users[{index}]"
        if not isinstance(user, dict) or set(user) - {"email", "roles"}:
            raise TenantInputError(f"{at} must be a dict with email and roles only")
        email = check_email(user.get("email"), f"{at}.email")
        if email in listed:
            raise TenantInputError(f"{at}.email: {email} is listed twice")
        listed.add(email)
        user_roles = user.get("roles") or []
        if not isinstance(user_roles, list):
            raise TenantInputError(f"{at}.roles must be a list of role names")
        for role in user_roles:
            if role not in checked_roles:
                raise TenantInputError(
                    f"{at}.roles: unknown role {role!r:.70} (roles declares {', '.join(sorted(checked_roles))})"
                )
        users[email] = sorted(set(users.get(email, [])) | set(user_roles))
    return Tenant(slug, name.strip(), state, checked_roles, users)


def check_email(value: Any, at: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_EMAIL or not EMAIL.fullmatch(value):
        raise TenantInputError(
            f"{at} must be an email address of at most {MAX_EMAIL} characters; got {value!r:.80}"
        )
    return value.lower()


def check_tenants(specs: list[dict[str, Any]], prefix: bool) -> list[Tenant]:
    tenants = []
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        tenant = check_tenant(spec, f"tenants[{index}]." if prefix else "")
        if tenant.slug in seen:
            raise TenantInputError(f"tenants[{index}].org_slug: {tenant.slug} is listed twice")
        seen.add(tenant.slug)
        tenants.append(tenant)
    return tenants


def check_permissions(connection: Any, tenants: list[Tenant], prefix: bool) -> dict[str, str]:
    """The catalog (key -> id); every declared key must be in it."""
    catalog = dict(connection.execute('SELECT "key", "id"::text FROM "permissions"').fetchall())
    for index, tenant in enumerate(tenants):
        for role, keys in tenant.roles.items():
            unknown = sorted(set(keys) - set(catalog))
            if unknown:
                where = f"tenants[{index}]." if prefix else ""
                raise TenantInputError(
                    f"{where}roles.{role}: unknown permission key {unknown[0]} (the catalog has {', '.join(sorted(catalog))})"
                )
    return catalog


# --- the database ------------------------------------------------------------------------------------


def read_state(connection: Any, org: tuple[str, str, str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state in the diff's shape, ids) of an organization; app.current_org_id is already set to it."""
    org_id, slug, name, status = org
    roles = connection.execute(
        'SELECT r."id"::text, r."name", r."is_system", p."key" FROM "roles" r '
        'LEFT JOIN "role_permissions" rp ON rp."organization_id" = r."organization_id" AND rp."role_id" = r."id" '
        'LEFT JOIN "permissions" p ON p."id" = rp."permission_id" ORDER BY r."name", p."key"'
    ).fetchall()
    role_keys: dict[str, list[str]] = {}
    role_ids: dict[str, str] = {}
    system: set[str] = set()
    for role_id, role, is_system, key in roles:
        role_ids[role] = role_id
        keys = role_keys.setdefault(role, [])
        if key is not None:
            keys.append(key)
        if is_system:
            system.add(role)
    users = connection.execute(
        'SELECT u."id"::text, u."email", r."name" FROM "users" u '
        'LEFT JOIN "user_roles" ur ON ur."organization_id" = u."organization_id" AND ur."user_id" = u."id" '
        'LEFT JOIN "roles" r ON r."organization_id" = ur."organization_id" AND r."id" = ur."role_id" '
        'ORDER BY u."email", r."name"'
    ).fetchall()
    user_roles: dict[str, list[str]] = {}
    user_ids: dict[str, str] = {}
    for user_id, email, role in users:
        user_ids[email] = user_id
        held = user_roles.setdefault(email, [])
        if role is not None:
            held.append(role)
    state = {
        "slug": slug,
        "name": name,
        "status": status,
        "roles": {role: role_keys[role] for role in sorted(system)},
        "users": user_roles,
    }
    return state, {"organization_id": org_id, "roles": role_ids, "users": user_ids, "system_roles": system}


def set_organization(connection: Any, org_id: str) -> None:
    connection.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))


class Convergence:
    """The writes of one organization's convergence, each recorded as a change and an audit event
    (actor: none, the platform)."""

    def __init__(self, connection: Any, org_id: str) -> None:
        self.connection = connection
        self.org_id = org_id
        self.changes: list[str] = []

    def write(self, change: str, sql: str, params: tuple[Any, ...]) -> str | None:
        self.changes.append(change)
        row = self.connection.execute(sql, params).fetchone()
        return str(row[0]) if row else None

    def audit(self, action: str, target: tuple[str, str], details: dict[str, Any]) -> None:
        self.connection.execute(
            'INSERT INTO "audit_events" ("organization_id", "action", "target_type", "target_id", "details") '
            "VALUES (%s, %s, %s, %s, %s)",
            (self.org_id, action, target[0], target[1], Jsonb(details)),
        )

    def link(self, table: str, column: str, owner: tuple[str, str], ids: list[str], add: bool) -> None:
        """Adds or removes rows (organization, owner, column) of role_permissions or user_roles."""
        if not ids:
            return
        table_, owner_, column_ = sql.Identifier(table), sql.Identifier(owner[0]), sql.Identifier(column)
        if add:
            insert = sql.SQL('INSERT INTO {} ("organization_id", {}, {}) VALUES (%s, %s, %s)')
            with self.connection.cursor() as cursor:
                cursor.executemany(
                    insert.format(table_, owner_, column_), [(self.org_id, owner[1], item) for item in ids]
                )
        else:
            delete = sql.SQL("DELETE FROM {} WHERE {} = %s AND {} = ANY(%s::uuid[])")
            self.connection.execute(delete.format(table_, owner_, column_), (owner[1], ids))


def converge(connection: Any, tenant: Tenant, catalog: dict[str, str], check_mode: bool) -> dict[str, Any]:
    """One organization in one transaction. Check mode does the same and rolls it back, so what it
    reports is exactly what a run would do, and nothing is written."""
    with connection.transaction(force_rollback=check_mode):
        connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("tenantforge.tenant:" + tenant.slug,)
        )
        org = connection.execute(
            'SELECT "id"::text, "slug", "name", "status"::text FROM "organizations" WHERE "slug" = %s',
            (tenant.slug,),
        ).fetchone()
        before: dict[str, Any] = {}
        ids: dict[str, Any] = {"roles": {}, "users": {}, "system_roles": set()}
        if org:
            set_organization(connection, org[0])
            before, ids = read_state(connection, org)
        if tenant.state == "absent":
            changes = []
            if org:
                # Everything it owns goes with it (ON DELETE CASCADE), its audit events included.
                connection.execute('DELETE FROM "organizations" WHERE "id" = %s', (org[0],))
                changes.append(f"delete organization {tenant.slug}")
            return result(tenant, changes, before, {}, None, {}, {})

        desired = tenant.desired()
        if org:
            org_id = org[0]
        else:
            (org_id,) = connection.execute("SELECT gen_random_uuid()::text").fetchone()
            set_organization(connection, org_id)
        run = Convergence(connection, org_id)
        if not org:
            run.write(
                f"create organization {tenant.slug}",
                'INSERT INTO "organizations" ("id", "slug", "name", "status") VALUES (%s, %s, %s, %s)'
                ' RETURNING "id"',
                (org_id, tenant.slug, tenant.name, desired["status"]),
            )
            run.audit(
                "organization.created", ("organization", org_id), {"slug": tenant.slug, "name": tenant.name}
            )
        else:
            if before["name"] != tenant.name:
                run.write(
                    f"rename organization {tenant.slug}",
                    'UPDATE "organizations" SET "name" = %s, "updated_at" = now() WHERE "id" = %s RETURNING "id"',
                    (tenant.name, org_id),
                )
                run.audit(
                    "organization.renamed",
                    ("organization", org_id),
                    {"from": before["name"], "to": tenant.name},
                )
            if before["status"] != desired["status"]:
                run.write(
                    f"set organization {tenant.slug} {desired['status']}",
                    'UPDATE "organizations" SET "status" = %s, "updated_at" = now() WHERE "id" = %s RETURNING "id"',
                    (desired["status"], org_id),
                )
                action = "suspended" if desired["status"] == "suspended" else "reactivated"
                run.audit(f"organization.{action}", ("organization", org_id), {})

        role_ids: dict[str, str] = dict(ids["roles"])
        system: set[str] = ids["system_roles"]
        for role, keys in desired["roles"].items():
            if role not in role_ids:
                role_ids[role] = str(
                    run.write(
                        f"create role {role}",
                        'INSERT INTO "roles" ("organization_id", "name", "is_system") VALUES (%s, %s, true)'
                        ' RETURNING "id"',
                        (org_id, role),
                    )
                )
                run.audit("role.created", ("role", role_ids[role]), {"name": role})
                held: list[str] = []
            elif role not in system:
                # A role the organization made under a name the bootstrap now declares: adopted.
                run.write(
                    f"make role {role} a system role",
                    'UPDATE "roles" SET "is_system" = true, "updated_at" = now() WHERE "id" = %s RETURNING "id"',
                    (role_ids[role],),
                )
                run.audit("role.adopted", ("role", role_ids[role]), {"name": role})
                held = read_keys(connection, role_ids[role])
            else:
                held = before["roles"][role]
            grant, revoke = sorted(set(keys) - set(held)), sorted(set(held) - set(keys))
            if grant or revoke:
                run.changes.append(f"set the permissions of role {role}")
                owner = ("role_id", role_ids[role])
                run.link(
                    "role_permissions", "permission_id", owner, [catalog[key] for key in revoke], add=False
                )
                run.link(
                    "role_permissions", "permission_id", owner, [catalog[key] for key in grant], add=True
                )
                run.audit(
                    "role.permissions_changed",
                    ("role", role_ids[role]),
                    {"name": role, "granted": grant, "revoked": revoke},
                )
        for role in sorted(system - set(desired["roles"])):
            run.write(
                f"delete role {role}", 'DELETE FROM "roles" WHERE "id" = %s RETURNING "id"', (role_ids[role],)
            )
            run.audit("role.deleted", ("role", role_ids.pop(role)), {"name": role})

        user_ids: dict[str, str] = dict(ids["users"])
        current_users: dict[str, list[str]] = before.get("users", {})
        managed = system | set(desired["roles"])
        for email, wanted in desired["users"].items():
            if email not in user_ids:
                user_ids[email] = str(
                    run.write(
                        f"create user {email}",
                        'INSERT INTO "users" ("organization_id", "email") VALUES (%s, %s) RETURNING "id"',
                        (org_id, email),
                    )
                )
                run.audit("user.created", ("user", user_ids[email]), {"email": email})
            # Only system roles are the bootstrap's to set: a role the organization made stays.
            held_roles = set(current_users.get(email, [])) & managed
            add, remove = sorted(set(wanted) - held_roles), sorted(held_roles - set(wanted))
            # A deleted role's memberships went with it.
            remove = [role for role in remove if role in role_ids]
            if add or remove:
                run.changes.append(f"set the roles of user {email}")
                owner = ("user_id", user_ids[email])
                run.link("user_roles", "role_id", owner, [role_ids[role] for role in remove], add=False)
                run.link("user_roles", "role_id", owner, [role_ids[role] for role in add], add=True)
                run.audit(
                    "user.roles_changed",
                    ("user", user_ids[email]),
                    {"email": email, "added": add, "removed": remove},
                )

        # Users not listed keep their roles, less the deleted ones; listed users keep the roles the
        # organization made.
        deleted = system - set(desired["roles"])
        after_users = {
            email: [role for role in held if role not in deleted] for email, held in current_users.items()
        }
        for email, wanted in desired["users"].items():
            kept = [role for role in current_users.get(email, []) if role not in managed]
            after_users[email] = sorted(set(wanted) | set(kept))
        after = {**desired, "users": dict(sorted(after_users.items()))}
        exists = bool(org) or not check_mode
        return result(
            tenant,
            run.changes,
            before,
            after,
            org_id if exists else None,
            {role: role_ids[role] for role in desired["roles"]} if exists else {},
            {email: user_ids[email] for email in desired["users"]} if exists else {},
        )


def read_keys(connection: Any, role_id: str) -> list[str]:
    rows = connection.execute(
        'SELECT p."key" FROM "role_permissions" rp JOIN "permissions" p ON p."id" = rp."permission_id" '
        'WHERE rp."role_id" = %s ORDER BY 1',
        (role_id,),
    ).fetchall()
    return [key for (key,) in rows]


def result(
    tenant: Tenant,
    changes: list[str],
    before: dict[str, Any],
    after: dict[str, Any],
    org_id: str | None,
    roles: dict[str, str],
    users: dict[str, str],
) -> dict[str, Any]:
    """One organization's result. In check mode, ids of rows that do not exist yet are not returned
    (the ones drawn were rolled back)."""
    return {
        "org_slug": tenant.slug,
        "state": tenant.state,
        "changed": bool(changes),
        "changes": changes,
        "organization_id": org_id,
        "roles": roles,
        "users": users,
        "diff": {"before": before, "after": after},
    }
