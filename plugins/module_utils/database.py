# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The PostgreSQL connection of our database modules: a libpq string or URL (`dsn`), a Secrets Manager
secret holding one or the credentials to add to it (`dsn_secret_id`), or both."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.tenantforge.platform.plugins.module_utils.secretsmanager import SecretsManagerClient

try:
    import psycopg
    from psycopg import conninfo

    HAS_PSYCOPG = True
except ImportError:  # reported by the module with missing_required_lib
    HAS_PSYCOPG = False

# The options every database module takes; neither connection option is ever logged (the contract
# of issue 5): `dsn` holds a password, and the secret's name says where one is.
CONNECTION_OPTIONS: dict[str, Any] = {
    "dsn": {"type": "str", "no_log": True},
    "dsn_secret_id": {"type": "str", "no_log": True},
    "connect_timeout": {"type": "int", "default": 10},
}

# Keys of a secret's JSON object that hold a whole connection string, and the libpq parameters that
# the other keys (the shape of our credentials secrets and of RDS') stand for.
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


class DatabaseConnectionError(Exception):
    """A connection that cannot be built or opened; the message never holds a password."""


def secret_parameters(value: str, secret_id: str) -> dict[str, str]:
    """libpq parameters from a secret's string: a connection string or URL, a JSON object holding one
    (`dsn`, `url` or `DATABASE_URL`), or a JSON object of credentials (`username`, `password`, and
    optionally `host`, `port`, `dbname`/`database`)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise DatabaseConnectionError(
                f"secret {secret_id} is neither JSON nor a connection string"
            ) from None
        for key in DSN_KEYS:
            if isinstance(document.get(key), str):
                return parse(document[key], f"secret {secret_id} ({key})")
        found = {PARAMETER_KEYS[key]: str(item) for key, item in document.items() if key in PARAMETER_KEYS}
        if not found:
            raise DatabaseConnectionError(
                f"secret {secret_id} holds no connection: expected one of {', '.join(DSN_KEYS)} or "
                "username and password"
            )
        return found
    return parse(text, f"secret {secret_id}")


def parse(dsn: str, where: str) -> dict[str, str]:
    try:
        return {key: str(item) for key, item in conninfo.conninfo_to_dict(dsn).items() if item is not None}
    except psycopg.ProgrammingError:
        # psycopg's message quotes the string, password included.
        raise DatabaseConnectionError(f"{where} is not a valid libpq connection string or URL") from None


def connection_string(dsn: str | None, secret: tuple[str, str] | None) -> str:
    """The connection string: `dsn`, with what the secret (id, value) holds on top of it."""
    parameters = parse(dsn, "dsn") if dsn else {}
    if secret is not None:
        parameters.update(secret_parameters(secret[1], secret[0]))
    if not parameters:
        raise DatabaseConnectionError("one of dsn and dsn_secret_id is required")
    return conninfo.make_conninfo("", **parameters)


def resolve(params: dict[str, Any], read_secret: Callable[[str], str], hide: Callable[[str], None]) -> str:
    """The module's connection string from its parameters; every secret part is hidden from logs."""
    secret = None
    if params.get("dsn_secret_id"):
        value = read_secret(params["dsn_secret_id"])
        hide(value)
        secret = (params["dsn_secret_id"], value)
    dsn = connection_string(params.get("dsn"), secret)
    hide(dsn)
    password = conninfo.conninfo_to_dict(dsn).get("password")
    if password:
        hide(str(password))
    return dsn


def secret_reader(module: Any) -> Callable[[str], str]:
    """Reads a secret's string through the AnsibleAWSModule's Secrets Manager client, when needed."""

    class Reader(SecretsManagerClient):
        error = DatabaseConnectionError

    def read(secret_id: str) -> str:
        client = module.client("secretsmanager", retry_decorator=AWSRetry.jittered_backoff())
        response = Reader(client).call("get_secret_value", f"secret {secret_id}", SecretId=secret_id)
        if "SecretString" not in response:
            raise DatabaseConnectionError(f"secret {secret_id} holds binary data, not a connection string")
        return str(response["SecretString"])

    return read


def describe(exc: Exception) -> str:
    """A database error's primary message (and SQLSTATE), without the statement or its parameters."""
    diag = getattr(exc, "diag", None)
    message = getattr(diag, "message_primary", None) or type(exc).__name__
    state = getattr(diag, "sqlstate", None)
    return f"{message} (SQLSTATE {state})" if state else message


def connect(dsn: str, timeout: int, **kwargs: Any) -> Any:
    """A psycopg connection; errors name the server, never the password."""
    try:
        return psycopg.connect(dsn, connect_timeout=timeout, **kwargs)
    except psycopg.OperationalError as exc:
        where = conninfo.conninfo_to_dict(dsn)
        address = f"{where.get('host', 'localhost')}:{where.get('port', 5432)}/{where.get('dbname', '')}"
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        password = where.get("password")
        if password:
            reason = reason.replace(str(password), "********")
        raise DatabaseConnectionError(
            f"cannot connect to PostgreSQL at {address} as {where.get('user', '')}: {reason}"
        ) from None
