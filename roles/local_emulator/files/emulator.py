"""Run moto's server, corrected where it answers differently from AWS, and optionally persistent.

Each correction makes the emulator behave as AWS documents; none changes what our roles send.
- CloudTrail DeleteTrail accepts a trail ARN as its Name (AWS does, and amazon.aws.cloudtrail sends
  the ARN); moto only looks trails up by name and silently keeps the trail.

moto keeps its state in memory. With TENANTFORGE_EMULATOR_JOURNAL set to a file, the emulator appends
every request that changes something to that journal and replays it when it starts, so `make stop`
followed by `make run` finds the same VPC, instance and secrets. moto draws every identifier (vpc-...,
i-..., a secret ARN's suffix, version ids) from one random generator: it is re-seeded before each
recorded request, with the request's position in the journal, so a replayed request gets the same
identifiers as the original one. Requests are handled one at a time for the same reason.
The journal holds what the requests held, secret values included: it is written 0600.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from moto.cloudtrail.models import CloudTrailBackend
from moto.moto_api._internal import mock_random
from moto.server import main as moto_main

_delete_trail_by_name = CloudTrailBackend.delete_trail


def _delete_trail(self: CloudTrailBackend, name: str) -> None:
    if name.startswith("arn:"):
        name = name.rsplit("/", 1)[-1]
    _delete_trail_by_name(self, name)


CloudTrailBackend.delete_trail = _delete_trail  # type: ignore[method-assign]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# Operations that only read: Describe*, Get*, List*... Anything else changes state (or might).
READ_ONLY = re.compile(r"^(Describe|Get|List|Lookup|Head|Search|Check|Batch(Get|Describe))")
# Headers that do not affect what moto does with a request, left out of the journal.
UNRECORDED_HEADERS = {"authorization", "x-amz-date", "x-amz-security-token", "amz-sdk-invocation-id"}


def operation(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> str | None:
    """The API operation a request calls, for the protocols that name one; None for REST APIs."""
    target = headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    rpc = re.search(r"/operation/([A-Za-z0-9]+)$", path)
    if rpc:
        return rpc.group(1)
    fields = parse_qs(query)
    if "Action" not in fields and headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        fields = parse_qs(body.decode("utf-8", "replace"))
    actions = fields.get("Action")
    return actions[0] if actions else None


def changes_state(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> bool:
    if path.startswith("/moto-api/"):
        return False
    name = operation(method, path, query, headers, body)
    if name is not None:
        return not READ_ONLY.match(name)
    return method not in ("GET", "HEAD", "OPTIONS")


# Signing names whose moto backend is called differently.
BACKEND_NAMES = {"monitoring": "cloudwatch"}
# Backends created before anything is served or replayed. moto creates a backend on first use and
# draws identifiers while doing so (EC2's default VPC, IAM's managed policies), sometimes from inside
# another service's request: created in the middle of a journaled request, it would shift that
# request's identifiers on replay.
EAGER_BACKENDS = (
    "iam",
    "sts",
    "ec2",
    "s3",
    "secretsmanager",
    "logs",
    "cloudwatch",
    "cloudtrail",
    "kms",
    "ssm",
)


def create_backend(service: str, region: str) -> None:
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    try:
        backends = get_backend(BACKEND_NAMES.get(service, service))  # type: ignore[call-overload]
    except Exception:  # an unknown service is moto's to report, on the request itself
        return
    account = backends[DEFAULT_ACCOUNT_ID]
    if region not in account.regions:
        # Global services (IAM) keep one backend per partition.
        region = "aws" if "aws" in account.regions else account.regions[0]
    account[region]


def create_backends(regions: list[str]) -> None:
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    # Looking up the account of an access key visits IAM in every partition.
    iam = get_backend("iam")[DEFAULT_ACCOUNT_ID]
    for partition in iam.regions:
        iam[partition]
    for region in regions:
        for service in EAGER_BACKENDS:
            create_backend(service, region)


def warm_backend(authorization: str) -> None:
    """Create the backend a request's credential scope names, before a journaled request is seeded."""
    scope = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/([^/]+)/", authorization)
    if scope:
        region, service = scope.groups()
        create_backend(service, region)


class Journal:
    """The WSGI app behind a lock; state-changing requests are journaled and replayed in order."""

    def __init__(self, app: WSGIApp, path: str | None) -> None:
        self.app = app
        self.path = path
        self.lock = threading.Lock()
        self.recorded = 0
        # Position of the journaled request being handled, seeded again where moto hands it to the
        # service: the first request to a service builds that service's app on the way, drawing
        # random numbers of its own.
        self.position: int | None = None
        from moto.moto_api import recorder

        recorder._record_request = self.reseed  # type: ignore[method-assign]

    def seed(self, position: int) -> None:
        self.position = position
        mock_random.seed(f"tenantforge-emulator-{position}")

    def reseed(self, *_args: Any, **_kwargs: Any) -> None:
        if self.position is not None:
            mock_random.seed(f"tenantforge-emulator-{self.position}")

    def replay(self) -> int:
        """Apply the journal's requests again, in order; returns how many."""
        if not self.path or not os.path.exists(self.path):
            return 0
        from werkzeug.test import EnvironBuilder

        with open(self.path, encoding="utf-8") as journal:
            entries = [json.loads(line) for line in journal if line.strip()]
        for position, entry in enumerate(entries):
            environ = EnvironBuilder(
                path=entry["path"],
                method=entry["method"],
                query_string=entry["query"],
                headers=entry["headers"],
                data=base64.b64decode(entry["body"]),
            ).get_environ()
            warm_backend(entry["headers"].get("authorization", ""))
            self.seed(position)
            for _ in self.app(environ, lambda status, headers, exc_info=None: None):
                pass
            self.position = None
        self.recorded = len(entries)
        return self.recorded

    def record(self, path: str, entry: dict[str, Any]) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry, sort_keys=True) + "\n")
        self.recorded += 1

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        method, path, query = (
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )
        with self.lock:
            if self.path:
                warm_backend(headers.get("authorization", ""))
            if self.path and changes_state(method, path, query, headers, body):
                self.seed(self.recorded)
                # moto dispatches on the access key id (the account), service and region of the
                # credential: keep those, drop the signature.
                kept = {key: value for key, value in headers.items() if key not in UNRECORDED_HEADERS}
                credential = re.search(r"Credential=[^,]+", headers.get("authorization", ""))
                if credential:
                    kept["authorization"] = f"AWS4-HMAC-SHA256 {credential.group(0)}, Signature=0"
                self.record(
                    self.path,
                    {
                        "method": method,
                        "path": path,
                        "query": query,
                        "headers": kept,
                        "body": base64.b64encode(body).decode("ascii"),
                    },
                )
            try:
                return list(self.app(environ, start_response))
            finally:
                self.position = None


def main(argv: list[str]) -> None:
    from moto.moto_server import werkzeug_app

    journal_path = os.environ.get("TENANTFORGE_EMULATOR_JOURNAL") or None
    dispatcher = werkzeug_app.DomainDispatcherApplication

    class JournaledDispatcher(dispatcher):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if journal_path:
                create_backends(os.environ.get("TENANTFORGE_EMULATOR_REGIONS", "us-east-1").split(","))
            self.journal = Journal(super().__call__, journal_path)
            replayed = self.journal.replay()
            if journal_path:
                sys.stderr.write(f"tenantforge emulator: replayed {replayed} requests from {journal_path}\n")

        def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            return self.journal(environ, start_response)

    werkzeug_app.DomainDispatcherApplication = JournaledDispatcher  # type: ignore[misc]
    import moto.server

    moto.server.DomainDispatcherApplication = JournaledDispatcher  # type: ignore[misc]
    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
