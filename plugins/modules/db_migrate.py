#!/usr/bin/python
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: db_migrate
short_description: Apply Prisma migrations to PostgreSQL the way C(prisma migrate deploy) does
version_added: 0.1.0
description:
  - Applies the pending migrations of a Prisma migrations directory
    (C(<migrations_dir>/<timestamp>_<name>/migration.sql)) in name order, each in its own transaction
    together with its row in C(_prisma_migrations).
  - The history table, its columns and the SHA-256 checksums are those of the Prisma engine, and the
    module takes the engine's advisory lock, so C(prisma migrate deploy) and this module can take turns
    on one database and never run at the same time.
  - Refuses to run, before applying anything, when an applied migration's file has changed (checksum
    mismatch), when an applied migration is missing from the directory, or when the history holds a
    migration that started and did not finish (as Prisma does); the message names the migration.
  - A migration that fails is rolled back with its history row, and the task fails naming it; the
    migrations before it stay applied.
  - When the module creates C(_prisma_migrations), it takes back every privilege other roles got on it
    through default privileges, so only the migrating role (the schema owner) can change the history.
  - Migrations run inside a transaction, so a script must not contain statements that cannot
    (C(CREATE INDEX CONCURRENTLY), C(VACUUM)) or its own C(BEGIN)/C(COMMIT).
author:
  - Tenantforge engineering (@tenantforge)
options:
  migrations_dir:
    description: The Prisma migrations directory (the one holding C(migration_lock.toml)).
    type: path
    required: true
extends_documentation_fragment:
  - tenantforge.platform.database
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    description: Lists the pending migrations (RV(pending)) and checks the history; applies nothing.
    support: full
  diff_mode:
    description: The applied migrations before and after.
    support: full
requirements:
  - psycopg >= 3.1
  - boto3 (with O(dsn_secret_id))
"""

EXAMPLES = r"""
- name: Migrate the database as its owner
  tenantforge.platform.db_migrate:
    migrations_dir: "{{ playbook_dir }}/../prisma/migrations"
    dsn: "host=127.0.0.1 port=5433 dbname=tenantforge"
    dsn_secret_id: tenantforge/dev/postgres/owner
    endpoint_url: http://127.0.0.1:4566

- name: Only list what is pending
  tenantforge.platform.db_migrate:
    migrations_dir: prisma/migrations
    dsn: "postgresql://tenantforge_owner@db.internal:5432/tenantforge?sslmode=require"
  check_mode: true
  register: migrations
"""

RETURN = r"""
applied:
  description: The migrations applied by this run, in order.
  returned: always
  type: list
  elements: str
  sample: ["20261127000000_init"]
pending:
  description: In check mode, the migrations a run would apply, in order; otherwise empty.
  returned: always
  type: list
  elements: str
  sample: ["20261127000100_row_level_security"]
already_applied:
  description: The migrations the database had applied before this run.
  returned: always
  type: list
  elements: str
  sample: ["20261127000000_init"]
"""

from pathlib import Path
from typing import Any

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.tenantforge.platform.plugins.module_utils import database
from ansible_collections.tenantforge.platform.plugins.module_utils.prisma_migrations import (
    MigrationError,
    migrate,
    read_migrations,
)


def run(module: Any) -> dict[str, Any]:
    migrations = read_migrations(Path(module.params["migrations_dir"]))

    dsn = database.resolve(module.params, database.secret_reader(module), module.no_log_values.add)
    with database.connect(dsn, module.params["connect_timeout"], autocommit=True) as connection:
        return migrate(connection, migrations, module.check_mode)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"migrations_dir": {"type": "path", "required": True}, **database.CONNECTION_OPTIONS},
        required_one_of=[("dsn", "dsn_secret_id")],
        supports_check_mode=True,
    )
    if not database.HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"))
    try:
        result = run(module)
    except (MigrationError, database.DatabaseConnectionError) as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
