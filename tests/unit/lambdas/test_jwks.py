"""The JWKS cache (lambdas/tenantforge_lambda/jwks.py): rotation without a redeploy, and no fetch storms.

The rotation cases run the authorizer's handler against a JWKS secret in the tests' private moto
server, read with boto3 through AWS_ENDPOINT_URL, with one frozen clock for the token times and the
cache; every read of the secret is counted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from conftest import Emulator
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from token_factory import (
    AUDIENCE,
    ISSUER,
    FrozenClock,
    Signer,
    claims,
    ec_signer,
    encode,
    rsa_signer,
    token_event,
)

from authorizer import handler
from tenantforge_lambda import secrets
from tenantforge_lambda.config import Settings
from tenantforge_lambda.jwks import JwksCache, JwksUnavailable, parse_jwks, secrets_manager_fetch

ALLOWED = ("RS256", "ES256")


@dataclass
class CountingFetch:
    """A fetch function that counts its calls."""

    fetch: Callable[[], Any]
    calls: int = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.fetch()


@dataclass
class Rig:
    """The handler wired to a JWKS secret, a frozen clock and a fetch counter."""

    emulator: Emulator
    secret_id: str
    clock: FrozenClock = field(default_factory=FrozenClock)
    fetch: CountingFetch | None = None

    def install(self) -> None:
        settings = Settings(
            algorithms=ALLOWED, issuer=ISSUER, audience=AUDIENCE, jwks_secret_id=self.secret_id
        )
        self.fetch = CountingFetch(secrets_manager_fetch(self.secret_id))
        cache = JwksCache(
            self.fetch,
            settings.algorithms,
            settings.jwks_cache_seconds,
            settings.jwks_min_refetch_seconds,
            clock=self.clock,
        )
        handler.reset(handler.Authorizer(settings, cache.get, clock=self.clock))

    def publish(self, *signers: Signer) -> None:
        document = json.dumps({"keys": [signer.jwk for signer in signers]})
        self.emulator.client("secretsmanager").put_secret_value(
            SecretId=self.secret_id, SecretString=document
        )

    @property
    def fetches(self) -> int:
        assert self.fetch is not None
        return self.fetch.calls

    def decide(self, signer: Signer, kid: str | None = None) -> str:
        """``allow`` or the reason of the denial of a fresh token signed by ``signer``."""
        token = encode(Signer(signer.key, kid or signer.kid, signer.alg), claims(self.clock.now))
        try:
            handler.handler(token_event(f"Bearer {token}"), None)
        except Exception as error:
            assert str(error) == "Unauthorized"
            return "denied"
        return "allow"


@pytest.fixture
def rig(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    secret_id = f"tenantforge/test-{uuid.uuid4().hex[:8]}/jwt/jwks"
    emulator.client("secretsmanager").create_secret(Name=secret_id, SecretString='{"keys": []}')
    rig = Rig(emulator, secret_id)
    yield rig
    handler.reset()


@pytest.fixture(scope="module")
def key_a() -> Signer:
    return rsa_signer()


@pytest.fixture(scope="module")
def key_b() -> Signer:
    return ec_signer()


def reasons(caplog: pytest.LogCaptureFixture) -> list[str | None]:
    return [
        json.loads(r.getMessage())["reason"] for r in caplog.records if r.name == "tenantforge.authorizer"
    ]


# ------------------------------------------------------------------------------------------ rotation


def test_a_new_key_is_accepted_after_the_refetch_interval_without_a_restart(
    rig: Rig, key_a: Signer, key_b: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a warm authorizer that knows key A
    rig.publish(key_a)
    rig.install()
    assert rig.decide(key_a) == "allow"
    assert rig.fetches == 1
    # WHEN key B is published (a rotation: B first, A kept for the tokens it signed)
    rig.publish(key_b, key_a)
    # THEN a B token inside the refetch interval is refused without asking the store again
    rig.clock.advance(10)
    caplog.clear()
    assert rig.decide(key_b) == "denied"
    assert reasons(caplog) == ["unknown_kid"]
    assert rig.fetches == 1
    # AND once the interval has passed, the unknown kid triggers one fetch and B is accepted
    rig.clock.advance(20)
    assert rig.decide(key_b) == "allow"
    assert rig.fetches == 2
    assert rig.decide(key_a) == "allow"
    assert rig.decide(key_b) == "allow"
    assert rig.fetches == 2


def test_a_removed_key_is_refused_once_the_cache_expires(
    rig: Rig, key_a: Signer, key_b: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN an authorizer that cached keys B and A
    rig.publish(key_b, key_a)
    rig.install()
    assert rig.decide(key_a) == "allow"
    # WHEN A is withdrawn from the JWKS
    rig.publish(key_b)
    # THEN A is still accepted while the cache is fresh (300 s), with no fetch
    rig.clock.advance(299)
    assert rig.decide(key_a) == "allow"
    assert rig.fetches == 1
    # AND refused from the moment the cache expires: the refresh no longer holds it
    rig.clock.advance(1)
    caplog.clear()
    assert rig.decide(key_a) == "denied"
    assert reasons(caplog) == ["unknown_kid"]
    assert rig.fetches == 2
    assert rig.decide(key_b) == "allow"
    assert rig.fetches == 2


def test_an_unknown_kid_flood_costs_one_fetch_per_interval(
    rig: Rig, key_a: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    rig.publish(key_a)
    rig.install()
    assert rig.decide(key_a) == "allow"
    rig.clock.advance(30)
    caplog.clear()
    # 100 tokens with invented kids over 25 seconds: one refetch, at the first.
    for _ in range(100):
        assert rig.decide(key_a, kid=uuid.uuid4().hex) == "denied"
        rig.clock.advance(0.25)
    assert reasons(caplog) == ["unknown_kid"] * 100
    assert rig.fetches == 2
    # The next interval allows exactly one more; valid tokens in between cost nothing.
    rig.clock.advance(5)
    for _ in range(100):
        assert rig.decide(key_a, kid=uuid.uuid4().hex) == "denied"
        assert rig.decide(key_a) == "allow"
    assert rig.fetches == 3


def test_keys_are_cached_for_the_cache_period(rig: Rig, key_a: Signer) -> None:
    rig.publish(key_a)
    rig.install()
    for _ in range(50):
        assert rig.decide(key_a) == "allow"
        rig.clock.advance(5.9)
    assert rig.fetches == 1
    rig.clock.advance(10)  # 305 s after the first fetch
    assert rig.decide(key_a) == "allow"
    assert rig.fetches == 2


def test_an_unreadable_secret_fails_closed_and_is_not_asked_per_request(
    rig: Rig, key_a: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN keys cached from a readable secret, which then disappears
    rig.publish(key_a)
    rig.install()
    assert rig.decide(key_a) == "allow"
    rig.emulator.client("secretsmanager").delete_secret(
        SecretId=rig.secret_id, ForceDeleteWithoutRecovery=True
    )
    # THEN the cached key still serves until the cache expires
    rig.clock.advance(200)
    assert rig.decide(key_a) == "allow"
    assert rig.fetches == 1
    # AND after it, every request is denied, with one attempt per refetch interval
    rig.clock.advance(100)
    caplog.clear()
    for _ in range(20):
        assert rig.decide(key_a) == "denied"
        rig.clock.advance(1)
    assert reasons(caplog) == ["jwks_unavailable"] * 20
    assert rig.fetches == 2
    rig.clock.advance(10)
    assert rig.decide(key_a) == "denied"
    assert rig.fetches == 3


def test_a_secret_that_is_not_a_jwks_fails_closed(
    rig: Rig, key_a: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    rig.emulator.client("secretsmanager").put_secret_value(SecretId=rig.secret_id, SecretString="-----BEGIN")
    rig.install()
    caplog.clear()
    assert rig.decide(key_a) == "denied"
    assert reasons(caplog) == ["jwks_unavailable"]
    assert "BEGIN" not in caplog.text


# ------------------------------------------------------------------------------ the cache, alone


def test_a_failed_fetch_keeps_fresh_keys_for_known_kids() -> None:
    clock = FrozenClock()
    signer = rsa_signer()
    documents: list[Any] = [{"keys": [signer.jwk]}, RuntimeError("throttled")]

    def fetch() -> Any:
        document = documents.pop(0)
        if isinstance(document, Exception):
            raise document
        return document

    cache = JwksCache(fetch, ALLOWED, 300, 30, clock=clock)
    assert cache.get(signer.kid) is not None
    clock.advance(30)
    with pytest.raises(JwksUnavailable, match=r"could not be read \(RuntimeError\)"):
        cache.get("rotated-in")
    assert cache.get(signer.kid) is not None
    assert documents == []


# ---------------------------------------------------------------------------------- parse_jwks


def rsa_jwk(**extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), **extra}


def ec_jwk(curve: ec.EllipticCurve, **extra: Any) -> dict[str, Any]:
    key = ec.generate_private_key(curve)
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), **extra}


def test_only_usable_signature_keys_are_kept() -> None:
    keys = parse_jwks(
        {
            "keys": [
                rsa_jwk(kid="rsa"),
                ec_jwk(ec.SECP256R1(), kid="ec"),
                rsa_jwk(kid="rsa-declared", alg="RS256", use="sig"),
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac-declared", "alg": "HS256"},
                rsa_jwk(kid="encryption", use="enc"),
                rsa_jwk(kid="rsa-as-ec", alg="ES256"),
                ec_jwk(ec.SECP256R1(), kid="ec-as-rsa", alg="RS256"),
                ec_jwk(ec.SECP384R1(), kid="p384"),
                rsa_jwk(kid="rs512", alg="RS512"),
                {
                    **OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True),
                    "kid": "ed",
                },
                rsa_jwk(),
                rsa_jwk(kid=7),
                rsa_jwk(kid=""),
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                "not a key",
            ]
        },
        ALLOWED,
    )
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {
        "rsa": "RS256",
        "ec": "ES256",
        "rsa-declared": "RS256",
    }


def test_an_algorithm_outside_the_default_pair_is_kept_when_allowed() -> None:
    keys = parse_jwks(
        {"keys": [ec_jwk(ec.SECP384R1(), kid="p384"), rsa_jwk(kid="ps", alg="PS256")]}, ["ES384", "PS256"]
    )
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {"p384": "ES384", "ps": "PS256"}


def test_private_members_published_by_mistake_are_dropped() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private)), "kid": "leaked"}
    assert "d" in jwk
    (key,) = parse_jwks({"keys": [jwk]}, ALLOWED).values()
    assert isinstance(key.key, rsa.RSAPublicKey)


def test_the_first_key_of_a_kid_wins() -> None:
    first, second = rsa_jwk(kid="same"), rsa_jwk(kid="same")
    (key,) = parse_jwks(json.dumps({"keys": [first, second]}), ALLOWED).values()
    expected = RSAAlgorithm.from_jwk(first)
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert isinstance(expected, rsa.RSAPublicKey)
    assert key.key.public_numbers() == expected.public_numbers()


def test_an_empty_key_list_holds_no_key() -> None:
    assert parse_jwks({"keys": []}, ALLOWED) == {}


@pytest.mark.parametrize("document", ["not json", "[]", '{"keys": {}}', '{"key": []}', 42, None])
def test_a_document_that_is_not_a_jwks_is_refused(document: Any) -> None:
    with pytest.raises(JwksUnavailable):
        parse_jwks(document, ALLOWED)


def test_the_boto3_client_is_created_on_the_first_fetch_and_reused(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    secret_id = f"tenantforge/test-{uuid.uuid4().hex[:8]}/jwt/jwks"
    emulator.client("secretsmanager").create_secret(Name=secret_id, SecretString='{"keys": []}')
    created: list[str] = []
    real_client = boto3.client

    def counting_client(service: str, **kwargs: Any) -> Any:
        created.append(service)
        return real_client(service, **kwargs)

    monkeypatch.setattr(boto3, "client", counting_client)
    monkeypatch.setattr(secrets, "_clients", [])  # as in a new container
    fetch = secrets_manager_fetch(secret_id)
    assert created == []
    assert [json.loads(fetch()) for _ in range(4)] == [{"keys": []}] * 4
    assert created == ["secretsmanager"]
