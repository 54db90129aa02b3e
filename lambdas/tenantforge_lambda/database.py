"""PostgreSQL access of the functions: one connection per container, every statement in a transaction
of one organization.

Configuration (issue 7's contract): ``DATABASE_URL`` (a libpq URL or connection string),
``DATABASE_SECRET_ID`` (a Secrets Manager secret), or both: the secret's parts then go on top of the
URL, so the URL can name the server (PgBouncer) and the secret hold only the login. The secret is a
connection string, a JSON object with one (``dsn``, ``url`` or ``DATABASE_URL``), or a JSON object of
credentials (``username``, ``password``, and optionally ``host``, ``port``, ``dbname``), the shapes
the collection's database modules read too.

Behind PgBouncer's transaction pooling: no server-side prepared statements, and the organization is
set per transaction (``set_config('app.current_org_id', ..., true)``), so it never reaches the next
client of the server connection. A connection that failed is dropped and the next call opens a new
one; :class:`DatabaseUnavailable` tells the caller to answer 503.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo

DSN_KEYS = ("dsn", "url", "DATABASE_URL")
PARAMETER_KEYS = {
    "username": "user",
    "user": "user",
    "password": "password",
    "host": "host",
    "port": "port",
    "dbname": "dbname",
    "database": "dbname",
}
CONNECT_TIMEOUT_SECONDS = 5


class DatabaseConfigError(ValueError):
    """The database settings are missing or invalid; the message names the variable, never a value."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached or failed mid-transaction (the caller answers 503)."""


def connection_string(environ: Mapping[str, str], read_secret: Callable[[str], str]) -> str:
    """The connection string from ``DATABASE_URL`` and ``DATABASE_SECRET_ID``."""
    url = environ.get("DATABASE_URL", "").strip()
    secret_id = environ.get("DATABASE_SECRET_ID", "").strip()
    if not url and not secret_id:
        raise DatabaseConfigError("one of DATABASE_URL and DATABASE_SECRET_ID is required")
    parameters = _parse(url, "DATABASE_URL") if url else {}
    if secret_id:
        parameters.update(_secret_parameters(read_secret(secret_id), "DATABASE_SECRET_ID"))
    return conninfo.make_conninfo("", **parameters)


def _secret_parameters(value: str, name: str) -> dict[str, str]:
    text = value.strip()
    if not text.startswith("{"):
        return _parse(text, name)
    try:
        document = json.loads(text)
    except ValueError:
        raise DatabaseConfigError(f"the secret of {name} is neither JSON nor a connection string") from None
    if not isinstance(document, dict):
        raise DatabaseConfigError(f"the secret of {name} is not a JSON object")
    for key in DSN_KEYS:
        if isinstance(document.get(key), str):
            return _parse(document[key], name)
    found = {PARAMETER_KEYS[key]: str(item) for key, item in document.items() if key in PARAMETER_KEYS}
    if not found:
        raise DatabaseConfigError(
            f"the secret of {name} holds no connection: expected one of {', '.join(DSN_KEYS)} "
            "or username and password"
        )
    return found


def _parse(dsn: str, name: str) -> dict[str, str]:
    try:
        return {key: str(item) for key, item in conninfo.conninfo_to_dict(dsn).items() if item is not None}
    except psycopg.ProgrammingError:
        # psycopg's message quotes the string, password included.
        raise DatabaseConfigError(f"{name} is not a valid libpq connection string or URL") from None


class Database:
    """The container's connection, opened on first use and reopened after a failure."""

    def __init__(self, dsn: Callable[[], str], connect_timeout: int = CONNECT_TIMEOUT_SECONDS) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._connection: psycopg.Connection[Any] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Database:
        from tenantforge_lambda import secrets

        env = dict(os.environ if environ is None else environ)
        # Checked now, read when first needed (a cold start need not reach Secrets Manager).
        if not env.get("DATABASE_URL", "").strip() and not env.get("DATABASE_SECRET_ID", "").strip():
            raise DatabaseConfigError("one of DATABASE_URL and DATABASE_SECRET_ID is required")
        return cls(lambda: connection_string(env, secrets.secret_string))

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(
                    self._dsn(), connect_timeout=self._connect_timeout, prepare_threshold=None
                )
            except psycopg.OperationalError:
                # The message may quote the connection string; the class name is enough for a log.
                raise DatabaseUnavailable("cannot connect to PostgreSQL") from None
        return self._connection

    @contextmanager
    def transaction(self, org_id: str | None) -> Iterator[psycopg.Connection[Any]]:
        """A transaction with ``app.current_org_id`` set to ``org_id`` (None: no organization, so no
        tenant row is visible). Commits when the block ends, rolls back on an exception."""
        connection = self._connect()
        try:
            with connection.transaction():
                if org_id is not None:
                    connection.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
                yield connection
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self.close()
            raise DatabaseUnavailable("the PostgreSQL connection failed") from None

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None
