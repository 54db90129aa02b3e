#!/usr/bin/python
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tenant_bootstrap
short_description: Converge organizations, their roles, permissions, users and memberships
version_added: 0.1.0
description:
  - Brings one organization (O(org_slug)) or many (O(tenants)) of the Tenantforge database
    (C(prisma/schema.prisma)) to the declared state, that is the name and status of the organization,
    its roles and their permissions, its users and their roles.
  - Each organization converges in one transaction, under an advisory lock on its slug, so two runs
    for one organization at once leave exactly one organization and no duplicate, and runs for
    different organizations do not wait for each other.
  - The declared roles are system roles. The module creates them, sets their permissions exactly,
    and deletes system roles no longer declared. Roles an organization created itself are left alone,
    unless the module declares a role of the same name, which it then adopts as a system role.
  - Listed users (O(admin_email) with the role C(owner), and O(users)) are created when missing and
    get exactly their declared roles among the system roles. Other users, and their roles, are left
    alone.
  - Each change writes an audit event (C(audit_events), actor none) in the organization.
    O(state=absent) deletes the organization and everything it owns, audit events included.
  - Every input is checked before anything is written (slug pattern, email addresses, permission
    keys against the catalog of the C(permissions) table, roles named in a user's list, duplicate
    users or organizations, lengths); the message names the field.
  - Connects as the schema owner (C(tenantforge_owner)), which row-level security confines to one
    organization at a time like any session; see C(prisma/migrations).
author:
  - Tenantforge engineering (@tenantforge)
options:
  org_slug:
    description:
      - The organization's slug, 3 to 63 lower-case letters, digits and inner hyphens.
      - One of O(org_slug) and O(tenants) is required.
    type: str
  org_name:
    description: Display name, 1 to 200 characters. Required unless O(state=absent).
    type: str
  state:
    description:
      - V(present) (active), V(suspended) (kept, but its status says it may not be used) or V(absent).
    type: str
    choices: [present, suspended, absent]
    default: present
  admin_email:
    description: The organization's first administrator, given the role C(owner).
    type: str
  roles:
    description:
      - Role name to the permission keys it grants.
      - Defaults to C(owner) (every key), C(admin) (all but C(org:write)), C(member) (tasks, and
        reading users, roles and the organization) and C(viewer) (read only).
    type: dict
  users:
    description: Users of the organization and the declared roles each holds.
    type: list
    elements: dict
    default: []
    suboptions:
      email:
        description: Email address; stored lower-case.
        type: str
        required: true
      roles:
        description: Names of declared roles.
        type: list
        elements: str
        default: []
  tenants:
    description:
      - Many organizations in one call, each a dict of O(org_slug), O(org_name), O(state),
        O(admin_email), O(roles) and O(users).
      - Every organization is checked before any is written.
    type: list
    elements: dict
extends_documentation_fragment:
  - tenantforge.platform.database
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    description: Runs the same transaction and rolls it back; reports exactly what a run would change.
    support: full
  diff_mode:
    description: The organization's name, status, system roles with their permissions, and users with their roles, before and after.
    support: full
requirements:
  - psycopg >= 3.1
  - boto3 (with O(dsn_secret_id))
"""

EXAMPLES = r"""
- name: An organization with the default roles and two users
  tenantforge.platform.tenant_bootstrap:
    org_slug: acme
    org_name: ACME Corporation
    admin_email: ada@acme.example
    users:
      - {email: bob@acme.example, roles: [member]}
      - {email: eve@acme.example, roles: [viewer]}
    dsn: "host=127.0.0.1 port=5433 dbname=tenantforge"
    dsn_secret_id: tenantforge/dev/postgres/owner

- name: Suspend it
  tenantforge.platform.tenant_bootstrap:
    org_slug: acme
    org_name: ACME Corporation
    state: suspended
    dsn: "{{ owner_dsn }}"

- name: Converge every declared tenant in one call
  tenantforge.platform.tenant_bootstrap:
    tenants: "{{ tenants }}"
    dsn: "{{ owner_dsn }}"
"""

RETURN = r"""
organization_id:
  description: Id of the organization (O(org_slug)); null when absent, or new in check mode.
  returned: with O(org_slug)
  type: str
  sample: 5b0c3f5e-0d1c-4a2b-9a51-2f7f3b1c9e10
roles:
  description: Declared role name to its id (empty in check mode for a new organization).
  returned: with O(org_slug)
  type: dict
users:
  description: Declared user email to its id (empty in check mode for a new organization).
  returned: with O(org_slug)
  type: dict
changes:
  description: What was changed (or would be, in check mode), naming roles and users.
  returned: with O(org_slug)
  type: list
  elements: str
  sample: ["create organization acme", "create role owner", "set the permissions of role owner"]
tenants:
  description: The result of each organization, in order, with the keys above and C(org_slug), C(state), C(changed).
  returned: always
  type: list
  elements: dict
"""

from typing import Any

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.tenantforge.platform.plugins.module_utils import database
from ansible_collections.tenantforge.platform.plugins.module_utils.tenants import (
    TenantInputError,
    check_permissions,
    check_tenants,
    converge,
)

TENANT_KEYS = ("org_slug", "org_name", "state", "admin_email", "roles", "users")


def argument_spec() -> dict[str, Any]:
    return {
        "org_slug": {"type": "str"},
        "org_name": {"type": "str"},
        "state": {"type": "str", "choices": ["present", "suspended", "absent"], "default": "present"},
        "admin_email": {"type": "str"},
        "roles": {"type": "dict"},
        "users": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "email": {"type": "str", "required": True},
                "roles": {"type": "list", "elements": "str", "default": []},
            },
        },
        "tenants": {"type": "list", "elements": "dict"},
        **database.CONNECTION_OPTIONS,
    }


def run(module: Any) -> dict[str, Any]:
    params = module.params
    single = params["tenants"] is None
    specs = [{key: params[key] for key in TENANT_KEYS}] if single else params["tenants"]
    for index, spec in enumerate(specs):
        unknown = sorted(set(spec) - set(TENANT_KEYS))
        if unknown:
            raise TenantInputError(
                f"tenants[{index}]: unknown key {unknown[0]} (known: {', '.join(TENANT_KEYS)})"
            )
    tenants = check_tenants(specs, prefix=not single)
    dsn = database.resolve(params, database.secret_reader(module), module.no_log_values.add)
    with database.connect(dsn, params["connect_timeout"], autocommit=True) as connection:
        catalog = check_permissions(connection, tenants, prefix=not single)
        results = [converge(connection, tenant, catalog, module.check_mode) for tenant in tenants]
    outcome: dict[str, Any] = {"changed": any(item["changed"] for item in results)}
    diffs = [item.pop("diff") for item in results]
    outcome["tenants"] = results
    if single:
        outcome.update({key: results[0][key] for key in ("organization_id", "roles", "users", "changes")})
        outcome["diff"] = diffs[0]
    else:
        outcome["diff"] = {
            "before": {item["org_slug"]: diff["before"] for item, diff in zip(results, diffs, strict=True)},
            "after": {item["org_slug"]: diff["after"] for item, diff in zip(results, diffs, strict=True)},
        }
    return outcome


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("org_slug", "tenants")],
        required_one_of=[("org_slug", "tenants"), ("dsn", "dsn_secret_id")],
        supports_check_mode=True,
    )
    if not database.HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"))
    try:
        result = run(module)
    except (TenantInputError, database.DatabaseConnectionError) as exc:
        module.fail_json(msg=str(exc))
    except database.psycopg.Error as exc:
        module.fail_json(msg=f"the database refused the change: {database.describe(exc)}")
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
