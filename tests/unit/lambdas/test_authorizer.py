"""The API Gateway authorizer (lambdas/authorizer/handler.py) through its ``handler(event, context)``.

GIVEN a JWKS secret in the tests' private moto server (read with boto3 through AWS_ENDPOINT_URL, as in
Lambda) holding an RSA and an EC P-256 key published as platform_secret publishes them, and a weak
RSA-1024 key; WHEN REST TOKEN, REST REQUEST and WebSocket $connect events arrive; THEN valid tokens get
the exact Allow policy and context, and every hostile or malformed one raises exactly
``Exception("Unauthorized")`` with the expected reason in the one JSON log line, which never holds
the token.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Emulator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm
from token_factory import (
    AUDIENCE,
    DROP,
    ISSUER,
    JTI,
    KINDS,
    ORG_ID,
    ORG_SLUG,
    STAGE_RESOURCE,
    USER_ID,
    Signer,
    b64url,
    claims,
    ec_signer,
    encode,
    request_event,
    rsa_signer,
    sign_input,
    sign_raw,
    token_event,
    websocket_event,
    with_header,
)

from ansible_collections.tenantforge.platform.plugins.module_utils import secret_material
from authorizer import handler
from tenantforge_lambda.config import ConfigError
from tenantforge_lambda.tokens import REQUIRED_CLAIMS

REPO = Path(__file__).resolve().parents[3]
LOGGER = "tenantforge.authorizer"
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
EVENT_NAME = {"rest_token": "TOKEN", "rest_request": "REQUEST", "websocket": "WEBSOCKET"}


@dataclass(frozen=True)
class LambdaContext:
    function_name: str = "tenantforge-test-authorizer"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:tenantforge-test-authorizer"
    aws_request_id: str = "8f5c2a1e-0000-4000-8000-000000000001"

    def get_remaining_time_in_millis(self) -> int:
        return 3000


@dataclass(frozen=True)
class Keys:
    rsa: Signer
    ec: Signer
    impostor: Signer  # another RSA key claiming the published RSA key's kid
    weak: Signer  # RSA 1024, published: refused by the minimum key length


@dataclass(frozen=True)
class Kit:
    """What a table entry builds its token from: the keys and the time the token is made at."""

    keys: Keys
    now: float

    def payload(self, **overrides: Any) -> dict[str, Any]:
        return claims(self.now, **overrides)

    def token(self, signer: Signer | None = None, **overrides: Any) -> str:
        return encode(signer or self.keys.rsa, self.payload(**overrides))


def aws_env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, jwks_secret_id: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("JWT_ISSUER", ISSUER)
    monkeypatch.setenv("JWT_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("JWT_JWKS_SECRET_ID", jwks_secret_id)
    for name in ("JWT_ALGORITHMS", "JWT_LEEWAY_SECONDS", "JWT_JWKS_CACHE_SECONDS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_key = rsa_signer()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - must be refused
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Keys(
        rsa=rsa_key,
        ec=ec_signer(),
        impostor=Signer(impostor, rsa_key.kid, "RS256"),
        weak=Signer(weak, "weak-rsa-1024", "RS256"),
    )


@pytest.fixture(scope="module")
def live_authorizer(emulator: Emulator, keys: Keys) -> Iterator[handler.Authorizer]:
    """The handler's own authorizer, built from the environment on the first call, as in Lambda."""
    secret_id = f"tenantforge/test-{uuid.uuid4().hex[:8]}/jwt/jwks"
    weak_jwk = RSAAlgorithm.to_jwk(keys.weak.key.public_key(), as_dict=True)
    jwks = {"keys": [keys.rsa.jwk, keys.ec.jwk, {**weak_jwk, "kid": keys.weak.kid, "alg": "RS256"}]}
    emulator.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps(jwks))
    with pytest.MonkeyPatch.context() as monkeypatch:
        aws_env(monkeypatch, emulator, secret_id)
        handler.reset()
        yield handler.get_authorizer()
    handler.reset()


@pytest.fixture(autouse=True)
def installed(live_authorizer: handler.Authorizer) -> Iterator[None]:
    handler.reset(live_authorizer)
    yield
    handler.reset()


@pytest.fixture
def kit(keys: Keys) -> Kit:
    return Kit(keys, time.time())


def decision_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == LOGGER]


def allow(event: dict[str, Any], caplog: pytest.LogCaptureFixture) -> tuple[dict[str, Any], dict[str, Any]]:
    caplog.clear()
    response = handler.handler(event, LambdaContext())
    (log,) = decision_logs(caplog)
    return response, log


def deny(
    event: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    credential: Any = None,
) -> dict[str, Any]:
    """Asserts the exact 401 contract and that nothing logged or printed holds the credential."""
    caplog.clear()
    with pytest.raises(Exception, match=r"^Unauthorized$") as raised:
        handler.handler(event, LambdaContext())
    assert type(raised.value) is Exception
    assert raised.value.args == ("Unauthorized",)
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None
    (log,) = decision_logs(caplog)
    assert all(record.exc_info is None and record.stack_info is None for record in caplog.records)
    printed = capsys.readouterr()
    if isinstance(credential, str) and len(credential) >= 8:
        for text in (caplog.text, printed.out, printed.err):
            assert credential not in text
            for segment in credential.split("."):
                assert len(segment) < 16 or segment not in text
    assert log["decision"] == "deny"
    return log


# ----------------------------------------------------------------------------------- hostile tokens


def header_noncanonical(k: Kit) -> str:
    """Base64url with non-zero unused bits in the header: decodes as the canonical one would."""
    header = json.dumps(with_header(k.keys.rsa))
    while len(header) % 3 != 1:
        header = header[:-1] + " }"
    segment = b64url(header.encode())
    last = B64URL_ALPHABET.index(segment[-1])
    segment = segment[:-1] + B64URL_ALPHABET[last | 1]
    return sign_input(f"{segment}.{b64url(json.dumps(k.payload()).encode())}", k.keys.rsa.key, "RS256")


def signature_flipped(k: Kit) -> str:
    head, payload, signature = k.token().split(".")
    first = B64URL_ALPHABET[(B64URL_ALPHABET.index(signature[0]) + 1) % 64]
    return f"{head}.{payload}.{first}{signature[1:]}"


def payload_swapped(k: Kit) -> str:
    head, payload, _ = k.token(org_id=str(uuid.uuid4())).split(".")
    return f"{head}.{payload}.{k.token().split('.')[2]}"


def hmac_token(k: Kit, secret: bytes, signer: Signer) -> str:
    signing_input = f"{b64url(json.dumps(with_header(signer, alg='HS256')).encode())}.{b64url(json.dumps(k.payload()).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def public_pem(signer: Signer) -> bytes:
    return signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def unsigned(k: Kit, alg: str, signature: str) -> str:
    header = b64url(json.dumps(with_header(k.keys.rsa, alg=alg)).encode())
    return f"{header}.{b64url(json.dumps(k.payload()).encode())}.{signature}"


def raw(
    k: Kit, header: Any = None, payload: Any = None, signer: Signer | None = None, alg: str | None = None
) -> str:
    signer = signer or k.keys.rsa
    return sign_raw(signer, k.payload() if payload is None else payload, header, algorithm=alg)


def other_ec_signature(k: Kit) -> str:
    impostor = Signer(ec.generate_private_key(ec.SECP256R1()), k.keys.ec.kid, "ES256")
    return encode(impostor, k.payload())


Build = Callable[[Kit], str]
HOSTILE: list[Any] = [
    # Shape and encoding: refused before anything is verified.
    pytest.param(lambda k: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0", "malformed", id="two-segments"),
    pytest.param(lambda k: k.token() + ".AAAA", "malformed", id="four-segments"),
    pytest.param(lambda k: k.token().rsplit(".", 1)[0] + ".", "malformed", id="empty-signature"),
    pytest.param(lambda k: "." + k.token().split(".", 1)[1], "malformed", id="empty-header"),
    pytest.param(lambda k: "e!J" + k.token()[3:], "malformed", id="bad-base64-character"),
    pytest.param(lambda k: k.token().replace(".", "==.", 1), "malformed", id="base64-padding"),
    pytest.param(header_noncanonical, "malformed", id="non-canonical-base64-header"),
    pytest.param(lambda k: raw(k, header=b"not json"), "malformed", id="header-not-json"),
    pytest.param(lambda k: raw(k, header=b'["RS256"]'), "malformed", id="header-json-array"),
    pytest.param(
        lambda k: raw(
            k, header=f'{{"alg":"none","typ":"JWT","kid":"{k.keys.rsa.kid}","alg":"RS256"}}'.encode()
        ),
        "malformed",
        id="header-duplicate-alg",
    ),
    pytest.param(lambda k: raw(k, payload=b"not json"), "malformed", id="payload-not-json"),
    pytest.param(lambda k: raw(k, payload=b"[1, 2]"), "malformed", id="payload-json-array"),
    pytest.param(lambda k: k.token().replace(".", ".\u00e9", 1), "malformed", id="non-ascii"),
    pytest.param(lambda k: k.token(padding="x" * 8200), "token_too_large", id="larger-than-8-KiB"),
    # Signatures.
    pytest.param(signature_flipped, "bad_signature", id="signature-altered"),
    pytest.param(
        lambda k: encode(k.keys.impostor, k.payload()), "bad_signature", id="other-rsa-key-same-kid"
    ),
    pytest.param(other_ec_signature, "bad_signature", id="other-ec-key-same-kid"),
    pytest.param(payload_swapped, "bad_signature", id="payload-swapped"),
    # Algorithms (RFC 8725 section 2.1): the allow-list, and the key's own algorithm.
    pytest.param(lambda k: unsigned(k, "none", ""), "malformed", id="alg-none-empty-signature"),
    pytest.param(lambda k: unsigned(k, "none", "AAAA"), "alg_not_allowed", id="alg-none"),
    pytest.param(lambda k: unsigned(k, "None", "AAAA"), "alg_not_allowed", id="alg-None"),
    pytest.param(
        lambda k: hmac_token(k, public_pem(k.keys.rsa), k.keys.rsa),
        "alg_not_allowed",
        id="hs256-public-pem-as-secret",
    ),
    pytest.param(
        lambda k: hmac_token(k, json.dumps(k.keys.ec.jwk).encode(), k.keys.ec),
        "alg_not_allowed",
        id="hs256-public-jwk-as-secret",
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, alg="RS512"), alg="RS512"),
        "alg_not_allowed",
        id="rs512",
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, alg="PS256"), alg="PS256"),
        "alg_not_allowed",
        id="ps256",
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, alg="rs256")), "alg_not_allowed", id="alg-lowercase"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, alg=DROP)), "alg_not_allowed", id="alg-missing"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, alg=["RS256"])), "alg_not_allowed", id="alg-list"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, alg="ES256"), signer=k.keys.ec),
        "key_alg_mismatch",
        id="es256-header-on-rsa-key",
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.ec, alg="RS256"), signer=k.keys.rsa),
        "key_alg_mismatch",
        id="rs256-header-on-ec-key",
    ),
    pytest.param(lambda k: raw(k, signer=k.keys.weak), "bad_key", id="rsa-1024-key"),
    # Key ids.
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, kid="not-published")), "unknown_kid", id="unknown-kid"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, kid="../../etc/passwd")), "unknown_kid", id="kid-path"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, kid=DROP)), "missing_header:kid", id="kid-missing"
    ),
    pytest.param(lambda k: raw(k, header=with_header(k.keys.rsa, kid=7)), "bad_kid", id="kid-number"),
    pytest.param(lambda k: raw(k, header=with_header(k.keys.rsa, kid="")), "bad_kid", id="kid-empty"),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, kid="k" * 300)), "bad_kid", id="kid-300-chars"
    ),
    # Keys and extensions carried by the token (RFC 8725 section 3.10): refused, never fetched.
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, jku="https://evil.test/jwks.json")),
        "forbidden_header:jku",
        id="jku",
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, x5u="https://evil.test/cert.pem")),
        "forbidden_header:x5u",
        id="x5u",
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, jwk=k.keys.impostor.jwk), signer=k.keys.impostor),
        "forbidden_header:jwk",
        id="jwk-embedded",
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, x5c=["MIIB"])), "forbidden_header:x5c", id="x5c"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, crit=["exp"])), "forbidden_header:crit", id="crit"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, b64=False)), "forbidden_header:b64", id="b64"
    ),
    # Token type.
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, typ=DROP)), "missing_header:typ", id="typ-missing"
    ),
    pytest.param(
        lambda k: raw(k, header=with_header(k.keys.rsa, typ="secevent+jwt")), "bad_typ", id="typ-other"
    ),
    pytest.param(lambda k: raw(k, header=with_header(k.keys.rsa, typ=1)), "bad_typ", id="typ-number"),
    # Issuer and audience.
    pytest.param(lambda k: k.token(iss="https://evil.test"), "bad_issuer", id="iss-wrong"),
    pytest.param(lambda k: k.token(iss=ISSUER + "/"), "bad_issuer", id="iss-trailing-slash"),
    pytest.param(lambda k: raw(k, payload=k.payload(iss=42)), "bad_issuer", id="iss-number"),
    pytest.param(lambda k: k.token(aud="another-api"), "bad_audience", id="aud-wrong"),
    pytest.param(lambda k: k.token(aud=AUDIENCE.upper()), "bad_audience", id="aud-case"),
    pytest.param(
        lambda k: k.token(aud=["another-api", "third-api"]), "bad_audience", id="aud-list-without-ours"
    ),
    pytest.param(lambda k: k.token(aud=[]), "missing_claim:aud", id="aud-empty-list"),
    pytest.param(lambda k: k.token(aud=7), "bad_audience", id="aud-number"),
    # Times.
    pytest.param(
        lambda k: k.token(
            iat=int(k.now) - 7200, nbf=int(k.now) - 7200, exp=int(k.now) - 3600, auth_time=int(k.now) - 7200
        ),
        "expired",
        id="expired",
    ),
    pytest.param(
        lambda k: k.token(
            iat=int(k.now) - 3631, nbf=int(k.now) - 3631, exp=int(k.now) - 31, auth_time=int(k.now) - 3631
        ),
        "expired",
        id="expired-beyond-leeway",
    ),
    pytest.param(lambda k: k.token(nbf=int(k.now) + 120), "not_yet_valid", id="nbf-future"),
    pytest.param(
        lambda k: k.token(iat=int(k.now) + 120, auth_time=int(k.now)), "issued_in_future", id="iat-future"
    ),
    pytest.param(
        lambda k: k.token(auth_time=int(k.now) + 10), "bad_claim:auth_time", id="auth-time-after-iat"
    ),
    pytest.param(lambda k: k.token(exp=int(k.now) + 7200), "lifetime_exceeded", id="exp-beyond-idle-ttl"),
    pytest.param(
        lambda k: k.token(auth_time=int(k.now) - 43000), "session_exceeded", id="exp-beyond-session-maximum"
    ),
    # Every required claim, missing; and null.
    *(
        pytest.param(
            lambda k, name=name: k.token(**{name: DROP}), f"missing_claim:{name}", id=f"missing-{name}"
        )
        for name in REQUIRED_CLAIMS
    ),
    pytest.param(lambda k: k.token(org_id=None), "missing_claim:org_id", id="org-id-null"),
    # Mistyped claims.
    pytest.param(lambda k: k.token(sub=42), "bad_claim:sub", id="sub-number"),
    pytest.param(lambda k: k.token(sub=""), "bad_claim:sub", id="sub-empty"),
    pytest.param(lambda k: k.token(jti=42), "bad_claim:jti", id="jti-number"),
    pytest.param(lambda k: k.token(org_id="acme"), "bad_claim:org_id", id="org-id-not-uuid"),
    pytest.param(lambda k: k.token(org_id=ORG_ID.upper()), "bad_claim:org_id", id="org-id-upper-case"),
    pytest.param(lambda k: k.token(org_id="{" + ORG_ID + "}"), "bad_claim:org_id", id="org-id-braces"),
    pytest.param(
        lambda k: k.token(org_id=ORG_ID.replace("-", "")), "bad_claim:org_id", id="org-id-no-hyphens"
    ),
    pytest.param(lambda k: k.token(org_id=42), "bad_claim:org_id", id="org-id-number"),
    pytest.param(lambda k: k.token(org_slug="Acme Corp"), "bad_claim:org_slug", id="org-slug-invalid"),
    pytest.param(lambda k: k.token(org_slug=["acme"]), "bad_claim:org_slug", id="org-slug-list"),
    pytest.param(
        lambda k: k.token(permissions="tasks:read"), "bad_claim:permissions", id="permissions-string"
    ),
    pytest.param(lambda k: k.token(permissions=[1, 2]), "bad_claim:permissions", id="permissions-numbers"),
    pytest.param(
        lambda k: k.token(permissions=["users:read", "tasks:read"]),
        "bad_claim:permissions",
        id="permissions-unsorted",
    ),
    pytest.param(
        lambda k: k.token(permissions=["tasks:read", "tasks:read"]),
        "bad_claim:permissions",
        id="permissions-duplicate",
    ),
    pytest.param(
        lambda k: k.token(permissions=["tasks:read,users:delete"]),
        "bad_claim:permissions",
        id="permissions-comma",
    ),
    pytest.param(lambda k: k.token(permissions=[""]), "bad_claim:permissions", id="permissions-empty-string"),
    pytest.param(lambda k: k.token(roles={"admin": True}), "bad_claim:roles", id="roles-object"),
    pytest.param(lambda k: k.token(roles=["admin,owner"]), "bad_claim:roles", id="roles-comma"),
    pytest.param(lambda k: k.token(exp=str(int(k.now) + 600)), "bad_claim:exp", id="exp-string"),
    pytest.param(lambda k: k.token(exp=k.now + 600.5), "bad_claim:exp", id="exp-float"),
    pytest.param(lambda k: k.token(iat=True), "bad_claim:iat", id="iat-boolean"),
    pytest.param(lambda k: k.token(nbf=str(int(k.now))), "bad_claim:nbf", id="nbf-string"),
    pytest.param(lambda k: k.token(auth_time="yesterday"), "bad_claim:auth_time", id="auth-time-string"),
]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("build", "reason"), HOSTILE)
def test_hostile_token_is_denied_with_its_reason(
    kind: str,
    build: Build,
    reason: str,
    kit: Kit,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a hostile or malformed token WHEN it arrives in an event of each kind
    token = build(kit)
    log = deny(KINDS[kind](token), caplog, capsys, credential=token)
    # THEN it is denied, for the expected reason
    assert log["reason"] == reason
    assert log["event"] == EVENT_NAME[kind]


def test_the_table_is_large_enough() -> None:
    assert len(HOSTILE) >= 40


def test_a_refusal_after_the_signature_logs_who_it_was(
    kit: Kit, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(kit.now)
    token = kit.token(iat=now - 7200, nbf=now - 7200, exp=now - 3600, auth_time=now - 7200)
    log = deny(KINDS["rest_token"](token), caplog, capsys, credential=token)
    assert log == {
        "decision": "deny",
        "event": "TOKEN",
        "reason": "expired",
        "org_id": ORG_ID,
        "sub": USER_ID,
        "jti": JTI,
    }


def test_a_refusal_before_the_signature_logs_no_claims(
    kit: Kit, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    token = encode(kit.keys.impostor, kit.payload())
    log = deny(KINDS["rest_request"](token), caplog, capsys, credential=token)
    assert log == {
        "decision": "deny",
        "event": "REQUEST",
        "reason": "bad_signature",
        "org_id": None,
        "sub": None,
        "jti": None,
    }


# --------------------------------------------------------------------------------------- valid tokens


def expected_allow(
    kind: str, exp: int, permissions: str = "tasks:create,tasks:read,users:read"
) -> dict[str, Any]:
    return {
        "principalId": USER_ID,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": STAGE_RESOURCE[kind]}
            ],
        },
        "context": {
            "org_id": ORG_ID,
            "org_slug": ORG_SLUG,
            "user_id": USER_ID,
            "permissions": permissions,
            "roles": "admin,member",
            "token_exp": exp,
            "jti": JTI,
        },
    }


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_valid_token_is_allowed_with_the_exact_policy_and_context(
    kind: str, algorithm: str, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a token signed with a published key
    signer = kit.keys.rsa if algorithm == "RS256" else kit.keys.ec
    token = kit.token(signer)
    # WHEN it arrives in an event of each kind
    response, log = allow(KINDS[kind](token), caplog)
    # THEN the stage of the API is allowed, with the tenant context; one log line without the token
    assert response == expected_allow(kind, int(kit.now) + 3600)
    assert all(isinstance(value, (str, int, bool)) for value in response["context"].values())
    assert log == {
        "decision": "allow",
        "event": EVENT_NAME[kind],
        "reason": None,
        "org_id": ORG_ID,
        "sub": USER_ID,
        "jti": JTI,
    }
    assert token not in caplog.text


@pytest.mark.parametrize(
    ("build", "permissions"),
    [
        pytest.param(lambda k: encode(k.keys.rsa, k.payload(), typ="at+jwt"), None, id="typ-at+jwt"),
        pytest.param(
            lambda k: encode(k.keys.rsa, k.payload(), typ="application/at+jwt"), None, id="typ-media-type"
        ),
        pytest.param(lambda k: encode(k.keys.rsa, k.payload(), typ="jwt"), None, id="typ-lower-case"),
        pytest.param(lambda k: k.token(aud=["another-api", AUDIENCE]), None, id="aud-list-with-ours"),
        pytest.param(
            lambda k: k.token(
                iat=int(k.now) - 3625, nbf=int(k.now) - 3625, exp=int(k.now) - 25, auth_time=int(k.now) - 3625
            ),
            None,
            id="exp-within-leeway",
        ),
        pytest.param(lambda k: k.token(nbf=int(k.now) + 25), None, id="nbf-within-leeway"),
        pytest.param(lambda k: k.token(iat=int(k.now) + 25, nbf=int(k.now)), None, id="iat-within-leeway"),
        pytest.param(lambda k: k.token(permissions=[], roles=[]), "", id="no-permissions"),
        pytest.param(
            lambda k: encode(k.keys.rsa, k.payload(), x5t="ignored"), None, id="unknown-header-ignored"
        ),
        pytest.param(lambda k: k.token(email="ignored@example.test"), None, id="extra-claim-ignored"),
        pytest.param(lambda k: k.token(padding="x" * 5000), None, id="large-payload"),
    ],
)
def test_edge_case_tokens_are_allowed(
    build: Build, permissions: str | None, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    token = build(kit)
    response, _ = allow(token_event(f"Bearer {token}"), caplog)
    segment = token.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    expected = expected_allow("rest_token", payload["exp"])
    if permissions is not None:
        expected["context"].update(permissions=permissions, roles="")
    assert response == expected


def test_the_size_limit_is_8_KiB(
    kit: Kit, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the longest token of at most 8192 characters and the shortest longer one (a padding claim;
    # base64url never makes every length, so the first may be a character or two short of 8192)
    near = (8192 - len(kit.token(padding=""))) * 3 // 4
    tokens = [kit.token(padding="x" * n) for n in range(near - 8, near + 8)]
    largest = max((token for token in tokens if len(token) <= 8192), key=len)
    smallest = min((token for token in tokens if len(token) > 8192), key=len)
    assert 8190 <= len(largest) <= 8192 < len(smallest) <= 8195
    # THEN the first is allowed and the second refused before it is parsed
    response, _ = allow(token_event(f"Bearer {largest}"), caplog)
    assert response["principalId"] == USER_ID
    assert deny(token_event(f"Bearer {smallest}"), caplog, capsys, smallest)["reason"] == "token_too_large"


# ------------------------------------------------------------------------------ the credential itself

HEADER_VALUES_DENIED = [
    pytest.param(lambda t: None, "missing_token", id="absent"),
    pytest.param(lambda t: "", "missing_token", id="empty"),
    pytest.param(lambda t: "   ", "missing_token", id="blank"),
    pytest.param(lambda t: "Bearer", "malformed_authorization", id="scheme-only"),
    pytest.param(lambda t: "Bearer   ", "malformed_authorization", id="scheme-and-spaces"),
    pytest.param(lambda t: "Basic dXNlcjpwYXNzd29yZA==", "bad_scheme", id="basic"),
    pytest.param(lambda t: t, "bad_scheme", id="no-scheme"),
    pytest.param(lambda t: f"Token {t}", "bad_scheme", id="other-scheme"),
    pytest.param(lambda t: f"Bearer{t}", "bad_scheme", id="no-space"),
    pytest.param(lambda t: f"Bearer\t{t}", "bad_scheme", id="tab-separator"),
    pytest.param(lambda t: f"Bearer {t} {t}", "malformed_authorization", id="two-tokens"),
    pytest.param(lambda t: f"Bearer {t},{t}", "malformed", id="two-tokens-comma"),
    pytest.param(lambda t: f"Bearer {t}\r\nX-Admin: true", "malformed_authorization", id="header-injection"),
    pytest.param(lambda t: f"Bearer {t}\n", "malformed_authorization", id="trailing-newline"),
    pytest.param(lambda t: "Bearer " + "a" * 9000, "token_too_large", id="oversized-header"),
    pytest.param(lambda t: [f"Bearer {t}"], "malformed_authorization", id="not-a-string"),
]


@pytest.mark.parametrize("make_event", [token_event, request_event], ids=["rest_token", "rest_request"])
@pytest.mark.parametrize(("value", "reason"), HEADER_VALUES_DENIED)
def test_authorization_value_is_refused(
    make_event: Callable[[Any], dict[str, Any]],
    value: Callable[[str], Any],
    reason: str,
    kit: Kit,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = kit.token()
    log = deny(make_event(value(token)), caplog, capsys, credential=token)
    assert log["reason"] == reason


# RFC 7235 section 2.1: the scheme is case-insensitive; surrounding whitespace is not part of the value.
@pytest.mark.parametrize("make_event", [token_event, request_event], ids=["rest_token", "rest_request"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda t: f"bearer {t}", id="lower-case-scheme"),
        pytest.param(lambda t: f"BEARER {t}", id="upper-case-scheme"),
        pytest.param(lambda t: f"  Bearer   {t}  ", id="extra-spaces"),
        pytest.param(lambda t: f"Bearer {t}\t", id="trailing-tab"),
    ],
)
def test_authorization_value_variants_are_accepted(
    make_event: Callable[[Any], dict[str, Any]],
    value: Callable[[str], str],
    kit: Kit,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response, _ = allow(make_event(value(kit.token())), caplog)
    assert response["principalId"] == USER_ID


@pytest.mark.parametrize("header_name", ["authorization", "AUTHORIZATION", "AuThOrIzAtIoN"])
def test_request_header_name_is_case_insensitive(
    header_name: str, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    response, _ = allow(request_event(f"Bearer {kit.token()}", header_name=header_name), caplog)
    assert response == expected_allow("rest_request", int(kit.now) + 3600)


def test_two_authorization_headers_are_refused(
    kit: Kit, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    event = request_event(f"Bearer {kit.token()}")
    event["multiValueHeaders"]["Authorization"].append(f"Bearer {kit.token(kit.keys.ec)}")
    assert deny(event, caplog, capsys)["reason"] == "multiple_credentials"


def test_authorization_headers_differing_in_case_are_refused(
    kit: Kit, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    event = request_event(f"Bearer {kit.token()}")
    event["headers"]["authorization"] = f"Bearer {kit.token(sub='someone-else')}"
    assert deny(event, caplog, capsys)["reason"] == "multiple_credentials"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(
            lambda e, t: e.update(queryStringParameters=None, multiValueQueryStringParameters=None),
            "missing_token",
            id="no-query",
        ),
        pytest.param(
            lambda e, t: e.update(
                queryStringParameters={"token": ""}, multiValueQueryStringParameters={"token": [""]}
            ),
            "missing_token",
            id="empty",
        ),
        pytest.param(
            lambda e, t: e.update(queryStringParameters={}, multiValueQueryStringParameters={}),
            "missing_token",
            id="other-parameters-only",
        ),
        pytest.param(
            lambda e, t: e["multiValueQueryStringParameters"]["token"].append(t + "x"),
            "multiple_credentials",
            id="two-tokens",
        ),
        pytest.param(
            lambda e, t: e.update(
                queryStringParameters={"token": f"Bearer {t}"}, multiValueQueryStringParameters=None
            ),
            "malformed",
            id="bearer-prefix",
        ),
        pytest.param(
            lambda e, t: (
                e.update(queryStringParameters=None, multiValueQueryStringParameters=None),
                e["headers"].update(Authorization=f"Bearer {t}"),
            ),
            "missing_token",
            id="header-instead-of-query",
        ),
    ],
)
def test_websocket_credential_is_refused(
    mutate: Callable[[dict[str, Any], str], Any],
    reason: str,
    kit: Kit,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = kit.token()
    event = websocket_event(token)
    mutate(event, token)
    assert deny(event, caplog, capsys, credential=token)["reason"] == reason


def test_websocket_token_in_the_single_value_map_only_is_enough(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    event = websocket_event(kit.token(kit.keys.ec))
    event["multiValueQueryStringParameters"] = None
    response, _ = allow(event, caplog)
    assert response == expected_allow("websocket", int(kit.now) + 3600)


# ---------------------------------------------------------------------------------- the event itself


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(lambda e: e.pop("methodArn"), "bad_method_arn", id="method-arn-missing"),
        pytest.param(lambda e: e.update(methodArn="*"), "bad_method_arn", id="method-arn-wildcard"),
        pytest.param(
            lambda e: e.update(methodArn="arn:aws:lambda:eu-west-1:123456789012:function:x"),
            "bad_method_arn",
            id="method-arn-other-service",
        ),
        pytest.param(
            lambda e: e.update(methodArn="arn:aws:execute-api:eu-west-1:123456789012:*/prod/GET/x"),
            "bad_method_arn",
            id="method-arn-wildcard-api",
        ),
        pytest.param(lambda e: e.update(type="HTTP"), "bad_event", id="unknown-type"),
        pytest.param(lambda e: e.pop("type"), "bad_event", id="no-type"),
    ],
)
def test_malformed_event_is_denied(
    mutate: Callable[[dict[str, Any]], Any],
    reason: str,
    kit: Kit,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = kit.token()
    event = token_event(f"Bearer {token}")
    mutate(event)
    assert deny(event, caplog, capsys, credential=token)["reason"] == reason


@pytest.mark.parametrize(
    ("method_arn", "resource"),
    [
        (
            "arn:aws:execute-api:us-east-1:210987654321:zz99yy88xx/v1/DELETE/orgs/acme/tasks/7",
            "arn:aws:execute-api:us-east-1:210987654321:zz99yy88xx/v1/*",
        ),
        (
            "arn:aws-us-gov:execute-api:us-gov-west-1:123456789012:abc123/prod/GET/",
            "arn:aws-us-gov:execute-api:us-gov-west-1:123456789012:abc123/prod/*",
        ),
        (
            "arn:aws:execute-api:eu-west-1:123456789012:w9x8y7z6v5/dev/$connect",
            "arn:aws:execute-api:eu-west-1:123456789012:w9x8y7z6v5/dev/*",
        ),
    ],
)
def test_policy_covers_the_whole_stage(
    method_arn: str, resource: str, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    event = token_event(f"Bearer {kit.token()}")
    event["methodArn"] = method_arn
    response, _ = allow(event, caplog)
    assert response["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}
    ]


def test_an_unexpected_error_denies_without_a_traceback(
    kit: Kit, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken_keys(kid: str) -> None:
        raise RuntimeError(f"boom while looking up {kid}")

    live = handler.get_authorizer()
    handler.reset(handler.Authorizer(live.settings, broken_keys))
    token = kit.token()
    log = deny(token_event(f"Bearer {token}"), caplog, capsys, credential=token)
    assert log == {
        "decision": "deny",
        "event": "TOKEN",
        "reason": "internal_error",
        "error": "RuntimeError",
        "org_id": None,
        "sub": None,
        "jti": None,
    }
    assert "boom" not in caplog.text


# ------------------------------------------------------------------------- lifecycle and the contract


def test_import_is_cheap_and_reads_nothing() -> None:
    # GIVEN no JWT_* variable at all WHEN the handler module is imported THEN nothing is read or built
    code = (
        "import sys; sys.path.insert(0, 'lambdas'); import authorizer.handler as h; "
        "print(h._authorizer is None, 'boto3' in sys.modules, 'botocore' in sys.modules)"
    )
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "False", "False"]


def test_configuration_is_read_on_the_first_call_and_kept(
    emulator: Emulator, keys: Keys, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret_id = f"tenantforge/test-{uuid.uuid4().hex[:8]}/jwt/jwks"
    emulator.client("secretsmanager").create_secret(
        Name=secret_id, SecretString=json.dumps({"keys": [keys.ec.jwk]})
    )
    aws_env(monkeypatch, emulator, secret_id)
    monkeypatch.setenv("JWT_ALGORITHMS", "ES256")
    handler.reset()
    token = encode(keys.ec, claims(time.time()))
    response, _ = allow(token_event(f"Bearer {token}"), caplog)
    assert response["principalId"] == USER_ID
    first = handler.get_authorizer()
    assert first.settings.algorithms == ("ES256",)
    # Changing the environment of a warm container changes nothing: settings are read once.
    monkeypatch.setenv("JWT_ALGORITHMS", "RS256")
    handler.handler(token_event(f"Bearer {token}"), LambdaContext())
    assert handler.get_authorizer() is first


def test_an_hmac_allow_list_fails_at_the_first_call(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws_env(monkeypatch, emulator, "tenantforge/test/jwt/jwks")
    monkeypatch.setenv("JWT_ALGORITHMS", "RS256,HS256")
    handler.reset()
    with pytest.raises(ConfigError, match="JWT_ALGORITHMS: HS256 not allowed"):
        handler.handler(token_event("Bearer x.y.z"), LambdaContext())


def test_the_keys_platform_secret_generates_verify(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the two secrets as tenantforge.platform.platform_secret writes them (after one rotation)
    desired = secret_material.Desired(
        name="tenantforge/test/jwt/signing-key",
        kind="jwt_signing_key",
        jwks_name="tenantforge/test/jwt/jwks",
        algorithm="ES256",
    )
    first = secret_material.plan(desired, None)
    rotated = secret_material.plan(
        dataclasses.replace(desired, algorithm="RS256", rsa_key_size=2048, rotate=True),
        first.secret_string,
        first.jwks_string,
    )
    secret_id = f"tenantforge/test-{uuid.uuid4().hex[:8]}/jwt/jwks"
    emulator.client("secretsmanager").create_secret(Name=secret_id, SecretString=rotated.jwks_string)
    aws_env(monkeypatch, emulator, secret_id)
    handler.reset()
    # WHEN tokens are signed with the current and with the previous private key and their kids
    for value in (rotated.value, first.value):
        private_key = serialization.load_pem_private_key(value["private_key_pem"].encode(), password=None)
        token = encode(Signer(private_key, value["kid"], value["alg"]), claims(time.time()))
        # THEN both verify (the previous key stays published until its tokens expire)
        response, _ = allow(token_event(f"Bearer {token}"), caplog)
        assert response["context"]["org_id"] == ORG_ID


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (None, "internal_error"),
        ([], "internal_error"),
        ("Bearer x.y.z", "internal_error"),
        (
            {"type": "TOKEN", "authorizationToken": 42, "methodArn": STAGE_RESOURCE["rest_token"]},
            "malformed_authorization",
        ),
    ],
)
def test_an_event_of_the_wrong_shape_is_denied(
    event: Any, reason: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deny(event, caplog, capsys)["reason"] == reason
