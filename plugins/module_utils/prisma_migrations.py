# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Prisma's migration layout applied the way `prisma migrate deploy` applies it, each migration in a
transaction, recorded in `_prisma_migrations` with the same columns and checksums, so that the Prisma
CLI and the db_migrate module can take turns on one database."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by the module with missing_required_lib
    pass

# The history table as the Prisma engine creates it.
HISTORY_DDL = """
CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)
"""
# The session advisory lock the Prisma engine takes on PostgreSQL: the CLI and this module never
# migrate one database at the same time.
ADVISORY_LOCK = 72707369
# A migration directory: Prisma's <timestamp>_<name>.
NAME = re.compile(r"^[0-9]{14}_[A-Za-z0-9_-]+$")


class MigrationError(Exception):
    """Refused or failed migration; the message names the migration."""


@dataclass(frozen=True)
class Migration:
    name: str
    script: str
    checksum: str

    def matches(self, checksum: str) -> bool:
        """Prisma accepts the checksum of the script with either line ending, so a checkout that
        converted them is not a changed migration."""
        variants = {
            self.script,
            self.script.replace("\r\n", "\n"),
            self.script.replace("\r\n", "\n").replace("\n", "\r\n"),
        }
        return checksum in {sha256(text) for text in variants}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_migrations(directory: Path) -> list[Migration]:
    """The migrations of a Prisma migrations directory, in name (time) order."""
    if not directory.is_dir():
        raise MigrationError(f"migrations_dir {directory} is not a directory")
    lock = directory / "migration_lock.toml"
    if lock.exists():
        provider = re.search(r'^\s*provider\s*=\s*"([^"]+)"', lock.read_text(), re.MULTILINE)
        if not provider or provider.group(1) != "postgresql":
            raise MigrationError(f"{lock} does not name the provider postgresql")
    migrations = []
    for path in sorted(item for item in directory.iterdir() if item.is_dir()):
        if not NAME.fullmatch(path.name):
            raise MigrationError(
                f"{path.name} in {directory} is not a migration directory (<14 digits>_<name>)"
            )
        script = path / "migration.sql"
        if not script.is_file():
            raise MigrationError(f"migration {path.name} has no migration.sql")
        text = script.read_bytes().decode()
        migrations.append(Migration(path.name, text, sha256(text)))
    return migrations


@dataclass
class Plan:
    applied: list[str]
    pending: list[Migration]


def plan(connection: Any, migrations: list[Migration]) -> Plan:
    """What the database has applied and what is pending; refuses the history Prisma would refuse."""
    exists = connection.execute("SELECT to_regclass('_prisma_migrations') IS NOT NULL").fetchone()[0]
    rows = []
    if exists:
        rows = connection.execute(
            'SELECT migration_name, checksum, finished_at IS NOT NULL, started_at FROM "_prisma_migrations" '
            "WHERE rolled_back_at IS NULL ORDER BY started_at, migration_name"
        ).fetchall()
    local = {migration.name: migration for migration in migrations}
    applied = []
    for name, checksum, finished, started in rows:
        if not finished:
            raise MigrationError(
                f"migration {name} started at {started:%Y-%m-%d %H:%M:%S%z} and did not finish; repair the "
                f"database, then mark it with `prisma migrate resolve --applied {name}` or --rolled-back"
            )
        if name not in local:
            raise MigrationError(
                f"migration {name} is applied to the database but missing from the migrations directory"
            )
        if not local[name].matches(checksum):
            raise MigrationError(
                f"migration {name} was modified after it was applied (checksum {checksum[:12]}... in the "
                f"database, {local[name].checksum[:12]}... in the file); restore the file and put the change "
                "in a new migration"
            )
        applied.append(name)
    return Plan(applied, [migration for migration in migrations if migration.name not in applied])


def ensure_history(connection: Any) -> bool:
    """Creates `_prisma_migrations` when missing. Only the migrating role may touch the history: the
    runtime role's default privileges on the owner's tables are taken back from it."""
    if connection.execute("SELECT to_regclass('_prisma_migrations') IS NOT NULL").fetchone()[0]:
        return False
    with connection.transaction():
        connection.execute(HISTORY_DDL)
        grantees = connection.execute(
            "SELECT DISTINCT grantee::regrole::text FROM pg_class, aclexplode(relacl) "
            "WHERE oid = '_prisma_migrations'::regclass AND grantee <> relowner AND grantee <> 0"
        ).fetchall()
        for (grantee,) in grantees:
            connection.execute(
                sql.SQL('REVOKE ALL ON "_prisma_migrations" FROM {}').format(sql.Identifier(grantee))
            )
    return True


def apply(connection: Any, migration: Migration) -> None:
    """One migration and its history row in one transaction: either both or neither."""
    try:
        with connection.transaction():
            connection.execute(
                'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count) '
                "VALUES (%s, %s, %s, clock_timestamp(), 0)",
                (str(uuid.uuid4()), migration.checksum, migration.name),
            )
            # Without parameters psycopg sends the script as one simple query: every statement runs.
            connection.execute(migration.script.encode())
            connection.execute(
                'UPDATE "_prisma_migrations" SET finished_at = clock_timestamp(), applied_steps_count = 1 '
                "WHERE migration_name = %s AND finished_at IS NULL",
                (migration.name,),
            )
    except psycopg.Error as exc:
        detail = exc.diag.message_primary or type(exc).__name__
        position = (
            f" (statement at character {exc.diag.statement_position})" if exc.diag.statement_position else ""
        )
        raise MigrationError(
            f"migration {migration.name} failed and was rolled back: {detail}{position}"
        ) from None


def migrate(connection: Any, migrations: list[Migration], check_mode: bool) -> dict[str, Any]:
    """Applies the pending migrations in order under Prisma's advisory lock (check mode: lists them)."""
    connection.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK,))
    try:
        current = plan(connection, migrations)
        applied_now: list[str] = []
        if current.pending and not check_mode:
            ensure_history(connection)
            for migration in current.pending:
                apply(connection, migration)
                applied_now.append(migration.name)
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK,))
    return {
        "changed": bool(current.pending),
        "applied": applied_now,
        "pending": [migration.name for migration in current.pending] if check_mode else [],
        "already_applied": current.applied,
        "diff": {
            "before": {"applied": current.applied},
            "after": {"applied": current.applied + [migration.name for migration in current.pending]},
        },
    }
