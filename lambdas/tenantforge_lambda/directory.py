"""Who a user is, read from the database as the application, under row-level security.

Everything about a user is read in one transaction with their organization set: the organization's
slug and status, the user's status, role names and the permissions those roles grant, flattened. The
lists are sorted in Python (the database's collation could order ``tasks:create`` differently from
the verifier's comparison), duplicates removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from tenantforge_lambda.database import Database

_SUBJECT = """
SELECT o.slug, o.status::text, u.id::text, u.email, u.status::text,
       ARRAY(SELECT r.name FROM user_roles AS ur
             JOIN roles AS r ON r.organization_id = ur.organization_id AND r.id = ur.role_id
             WHERE ur.organization_id = u.organization_id AND ur.user_id = u.id),
       ARRAY(SELECT p.key FROM user_roles AS ur
             JOIN role_permissions AS rp ON rp.organization_id = ur.organization_id AND rp.role_id = ur.role_id
             JOIN permissions AS p ON p.id = rp.permission_id
             WHERE ur.organization_id = u.organization_id AND ur.user_id = u.id),
       c.password_hash
FROM organizations AS o
JOIN users AS u ON u.organization_id = o.id
LEFT JOIN user_credentials AS c ON c.organization_id = u.organization_id AND c.user_id = u.id
WHERE o.id = %(org_id)s AND {condition}
"""
BY_EMAIL = _SUBJECT.format(condition="u.email = %(email)s")
BY_ID = _SUBJECT.format(condition="u.id = %(user_id)s")


@dataclass(frozen=True)
class Subject:
    """A user as a token describes them, with the statuses that decide whether they may have one."""

    org_id: str
    org_slug: str
    org_status: str
    user_id: str
    email: str
    user_status: str
    roles: tuple[str, ...]
    permissions: tuple[str, ...]
    password_hash: str | None = None

    @property
    def active(self) -> bool:
        return self.org_status == "active" and self.user_status == "active"


def normalize_email(email: str) -> str:
    """Emails are stored lower-case (the users_email_check constraint)."""
    return email.strip().lower()


def find_organization(connection: psycopg.Connection[Any], slug: str) -> str | None:
    """The id of the organization with ``slug``, through the one lookup the application may make
    before an organization is set (organization_for_sign_in)."""
    row = connection.execute("SELECT id::text FROM organization_for_sign_in(%s)", (slug,)).fetchone()
    return None if row is None else str(row[0])


def subject_by_email(database: Database, org_slug: str, email: str) -> Subject | None:
    """The user ``email`` of organization ``org_slug``, or None when either does not exist."""
    with database.transaction(None) as connection:
        org_id = find_organization(connection, org_slug)
        if org_id is None:
            return None
        connection.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
        row = connection.execute(BY_EMAIL, {"org_id": org_id, "email": normalize_email(email)}).fetchone()
    return None if row is None else _subject(org_id, row)


def subject_by_id(database: Database, org_id: str, user_id: str) -> Subject | None:
    """The user ``user_id`` of organization ``org_id`` as they are now, or None when gone."""
    with database.transaction(org_id) as connection:
        row = connection.execute(BY_ID, {"org_id": org_id, "user_id": user_id}).fetchone()
    return None if row is None else _subject(org_id, row)


def _subject(org_id: str, row: tuple[Any, ...]) -> Subject:
    slug, org_status, user_id, email, user_status, roles, permissions, password_hash = row
    return Subject(
        org_id=org_id,
        org_slug=slug,
        org_status=org_status,
        user_id=user_id,
        email=email,
        user_status=user_status,
        roles=tuple(sorted(set(roles))),
        permissions=tuple(sorted(set(permissions))),
        password_hash=password_hash,
    )


def replace_password_hash(database: Database, subject: Subject, password_hash: str) -> None:
    """Store a new hash of the user's password (a rehash with current parameters, or a new password)."""
    with database.transaction(subject.org_id) as connection:
        connection.execute(
            "INSERT INTO user_credentials (organization_id, user_id, password_hash) VALUES (%s, %s, %s) "
            "ON CONFLICT (organization_id, user_id) "
            "DO UPDATE SET password_hash = excluded.password_hash, updated_at = now()",
            (subject.org_id, subject.user_id, password_hash),
        )


def record_event(database: Database, subject: Subject, action: str) -> None:
    """An audit event by the user about themselves (``user.sign_in``)."""
    with database.transaction(subject.org_id) as connection:
        connection.execute(
            "INSERT INTO audit_events (organization_id, actor_id, action, target_type, target_id) "
            "VALUES (%s, %s, %s, 'user', %s)",
            (subject.org_id, subject.user_id, action, subject.user_id),
        )
