#!/usr/bin/env python3
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Bring a RabbitMQ vhost's topology, users and permissions to a desired state (standard library only).

Reads one JSON request on standard input (it carries passwords, so never the command line):

    {"url": "http://127.0.0.1:15673", "admin": {"username": ..., "password": ...},
     "definitions": {"vhosts": [...], "exchanges": [...], "queues": [...], "bindings": [...]},
     "users": [{"username": ..., "password": ..., "tags": [...],
                "permissions": {"<vhost>": {"configure": ..., "write": ..., "read": ...}}}]}

and talks to the management HTTP API as the administrator. With `--request FILE` the request is read
from that file instead; there (as anywhere in the request) a value written {"env": "NAME"} is taken
from the environment variable NAME, so the cluster's Job keeps its request in a ConfigMap and its
passwords in Secrets. Every item is read first and written only
when it differs, so a second run writes nothing. Passwords are compared with the salted hash the
broker stores and set as such a hash: no password is sent over HTTP or printed. With --check nothing
is written. Prints {"actions": [...]}: what was (or would be) changed, naming users, exchanges and
queues, never a secret. Exchanges and queues whose properties differ cannot be changed in place: that
is an error, naming the item.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

HASHES: dict[str, Callable[[bytes], Any]] = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
NEW_HASH = "rabbit_password_hashing_sha256"


class AccessError(Exception):
    pass


def password_hash(password: str, salt: bytes, algorithm: str = NEW_HASH) -> str:
    """RabbitMQ's stored form: base64(salt + H(salt + password)), with a 4-byte salt."""
    digest = HASHES[algorithm](salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def password_matches(stored: str, algorithm: str, password: str) -> bool:
    if not stored or algorithm not in HASHES:
        return False
    salt = base64.b64decode(stored)[:4]
    return password_hash(password, salt, algorithm) == stored


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class Api:
    def __init__(self, url: str, username: str, password: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise AccessError(f"the management API URL must be http(s)://, got {url!r}")
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
            self.url + path, data=data, method=method, headers=self.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http(s) only
                content = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404 and method == "GET":
                return None
            reason = error.read().decode(errors="replace")[:500]
            raise AccessError(f"{method} {path}: HTTP {error.code} {reason}") from None
        except OSError as error:
            raise AccessError(f"{method} {path}: {error}") from None
        return json.loads(content) if content else None


def differs(current: dict[str, Any], desired: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if current.get(key) != desired.get(key)]


def plan_topology(api: Api, definitions: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(action, method, path, body) for every vhost, exchange, queue and binding that is missing."""
    steps: list[tuple[str, str, str, Any]] = []
    for vhost in definitions.get("vhosts", []):
        if api.request("GET", f"/api/vhosts/{quote(vhost['name'])}") is None:
            steps.append((f"create vhost {vhost['name']}", "PUT", f"/api/vhosts/{quote(vhost['name'])}", {}))
    new_vhost = {action.split(" ", 2)[2] for action, *_ in steps}
    for exchange in definitions.get("exchanges", []):
        path = f"/api/exchanges/{quote(exchange['vhost'])}/{quote(exchange['name'])}"
        keys: tuple[str, ...] = ("type", "durable", "auto_delete", "internal", "arguments")
        current = None if exchange["vhost"] in new_vhost else api.request("GET", path)
        if current is None:
            body = {key: exchange[key] for key in keys}
            steps.append((f"create exchange {exchange['name']}", "PUT", path, body))
        elif wrong := differs(current, exchange, keys):
            raise AccessError(
                f"exchange {exchange['name']} exists with other {', '.join(wrong)}: delete it to redeclare it"
            )
    for queue in definitions.get("queues", []):
        path = f"/api/queues/{quote(queue['vhost'])}/{quote(queue['name'])}"
        keys = ("durable", "auto_delete", "arguments")
        current = None if queue["vhost"] in new_vhost else api.request("GET", path)
        if current is None:
            steps.append((f"create queue {queue['name']}", "PUT", path, {key: queue[key] for key in keys}))
        elif wrong := differs(current, queue, keys):
            raise AccessError(
                f"queue {queue['name']} exists with other {', '.join(wrong)} (rabbitmq_delivery_limit?): "
                "a queue cannot be changed in place; delete it (and its messages) to redeclare it"
            )
    for binding in definitions.get("bindings", []):
        kind = "q" if binding["destination_type"] == "queue" else "e"
        path = (
            f"/api/bindings/{quote(binding['vhost'])}/e/{quote(binding['source'])}/{kind}/"
            f"{quote(binding['destination'])}"
        )
        current = [] if binding["vhost"] in new_vhost else api.request("GET", path) or []
        if not any(
            existing["routing_key"] == binding["routing_key"]
            and existing.get("arguments", {}) == binding.get("arguments", {})
            for existing in current
        ):
            body = {"routing_key": binding["routing_key"], "arguments": binding.get("arguments", {})}
            steps.append(
                (
                    f"bind {binding['destination']} to {binding['source']} with '{binding['routing_key']}'",
                    "POST",
                    path,
                    body,
                )
            )
    return steps


def plan_users(api: Api, users: list[dict[str, Any]]) -> list[tuple[str, str, str, Any]]:
    steps: list[tuple[str, str, str, Any]] = []
    for user in users:
        name = user["username"]
        path = f"/api/users/{quote(name)}"
        current = api.request("GET", path)
        tags = sorted(user.get("tags", []))
        if current is None or not password_matches(
            current.get("password_hash", ""), current.get("hashing_algorithm", ""), user["password"]
        ):
            body = {
                "password_hash": password_hash(user["password"], os.urandom(4)),
                "hashing_algorithm": NEW_HASH,
                "tags": ",".join(tags),
            }
            verb = "create user" if current is None else "set the password of user"
            steps.append((f"{verb} {name}", "PUT", path, body))
        elif sorted(current.get("tags") or []) != tags:
            body = {
                "password_hash": current["password_hash"],
                "hashing_algorithm": current["hashing_algorithm"],
                "tags": ",".join(tags),
            }
            steps.append((f"set the tags of user {name} to {tags}", "PUT", path, body))
        for vhost, wanted in user.get("permissions", {}).items():
            permission_path = f"/api/permissions/{quote(vhost)}/{quote(name)}"
            granted = None if current is None else api.request("GET", permission_path)
            if granted is None or differs(granted, wanted, ("configure", "write", "read")):
                body = {key: wanted[key] for key in ("configure", "write", "read")}
                steps.append(
                    (f"set the permissions of user {name} in vhost {vhost}", "PUT", permission_path, body)
                )
    return steps


def resolve(value: Any) -> Any:
    """The request with every {"env": "NAME"} replaced by the value of that environment variable."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            name = value["env"]
            if name not in os.environ:
                raise AccessError(f"the environment variable {name} is not set")
            return os.environ[name]
        return {key: resolve(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item) for item in value]
    return value


def apply(request: dict[str, Any], check_mode: bool) -> list[str]:
    admin = request["admin"]
    api = Api(request["url"], admin["username"], admin["password"])
    # The vhost and topology first: permissions name the vhost.
    steps = plan_topology(api, request.get("definitions", {}))
    if not check_mode:
        for _, method, path, body in steps:
            api.request(method, path, body)
    user_steps = plan_users(api, request.get("users", []))
    if not check_mode:
        for _, method, path, body in user_steps:
            api.request(method, path, body)
    return [action for action, *_ in steps + user_steps]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="report what would change, change nothing")
    parser.add_argument("--request", type=argparse.FileType(), default=sys.stdin, help="the request (stdin)")
    options = parser.parse_args(argv)
    check_mode = options.check
    try:
        actions = apply(resolve(json.load(options.request)), check_mode)
    except KeyError as error:
        sys.stderr.write(f"the request has no {error.args[0]!r}\n")
        return 1
    except (AccessError, ValueError) as error:
        sys.stderr.write(f"{error}\n")
        return 1
    sys.stdout.write(json.dumps({"actions": actions, "check_mode": check_mode}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
