"""Keys, tokens and API Gateway events for the tests of lambdas/ (helpers, not tests).

Valid tokens are made with ``jwt.encode``; hostile ones with :func:`sign_raw`, which writes the header
and payload segments itself (a duplicate member, an integer kid, a ``crit`` header) and signs with
PyJWT's own algorithm objects.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

from ansible_collections.tenantforge.platform.plugins.module_utils.secret_material import public_jwk

EVENTS = Path(__file__).resolve().parent / "events"
ISSUER = "https://auth.tenantforge.test"
AUDIENCE = "tenantforge-api"
ORG_ID = "3f2c8a4e-9b1d-4c7e-8f00-5a6b7c8d9e0f"
ORG_SLUG = "acme-corp"
USER_ID = "7d1e2f30-4a5b-4c6d-9e8f-0a1b2c3d4e5f"
PERMISSIONS = ["tasks:create", "tasks:read", "users:read"]
ROLES = ["admin", "member"]
JTI = "5c0ffee0-0000-4000-8000-00000000beef"
# Claims to leave out of a payload.
DROP = object()

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Signer:
    """A private key, the kid its public JWK is published under, and the algorithm it signs with."""

    key: Any
    kid: str
    alg: str

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.key)


def rsa_signer() -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Signer(key, public_jwk(key)["kid"], "RS256")


def ec_signer() -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return Signer(key, public_jwk(key)["kid"], "ES256")


def claims(now: float, **overrides: Any) -> dict[str, Any]:
    """A valid payload issued at ``now``; an override of DROP removes the claim."""
    issued = int(now)
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER_ID,
        "org_id": ORG_ID,
        "org_slug": ORG_SLUG,
        "permissions": list(PERMISSIONS),
        "roles": list(ROLES),
        "iat": issued,
        "nbf": issued,
        "exp": issued + 3600,
        "jti": JTI,
        "auth_time": issued - 600,
    }
    payload.update(overrides)
    return {name: value for name, value in payload.items() if value is not DROP}


def encode(signer: Signer, payload: Mapping[str, Any], **headers: Any) -> str:
    """A token as the issuer makes one: ``jwt.encode`` with kid and typ."""
    return jwt.encode(dict(payload), signer.key, algorithm=signer.alg, headers={"kid": signer.kid, **headers})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_raw(
    signer: Signer,
    payload: Mapping[str, Any] | bytes,
    header: Mapping[str, Any] | bytes | None = None,
    algorithm: str | None = None,
    key: Any = None,
) -> str:
    """A compact JWS built by hand: ``header`` replaces the default ``{alg, typ, kid}`` entirely
    (a dict, or raw bytes for malformed JSON); ``algorithm``/``key`` sign with something else."""
    algorithm = algorithm or signer.alg
    if header is None:
        header = {"alg": algorithm, "typ": "JWT", "kid": signer.kid}
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    payload_bytes = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(header_bytes)}.{b64url(payload_bytes)}".encode()
    return sign_input(signing_input.decode(), key or signer.key, algorithm)


def sign_input(signing_input: str, key: Any, algorithm: str) -> str:
    """``signing_input`` (header.payload, as given) with its signature appended."""
    implementation = get_default_algorithms()[algorithm]
    signature = implementation.sign(signing_input.encode(), implementation.prepare_key(key))
    return f"{signing_input}.{b64url(signature)}"


def with_header(signer: Signer, **changes: Any) -> dict[str, Any]:
    """The default header with ``changes`` (DROP removes a member)."""
    header = {"alg": signer.alg, "typ": "JWT", "kid": signer.kid, **changes}
    return {name: value for name, value in header.items() if value is not DROP}


# ------------------------------------------------------------------------------------------- events

EventFactory = Callable[[str | None], dict[str, Any]]


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"authorizer_{name}.json").read_text())


def token_event(authorization: Any) -> dict[str, Any]:
    """A REST TOKEN event; None leaves ``authorizationToken`` out."""
    event = load_event("token")
    if authorization is None:
        del event["authorizationToken"]
    else:
        event["authorizationToken"] = authorization
    return event


def request_event(authorization: Any, header_name: str = "Authorization") -> dict[str, Any]:
    """A REST REQUEST event whose Authorization header (named ``header_name``) holds ``authorization``;
    None leaves the header out."""
    event = load_event("request")
    del event["headers"]["Authorization"], event["multiValueHeaders"]["Authorization"]
    if authorization is not None:
        event["headers"][header_name] = authorization
        event["multiValueHeaders"][header_name] = [authorization]
    return event


def websocket_event(token: Any) -> dict[str, Any]:
    """A WebSocket $connect event with ``?token=``; None leaves the parameter out."""
    event = load_event("websocket_connect")
    if token is None:
        event["queryStringParameters"] = None
        event["multiValueQueryStringParameters"] = None
    else:
        event["queryStringParameters"] = {"token": token}
        event["multiValueQueryStringParameters"] = {"token": [token]}
    return event


# The event kinds, each from a bare token (the header kinds prefix "Bearer ").
KINDS: dict[str, EventFactory] = {
    "rest_token": lambda token: token_event(None if token is None else f"Bearer {token}"),
    "rest_request": lambda token: request_event(None if token is None else f"Bearer {token}"),
    "websocket": websocket_event,
}
STAGE_RESOURCE = {
    "rest_token": "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5/prod/*",
    "rest_request": "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5/prod/*",
    "websocket": "arn:aws:execute-api:eu-west-1:123456789012:w9x8y7z6v5/dev/*",
}


@dataclass
class FrozenClock:
    """One clock for the token times (wall) and the JWKS cache (monotonic): moves only when told."""

    now: float = field(default_factory=lambda: 1_796_119_200.0)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
