"""Token verification alone (lambdas/tenantforge_lambda/tokens.py): plain values, a frozen ``now``.

The hostile table runs through the handler in test_authorizer.py; here are the exact boundaries of
the times and the size, the typed result, and what a refusal carries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from jwt import PyJWK
from token_factory import AUDIENCE, ISSUER, JTI, ORG_ID, ORG_SLUG, USER_ID, Signer, claims, encode, rsa_signer

from tenantforge_lambda.config import Settings
from tenantforge_lambda.jwks import JwksUnavailable
from tenantforge_lambda.tokens import Claims, TokenError, read_header, verify_token

NOW = 1_796_119_200
SETTINGS = Settings(algorithms=("RS256", "ES256"), issuer=ISSUER, audience=AUDIENCE, jwks_secret_id="unused")


@pytest.fixture(scope="module")
def signer() -> Signer:
    return rsa_signer()


@pytest.fixture(scope="module")
def keys(signer: Signer) -> dict[str, PyJWK]:
    return {signer.kid: PyJWK(signer.jwk)}


def verify(token: str, keys: dict[str, PyJWK], now: float, settings: Settings = SETTINGS) -> Claims:
    return verify_token(token, settings, keys.get, now)


def reason(token: str, keys: dict[str, PyJWK], now: float, settings: Settings = SETTINGS) -> str:
    with pytest.raises(TokenError) as raised:
        verify(token, keys, now, settings)
    return raised.value.reason


def test_a_valid_token_gives_typed_claims(signer: Signer, keys: dict[str, PyJWK]) -> None:
    assert verify(encode(signer, claims(NOW)), keys, NOW) == Claims(
        sub=USER_ID,
        org_id=ORG_ID,
        org_slug=ORG_SLUG,
        permissions=("tasks:create", "tasks:read", "users:read"),
        roles=("admin", "member"),
        iat=NOW,
        nbf=NOW,
        exp=NOW + 3600,
        jti=JTI,
        auth_time=NOW - 600,
    )


@pytest.mark.parametrize(
    ("overrides", "now", "expected"),
    [
        # exp: valid while now < exp + leeway (30 s).
        ({}, NOW + 3600 + 29, None),
        ({}, NOW + 3600 + 30, "expired"),
        # nbf and iat: valid up to leeway seconds in the future.
        ({"nbf": NOW + 30}, NOW, None),
        ({"nbf": NOW + 31}, NOW, "not_yet_valid"),
        ({"iat": NOW + 30, "exp": NOW + 3630}, NOW, None),
        ({"iat": NOW + 31, "exp": NOW + 3631}, NOW, "issued_in_future"),
        # The issuer's limits: exp - iat at most the idle period, exp - auth_time at most the session.
        ({"exp": NOW + 3600}, NOW, None),
        ({"exp": NOW + 3601}, NOW, "lifetime_exceeded"),
        ({"auth_time": NOW + 3600 - 43200}, NOW, None),
        ({"auth_time": NOW + 3600 - 43201}, NOW, "session_exceeded"),
    ],
)
def test_time_boundaries(
    overrides: dict[str, Any], now: int, expected: str | None, signer: Signer, keys: dict[str, PyJWK]
) -> None:
    token = encode(signer, claims(NOW, **overrides))
    if expected is None:
        assert verify(token, keys, now).jti == JTI
    else:
        assert reason(token, keys, now) == expected


def test_inactivity_59_minutes_allowed_61_denied(signer: Signer, keys: dict[str, PyJWK]) -> None:
    # A token from the last activity (sign-in or refresh) expires JWT_IDLE_TTL_SECONDS later.
    token = encode(signer, claims(NOW))
    assert verify(token, keys, NOW + 59 * 60).exp == NOW + 3600
    assert reason(token, keys, NOW + 61 * 60) == "expired"


def test_leeway_zero_is_exact(signer: Signer, keys: dict[str, PyJWK]) -> None:
    strict = dataclasses.replace(SETTINGS, leeway_seconds=0)
    token = encode(signer, claims(NOW))
    assert verify(token, keys, NOW + 3599, strict).exp == NOW + 3600
    assert reason(token, keys, NOW + 3600, strict) == "expired"
    assert reason(token, keys, NOW - 1, strict) == "not_yet_valid"


def test_the_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(TokenError, match=r"^token_too_large$"):
        read_header("a" * 8193)
    with pytest.raises(TokenError, match=r"^malformed$"):
        read_header("a" * 8192)


def test_a_refusal_after_the_signature_carries_the_claims(signer: Signer, keys: dict[str, PyJWK]) -> None:
    with pytest.raises(TokenError) as raised:
        verify(encode(signer, claims(NOW)), keys, NOW + 7200)
    assert raised.value.reason == "expired"
    assert raised.value.payload is not None
    assert raised.value.payload["org_id"] == ORG_ID


def test_a_refusal_before_the_signature_carries_nothing(keys: dict[str, PyJWK]) -> None:
    impostor = rsa_signer()
    token = encode(Signer(impostor.key, next(iter(keys)), "RS256"), claims(NOW))
    with pytest.raises(TokenError) as raised:
        verify(token, keys, NOW)
    assert (raised.value.reason, raised.value.payload) == ("bad_signature", None)


def test_an_unavailable_jwks_is_a_refusal(signer: Signer) -> None:
    def unavailable(kid: str) -> PyJWK | None:
        raise JwksUnavailable("down")

    with pytest.raises(TokenError, match=r"^jwks_unavailable$"):
        verify_token(encode(signer, claims(NOW)), SETTINGS, unavailable, NOW)


def test_an_algorithm_allowed_by_the_key_but_not_by_the_settings_is_refused(
    signer: Signer, keys: dict[str, PyJWK]
) -> None:
    es_only = dataclasses.replace(SETTINGS, algorithms=("ES256",))
    assert reason(encode(signer, claims(NOW)), keys, NOW, es_only) == "alg_not_allowed"
