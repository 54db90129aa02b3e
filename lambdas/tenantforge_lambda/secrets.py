"""Secrets Manager access of the functions: one client per container, created on first use.

boto3 honours ``AWS_ENDPOINT_URL``, so the same code reads the local emulator. Short timeouts and the
standard retry mode: a function waiting on a slow store holds a request (and its caller) hostage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_clients: list[Any] = []


def client() -> Any:
    """The container's Secrets Manager client (boto3 is imported here, not at cold start)."""
    if not _clients:
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 3})
        _clients.append(boto3.client("secretsmanager", config=config))
    return _clients[0]


def secret_string(secret_id: str, secrets_client: Any = None) -> str:
    """The SecretString of ``secret_id`` (its current version)."""
    response = (secrets_client or client()).get_secret_value(SecretId=secret_id)
    if "SecretString" not in response:
        raise ValueError(f"secret {secret_id} holds binary data, not a string")
    return str(response["SecretString"])


def reader(secret_id: str, secrets_client: Any = None) -> Callable[[], str]:
    """A function of no argument reading ``secret_id`` each time it is called."""
    return lambda: secret_string(secret_id, secrets_client)
