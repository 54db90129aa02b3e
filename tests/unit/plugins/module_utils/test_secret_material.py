"""The pure generation and planning logic of platform_secret, with plain values (no AWS, no mocks)."""

from __future__ import annotations

import base64
import json
import re
import string
from typing import Any

import pytest
from conftest import assert_jwk_verifies
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.tenantforge.platform.plugins.module_utils import secret_material as sm

NAME = "tenantforge/test/postgres/superuser"
JWT_NAME = "tenantforge/test/tokens/signing-key"
JWKS_NAME = "tenantforge/test/tokens/jwks"
B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def credentials(**overrides: Any) -> sm.Desired:
    params: dict[str, Any] = {
        "name": NAME,
        "kind": "credentials",
        "username": "postgres",
        "extra": {"database": "tenantforge"},
    }
    params.update(overrides)
    return sm.Desired(**params)


def jwt(**overrides: Any) -> sm.Desired:
    params: dict[str, Any] = {
        "name": JWT_NAME,
        "kind": "jwt_signing_key",
        "jwks_name": JWKS_NAME,
        "algorithm": "RS256",
        "rsa_key_size": 2048,
    }
    params.update(overrides)
    return sm.Desired(**params)


# ------------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("length", [20, 32, 128])
def test_password_length_and_alphabet(length: int) -> None:
    password = sm.generate_password(length)
    assert len(password) == length
    assert set(password) <= set(string.ascii_letters + string.digits)
    assert any(c.islower() for c in password)
    assert any(c.isupper() for c in password)
    assert any(c.isdigit() for c in password)


def test_passwords_differ() -> None:
    assert len({sm.generate_password() for _ in range(20)}) == 20


@pytest.mark.parametrize("length", [19, 129])
def test_password_length_out_of_range_names_the_option(length: int) -> None:
    with pytest.raises(sm.SecretError, match="password_length"):
        sm.generate_password(length)
    with pytest.raises(sm.SecretError, match="password_length"):
        sm.plan(credentials(password_length=length), None)


def test_cookie_shape() -> None:
    cookie = sm.generate_cookie()
    assert re.fullmatch(r"[A-Z0-9]{48}", cookie)
    assert cookie != sm.generate_cookie()


# ------------------------------------------------------------------------------------------------ JWK


def test_thumbprint_matches_rfc7638_example() -> None:
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
            "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
            "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
            "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
            "Cur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert sm.jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_kid_is_stable_for_the_same_key(algorithm: str) -> None:
    key = sm.generate_private_key(algorithm, 2048)
    reloaded = sm.load_private_key(sm.private_key_to_pem(key), JWT_NAME)
    first, second = sm.public_jwk(key), sm.public_jwk(reloaded)
    assert first == second
    assert first["kid"] == sm.jwk_thumbprint(first)
    assert first["kid"] != sm.public_jwk(sm.generate_private_key(algorithm, 2048))["kid"]


def test_rsa_jwk_members_and_round_trip() -> None:
    key = sm.generate_private_key("RS256", 2048)
    pem = sm.private_key_to_pem(key)
    assert pem.splitlines()[0].strip("-") == "BEGIN PRIVATE KEY"  # PKCS#8, unencrypted
    jwk = sm.public_jwk(key)
    assert list(jwk) == ["kty", "kid", "use", "alg", "n", "e"]
    assert (jwk["kty"], jwk["use"], jwk["alg"], jwk["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert all(B64URL.match(jwk[m]) for m in ("kid", "n", "e"))
    assert len(base64.urlsafe_b64decode(jwk["n"] + "==")) == 256
    assert_jwk_verifies(pem, jwk)


def test_ec_jwk_members_and_round_trip() -> None:
    key = sm.generate_private_key("ES256")
    pem = sm.private_key_to_pem(key)
    jwk = sm.public_jwk(key)
    assert list(jwk) == ["kty", "kid", "use", "alg", "crv", "x", "y"]
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")
    for member in ("x", "y"):
        assert B64URL.match(jwk[member])
        assert len(sm.b64url_decode(jwk[member])) == 32
    assert_jwk_verifies(pem, jwk)


def test_rsa_key_size_is_honoured() -> None:
    key = sm.generate_private_key("RS256", 3072)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 3072


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("username", ["Postgres", "1user", "user-name", "a" * 64, ""])
def test_bad_username_names_the_option(username: str) -> None:
    with pytest.raises(sm.SecretError, match="username"):
        sm.plan(credentials(username=username), None)


def test_username_rules_accept_postgres_names() -> None:
    for username in ("postgres", "_app", "tenant_42", "a" * 63):
        sm.validate(credentials(username=username))


def test_extra_cannot_override_managed_fields() -> None:
    with pytest.raises(sm.SecretError, match=r"extra\.password"):
        sm.plan(credentials(extra={"password": "x"}), None)
    with pytest.raises(sm.SecretError, match=r"extra\.kid"):
        sm.plan(jwt(extra={"kid": "x"}), None)


def test_extra_values_must_be_strings() -> None:
    with pytest.raises(sm.SecretError, match=r"extra\.port"):
        sm.plan(credentials(extra={"port": 5432}), None)


def test_jwks_name_required_and_distinct() -> None:
    with pytest.raises(sm.SecretError, match="jwks_name"):
        sm.plan(jwt(jwks_name=None), None)
    with pytest.raises(sm.SecretError, match="jwks_name"):
        sm.plan(jwt(jwks_name=JWT_NAME), None)


# -------------------------------------------------------------------------------- credentials plan


def test_create_credentials_shape() -> None:
    result = sm.plan(credentials(), None)
    assert result.write and result.generated and result.reasons == ["create"]
    assert list(result.value) == ["username", "password", "database"]
    assert result.value["username"] == "postgres"
    assert result.value["database"] == "tenantforge"
    assert len(result.value["password"]) == 32
    assert json.loads(result.secret_string) == result.value
    assert result.generated_value == result.value["password"]


def test_unchanged_credentials_write_nothing() -> None:
    current = sm.plan(credentials(), None).secret_string
    result = sm.plan(credentials(), current)
    assert not result.write and not result.generated
    assert result.secret_string == current


def test_extra_change_keeps_password() -> None:
    first = sm.plan(credentials(), None)
    result = sm.plan(credentials(extra={"database": "other", "host": "db.internal"}), first.secret_string)
    assert result.write and not result.generated
    assert result.value["password"] == first.value["password"]
    assert result.value["database"] == "other" and result.value["host"] == "db.internal"
    assert result.reasons == ["field database changed", "field host changed"]


def test_removed_extra_field_is_dropped_and_password_kept() -> None:
    first = sm.plan(credentials(), None)
    result = sm.plan(credentials(extra={}), first.secret_string)
    assert result.write
    assert result.value == {"username": "postgres", "password": first.value["password"]}


def test_username_change_keeps_password() -> None:
    first = sm.plan(credentials(), None)
    result = sm.plan(credentials(username="app"), first.secret_string)
    assert result.write and result.value["username"] == "app"
    assert result.value["password"] == first.value["password"]


def test_password_length_change_does_not_regenerate() -> None:
    first = sm.plan(credentials(), None)
    result = sm.plan(credentials(password_length=64), first.secret_string)
    assert not result.write and result.value["password"] == first.value["password"]


def test_rotate_generates_a_new_password() -> None:
    first = sm.plan(credentials(), None)
    result = sm.plan(credentials(rotate=True, password_length=40), first.secret_string)
    assert result.write and result.generated and result.reasons == ["rotate"]
    assert result.value["password"] != first.value["password"]
    assert len(result.value["password"]) == 40
    # rotating an existing secret whose value was not read
    unread = sm.plan(credentials(rotate=True), None, exists=True)
    assert unread.reasons == ["rotate"]


@pytest.mark.parametrize(
    "current",
    ["not json SENTINEL-VALUE", '["SENTINEL-VALUE"]', '{"username": "postgres", "pass": "SENTINEL-VALUE"}'],
)
def test_malformed_current_value_names_secret_and_field(current: str) -> None:
    with pytest.raises(sm.SecretError) as raised:
        sm.plan(credentials(), current)
    message = str(raised.value)
    assert NAME in message and "'password'" in message
    assert "SENTINEL-VALUE" not in message
    assert "rotate" in message


def test_binary_secret_is_malformed_not_missing() -> None:
    with pytest.raises(sm.SecretError, match="password"):
        sm.plan(credentials(), None, exists=True)


def test_malformed_current_value_is_replaced_with_rotate() -> None:
    result = sm.plan(credentials(rotate=True), "not json")
    assert result.write and result.generated and len(result.value["password"]) == 32


def test_plan_repr_hides_the_value() -> None:
    result = sm.plan(credentials(), None)
    assert result.value["password"] not in repr(result)


# ------------------------------------------------------------------------------------- cookie plan


def test_cookie_plan_shape_and_keep() -> None:
    desired = sm.Desired(name="tenantforge/test/rabbitmq/cookie", kind="erlang_cookie")
    created = sm.plan(desired, None)
    assert list(created.value) == ["cookie"]
    assert re.fullmatch(r"[A-Z0-9]{48}", created.value["cookie"])
    kept = sm.plan(desired, created.secret_string)
    assert not kept.write and kept.value == created.value
    with pytest.raises(sm.SecretError, match="'cookie'"):
        sm.plan(desired, json.dumps({"password": "x"}))


# ---------------------------------------------------------------------------------------- jwt plan


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_create_signing_key_and_jwks(algorithm: str) -> None:
    result = sm.plan(jwt(algorithm=algorithm), None)
    assert result.write and result.generated and result.write_jwks
    assert list(result.value) == ["kid", "alg", "private_key_pem"]
    assert result.value["alg"] == algorithm and result.value["kid"] == result.kid
    assert result.jwks is not None and len(result.jwks["keys"]) == 1
    (jwk,) = result.jwks["keys"]
    assert jwk["kid"] == result.kid and jwk["alg"] == algorithm and jwk["use"] == "sig"
    assert "d" not in jwk  # public members only
    assert_jwk_verifies(result.value["private_key_pem"], jwk)


def test_unchanged_signing_key_writes_nothing() -> None:
    first = sm.plan(jwt(), None)
    result = sm.plan(jwt(), first.secret_string, first.jwks_string)
    assert not result.write and not result.write_jwks and not result.generated
    assert result.kid == first.kid and result.value == first.value


def test_rotate_keeps_previous_key_in_jwks() -> None:
    first = sm.plan(jwt(), None)
    second = sm.plan(jwt(rotate=True), first.secret_string, first.jwks_string)
    assert second.write and second.write_jwks and second.generated
    assert second.kid != first.kid
    assert second.jwks is not None and first.jwks is not None
    assert [k["kid"] for k in second.jwks["keys"]] == [second.kid, first.kid]
    assert second.jwks["keys"][1] == first.jwks["keys"][0]
    assert_jwk_verifies(first.value["private_key_pem"], second.jwks["keys"][1])

    third = sm.plan(jwt(rotate=True), second.secret_string, second.jwks_string)
    assert third.jwks is not None
    assert [k["kid"] for k in third.jwks["keys"]] == [third.kid, second.kid]  # at most 2, newest first

    settled = sm.plan(jwt(), third.secret_string, third.jwks_string)
    assert not settled.write and not settled.write_jwks


def test_missing_jwks_is_rebuilt_without_a_new_key() -> None:
    first = sm.plan(jwt(), None)
    result = sm.plan(jwt(), first.secret_string, None)
    assert not result.write and not result.generated and result.write_jwks
    assert result.jwks == first.jwks
    assert result.jwks_reasons == ["missing, rebuilt from the private key"]


def test_jwks_without_current_kid_is_repaired() -> None:
    first = sm.plan(jwt(), None)
    other = sm.plan(jwt(), None)
    result = sm.plan(jwt(), first.secret_string, other.jwks_string)
    assert result.write_jwks and not result.write
    assert result.jwks is not None
    assert [k["kid"] for k in result.jwks["keys"]] == [first.kid, other.kid]
    assert result.jwks_reasons == ["current key missing, added from the private key"]


def test_jwks_not_json_is_rebuilt_and_private_members_never_kept() -> None:
    first = sm.plan(jwt(), None)
    broken = sm.plan(jwt(), first.secret_string, "{not json")
    assert broken.write_jwks and broken.jwks == first.jwks

    assert first.jwks is not None
    leaky_previous = dict(sm.plan(jwt(), None).jwks["keys"][0], d="PRIVATE-EXPONENT")  # type: ignore[index]
    doc = json.dumps({"keys": [first.jwks["keys"][0], leaky_previous]})
    result = sm.plan(jwt(), first.secret_string, doc)
    assert result.write_jwks and result.jwks is not None
    assert "PRIVATE-EXPONENT" not in json.dumps(result.jwks)
    assert len(result.jwks["keys"]) == 2


def test_algorithm_change_generates_new_key_and_keeps_old_one_published() -> None:
    first = sm.plan(jwt(), None)
    result = sm.plan(jwt(algorithm="ES256"), first.secret_string, first.jwks_string)
    assert result.generated and result.reasons == ["algorithm changed"]
    assert result.value["alg"] == "ES256"
    assert result.jwks is not None
    assert [k["kty"] for k in result.jwks["keys"]] == ["EC", "RSA"]


def test_edited_kid_and_extra_are_fixed_without_new_key() -> None:
    first = sm.plan(jwt(), None)
    edited = dict(first.value, kid="wrong")
    result = sm.plan(jwt(extra={"issuer": "tenantforge"}), json.dumps(edited), first.jwks_string)
    assert result.write and not result.generated
    assert result.value["kid"] == first.kid and result.value["issuer"] == "tenantforge"
    assert result.value["private_key_pem"] == first.value["private_key_pem"]
    assert result.reasons == ["field issuer changed", "field kid changed"]


def test_malformed_private_key_names_secret_and_field() -> None:
    for current in ('{"kid": "x", "alg": "RS256"}', '{"private_key_pem": "SENTINEL-VALUE"}', "[]"):
        with pytest.raises(sm.SecretError) as raised:
            sm.plan(jwt(), current)
        assert JWT_NAME in str(raised.value) and "'private_key_pem'" in str(raised.value)
        assert "SENTINEL-VALUE" not in str(raised.value)
    rotated = sm.plan(jwt(rotate=True), '{"private_key_pem": "garbage"}', None)
    assert rotated.generated and rotated.jwks is not None and len(rotated.jwks["keys"]) == 1


# ------------------------------------------------------------------------------------ safe views


def test_safe_views_show_no_values() -> None:
    result = sm.plan(credentials(), None)
    text = result.secret_string
    assert sm.key_names(text) == ["database", "password", "username"]
    digest = sm.fingerprint(text)
    assert digest is not None and len(digest) == 12 and result.value["password"] not in digest
    assert sm.key_names("not json") is None and sm.fingerprint(None) is None
    signing = sm.plan(jwt(), None)
    assert sm.jwks_kids(signing.jwks_string) == [signing.kid]
