"""Issuing and refreshing the platform's access tokens.

* :meth:`Issuer.issue` signs a token for a user found by organization slug and email, with the roles
  and permissions the database holds for them now (the CLI and the sign-in use it).
* :meth:`Issuer.sign_in` checks the user's password first (Argon2id), then issues.
* :meth:`Issuer.refresh` takes a still-valid token (verified exactly as the authorizer verifies it,
  then ``exp`` strictly, without the leeway: an expired token cannot be refreshed) and issues a new one
  with a fresh ``exp``, re-reading the user's roles and permissions and the organization's status, so
  a revoked permission or a suspended organization takes effect at the next refresh.

Times: ``iat`` = ``nbf`` = now, ``exp`` = now + ``JWT_IDLE_TTL_SECONDS`` but never later than
``auth_time`` + ``JWT_MAX_SESSION_SECONDS``; ``auth_time`` is the sign-in's and is carried by every
refresh. Every refusal is an :class:`IssueError` whose ``reason`` the caller logs and maps to a status.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenantforge_lambda import directory, passwords
from tenantforge_lambda.config import Settings
from tenantforge_lambda.database import Database
from tenantforge_lambda.directory import Subject
from tenantforge_lambda.signing import SigningKey
from tenantforge_lambda.tokens import LIST_ITEM, SLUG, KeyLookup, TokenError, verify_token

MAX_EMAIL_LENGTH = 320


class IssueError(Exception):
    """No token. ``reason``: ``invalid_credentials``, ``unknown_user``, ``organization_suspended``,
    ``user_disabled``, ``session_expired``, ``invalid_token:<verifier reason>``, ``bad_input:<field>``
    or ``unrepresentable:<claim>``."""

    def __init__(self, reason: str, subject: Subject | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subject = subject


@dataclass(frozen=True)
class Issued:
    """A signed token and what the caller may tell about it."""

    token: str
    claims: dict[str, Any]

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])


class Issuer:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        signing_key: Callable[[], SigningKey],
        keys: KeyLookup,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.database = database
        self.signing_key = signing_key
        self.keys = keys
        self.clock = clock

    # ------------------------------------------------------------------------------------ entry points

    def issue(self, org_slug: str, email: str) -> Issued:
        """A token for a new session of user ``email`` in ``org_slug`` (no password: the caller is
        trusted, as the CLI's operator is)."""
        subject = self._find(org_slug, email)
        if subject is None:
            raise IssueError("unknown_user")
        self._check_active(subject)
        now = int(self.clock())
        return self._sign(subject, now=now, auth_time=now)

    def sign_in(self, org_slug: str, email: str, password: str) -> Issued:
        """A token for a new session, when ``password`` is the user's. Unknown organization, unknown
        user, no password set and a wrong password are one reason, ``invalid_credentials``, and cost
        the same hash. Statuses are told only to whoever gave the right password."""
        subject = self._find(org_slug, email)
        password_hash = subject.password_hash if subject is not None else None
        if not passwords.verify(password_hash, password) or subject is None or password_hash is None:
            raise IssueError("invalid_credentials", subject)
        self._check_active(subject)
        if passwords.needs_rehash(password_hash):
            directory.replace_password_hash(self.database, subject, passwords.hash_password(password))
        directory.record_event(self.database, subject, "user.sign_in")
        now = int(self.clock())
        return self._sign(subject, now=now, auth_time=now)

    def refresh(self, token: str) -> Issued:
        """A new token for the session of ``token``, which must still be valid."""
        now = self.clock()
        try:
            claims = verify_token(token, self.settings, self.keys, now)
        except TokenError as error:
            raise IssueError(f"invalid_token:{error.reason}") from None
        if claims.exp <= now:
            raise IssueError("invalid_token:expired")
        try:
            uuid.UUID(claims.sub)
        except ValueError:
            raise IssueError("unknown_user") from None
        subject = directory.subject_by_id(self.database, claims.org_id, claims.sub)
        if subject is None:
            raise IssueError("unknown_user")
        self._check_active(subject)
        issued_at = int(now)
        if claims.auth_time + self.settings.max_session_seconds <= issued_at:
            raise IssueError("session_expired", subject)
        return self._sign(subject, now=issued_at, auth_time=claims.auth_time)

    # -------------------------------------------------------------------------------------- internals

    def _find(self, org_slug: str, email: str) -> Subject | None:
        if not isinstance(org_slug, str) or not SLUG.fullmatch(org_slug):
            return None
        if not isinstance(email, str) or not 0 < len(email) <= MAX_EMAIL_LENGTH:
            return None
        return directory.subject_by_email(self.database, org_slug, email)

    @staticmethod
    def _check_active(subject: Subject) -> None:
        if subject.org_status != "active":
            raise IssueError("organization_suspended", subject)
        if subject.user_status != "active":
            raise IssueError("user_disabled", subject)

    def _sign(self, subject: Subject, now: int, auth_time: int) -> Issued:
        # A role or permission the verifier's list rule refuses (a comma, surrounding blanks) could not
        # travel in the authorizer's comma-joined context: no token is issued with one.
        for name, items in (("roles", subject.roles), ("permissions", subject.permissions)):
            if not all(LIST_ITEM.fullmatch(item) for item in items):
                raise IssueError(f"unrepresentable:{name}", subject)
        settings = self.settings
        claims: dict[str, Any] = {
            "iss": settings.issuer,
            "aud": settings.audience,
            "sub": subject.user_id,
            "org_id": subject.org_id,
            "org_slug": subject.org_slug,
            "permissions": list(subject.permissions),
            "roles": list(subject.roles),
            "iat": now,
            "nbf": now,
            "exp": min(now + settings.idle_ttl_seconds, auth_time + settings.max_session_seconds),
            "jti": str(uuid.uuid4()),
            "auth_time": auth_time,
        }
        return Issued(self.signing_key().sign(claims), claims)


def from_env() -> Issuer:
    """The issuer of a function or the CLI: ``JWT_*`` settings (``JWT_SIGNING_SECRET_ID`` required),
    ``DATABASE_URL`` / ``DATABASE_SECRET_ID``, keys from Secrets Manager."""
    from tenantforge_lambda import secrets
    from tenantforge_lambda.config import ConfigError
    from tenantforge_lambda.jwks import JwksCache
    from tenantforge_lambda.signing import SigningKeyCache

    settings = Settings.from_env()
    if not settings.signing_secret_id:
        raise ConfigError("JWT_SIGNING_SECRET_ID is required to issue tokens")
    signing = SigningKeyCache(
        secrets.reader(settings.signing_secret_id), settings.algorithms, settings.jwks_cache_seconds
    )
    return Issuer(settings, Database.from_env(), signing.get, JwksCache.from_settings(settings).get)
