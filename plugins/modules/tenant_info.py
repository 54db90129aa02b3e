#!/usr/bin/python
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tenant_info
short_description: List the organizations of the Tenantforge database, or one with its roles and users
version_added: 0.1.0
description:
  - Without O(org_slug), lists every organization (slug, id, name, status, creation time), by slug.
  - With O(org_slug), returns that organization with its roles (permissions, system flag) and its
    users (status, roles), or null when there is none.
  - Reads only, as the schema owner, in a read-only transaction.
author:
  - Tenantforge engineering (@tenantforge)
options:
  org_slug:
    description: The organization to describe.
    type: str
extends_documentation_fragment:
  - tenantforge.platform.database
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    description: Reads only; the same in check mode.
    support: full
requirements:
  - psycopg >= 3.1
"""

EXAMPLES = r"""
- name: Every organization
  tenantforge.platform.tenant_info:
    dsn: "{{ owner_dsn }}"
  register: tenants

- name: One organization, its roles and users
  tenantforge.platform.tenant_info:
    org_slug: acme
    dsn: "{{ owner_dsn }}"
"""

RETURN = r"""
organizations:
  description: Every organization, by slug.
  returned: without O(org_slug)
  type: list
  elements: dict
  sample: [{"slug": "acme", "id": "5b0c3f5e-0d1c-4a2b-9a51-2f7f3b1c9e10", "name": "ACME", "status": "active",
            "created_at": "2026-11-27T10:00:00+00:00"}]
organization:
  description:
    - The organization, with C(roles) (name to C(permissions) and C(is_system)) and C(users) (email to
      C(status) and C(roles)); null when it does not exist.
  returned: with O(org_slug)
  type: dict
"""

from typing import Any

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.tenantforge.platform.plugins.module_utils import database
from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import read_state, set_organization

COLUMNS = 'SELECT "id"::text, "slug", "name", "status"::text, "created_at" FROM "organizations"'


def describe(connection: Any, slug: str) -> dict[str, Any] | None:
    row = connection.execute(COLUMNS + ' WHERE "slug" = %s', (slug,)).fetchone()
    if row is None:
        return None
    set_organization(connection, row[0])
    state = read_state(connection, row[:4])[0]
    system = set(state["roles"])
    roles = connection.execute('SELECT "name" FROM "roles" ORDER BY 1').fetchall()
    users = connection.execute('SELECT "email", "status"::text FROM "users" ORDER BY 1').fetchall()
    held = dict(state["users"])
    return {
        **organization(row),
        "roles": {
            name: {
                "is_system": name in system,
                "permissions": state["roles"].get(name) or permissions(connection, name),
            }
            for (name,) in roles
        },
        "users": {email: {"status": status, "roles": held.get(email, [])} for email, status in users},
    }


def permissions(connection: Any, role: str) -> list[str]:
    rows = connection.execute(
        'SELECT p."key" FROM "roles" r JOIN "role_permissions" rp ON rp."role_id" = r."id" '
        'JOIN "permissions" p ON p."id" = rp."permission_id" WHERE r."name" = %s ORDER BY 1',
        (role,),
    ).fetchall()
    return [key for (key,) in rows]


def organization(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "slug": row[1], "name": row[2], "status": row[3], "created_at": row[4].isoformat()}


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"org_slug": {"type": "str"}, **database.CONNECTION_OPTIONS},
        required_one_of=[("dsn", "dsn_secret_id")],
        supports_check_mode=True,
    )
    if not database.HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"))
    try:
        dsn = database.resolve(module.params, database.secret_reader(module), module.no_log_values.add)
        with database.connect(dsn, module.params["connect_timeout"], autocommit=True) as connection:
            connection.read_only = True
            with connection.transaction():
                if module.params["org_slug"]:
                    result: dict[str, Any] = {"organization": describe(connection, module.params["org_slug"])}
                else:
                    rows = connection.execute(COLUMNS + ' ORDER BY "slug"').fetchall()
                    result = {"organizations": [organization(row) for row in rows]}
    except database.DatabaseConnectionError as exc:
        module.fail_json(msg=str(exc))
    except database.psycopg.Error as exc:
        module.fail_json(msg=f"reading the organizations failed: {database.describe(exc)}")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
