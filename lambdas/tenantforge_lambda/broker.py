"""RabbitMQ access of the functions: one connection per container, publisher confirms.

Configuration (issue 7's contract): ``AMQP_URL``, ``AMQP_SECRET_ID`` or both, like the database's:
the secret (an AMQP URL, a JSON object with ``url``/``AMQP_URL``, or ``{"username", "password"}``) goes
on top of the URL. ``AMQP_URL`` may list several nodes separated by commas; a connection tries them
in order, so one node down costs a reconnection, not an outage.

:meth:`Broker.publish` returns once the broker has confirmed the message: persistent
(``delivery_mode=2``), ``mandatory`` (a message no queue takes is returned, not dropped), on a
channel in confirm mode. Any failure raises :class:`BrokerUnavailable` and drops the connection; the
next call opens a new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

CONNECT_TIMEOUT_SECONDS = 5


class BrokerConfigError(ValueError):
    """The broker settings are missing or invalid; the message names the variable, never a value."""


class BrokerUnavailable(Exception):
    """The broker cannot be reached, refused or did not confirm the message (the caller answers 503)."""


def broker_urls(environ: Mapping[str, str], read_secret: Callable[[str], str]) -> list[str]:
    """The AMQP URLs, one per node, with the secret's credentials on each."""
    text = environ.get("AMQP_URL", "").strip()
    secret_id = environ.get("AMQP_SECRET_ID", "").strip()
    if not text and not secret_id:
        raise BrokerConfigError("one of AMQP_URL and AMQP_SECRET_ID is required")
    urls = [item.strip() for item in text.split(",") if item.strip()]
    username = password = None
    if secret_id:
        secret = read_secret(secret_id).strip()
        if secret.startswith("{"):
            try:
                document = json.loads(secret)
            except ValueError:
                raise BrokerConfigError("the secret of AMQP_SECRET_ID is neither JSON nor a URL") from None
            url = document.get("url") or document.get("AMQP_URL") if isinstance(document, dict) else None
            if isinstance(url, str):
                urls = urls or [url]
                username, password = _credentials(url)
            elif isinstance(document, dict) and "username" in document and "password" in document:
                username, password = str(document["username"]), str(document["password"])
            else:
                raise BrokerConfigError("the secret of AMQP_SECRET_ID holds no URL nor username and password")
        else:
            urls = urls or [secret]
            username, password = _credentials(secret)
    if not urls:
        raise BrokerConfigError("AMQP_URL names no broker")
    for url in urls:
        if urlsplit(url).scheme not in ("amqp", "amqps"):
            raise BrokerConfigError("AMQP_URL must be amqp:// or amqps:// URLs")
    if username is not None:
        urls = [_with_credentials(url, username, password or "") for url in urls]
    return urls


def _credentials(url: str) -> tuple[str | None, str | None]:
    parts = urlsplit(url)
    return parts.username, parts.password


def _with_credentials(url: str, username: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Broker:
    """The container's connection and confirm-mode channel, opened on first use."""

    def __init__(
        self, urls: Callable[[], list[str]], connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    ) -> None:
        self._urls = urls
        self._connect_timeout = connect_timeout
        self._connection: Any = None
        self._channel: Any = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Broker:
        from tenantforge_lambda import secrets

        env = dict(os.environ if environ is None else environ)
        if not env.get("AMQP_URL", "").strip() and not env.get("AMQP_SECRET_ID", "").strip():
            raise BrokerConfigError("one of AMQP_URL and AMQP_SECRET_ID is required")
        return cls(lambda: broker_urls(env, secrets.secret_string))

    def _open(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        import pika  # the first publish pays for it, not the import of the handler

        parameters = []
        for url in self._urls():
            item = pika.URLParameters(url)
            item.socket_timeout = self._connect_timeout
            item.blocked_connection_timeout = self._connect_timeout
            item.connection_attempts = 1
            parameters.append(item)
        try:
            self._connection = pika.BlockingConnection(parameters)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        except Exception:
            self.close()
            raise BrokerUnavailable("cannot connect to RabbitMQ") from None
        return self._channel

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        message_type: str,
        mandatory: bool = True,
    ) -> None:
        """Publish and wait for the broker's confirm; :class:`BrokerUnavailable` otherwise. With
        ``mandatory`` (the default) a message no queue takes is an error too."""
        import pika

        channel = self._open()
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            type=message_type,
            timestamp=int(time.time()),
        )
        try:
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)
        except pika.exceptions.UnroutableError:
            raise BrokerUnavailable("the message was returned: no queue is bound for it") from None
        except pika.exceptions.NackError:
            raise BrokerUnavailable("the broker refused the message") from None
        except Exception as error:
            self.close()
            raise BrokerUnavailable(f"publishing failed ({type(error).__name__})") from None

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # Already broken, most likely: there is nothing left to close cleanly.
            with contextlib.suppress(Exception):
                connection.close()
