"""Verification of the platform's access tokens (RFC 8725 practices), with PyJWT and cryptography.

Order of the checks, cheapest and least trusting first:

1. size (at most 8 KiB) and shape (three non-empty base64url segments), before anything is decoded;
2. the header alone: no ``jku``/``x5u``/``jwk``/``x5c`` (keys named by the token are never fetched or
   trusted), no ``crit``/``b64`` (no extension is understood), ``alg`` in the allow-list, ``typ``
   ``JWT`` or ``at+jwt``, a ``kid``;
3. the key published under that kid, whose algorithm must be the header's (an ES256 header on an RSA
   key is refused before PyJWT sees it);
4. ``jwt.decode`` with ``algorithms=[that one algorithm]``: the signature, the presence of every
   required claim, ``iss`` and ``aud``;
5. the type of every claim, then the times against ``now`` with the leeway. The times are checked
   here rather than by PyJWT so that the caller's clock decides (tests freeze it) and ``"exp": "9"``
   is refused instead of being read as a number.

Every refusal is a :class:`TokenError` with a short machine ``reason``; nothing in it comes from the
token except, once the signature is verified, the claims for the caller's log line.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidJTIError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)

from tenantforge_lambda.config import Settings
from tenantforge_lambda.jwks import MAX_KID_LENGTH, JwksUnavailable

MAX_TOKEN_BYTES = 8 * 1024
# RFC 7515 section 4.1.9: typ is a media type, compared case-insensitively, "application/" optional.
TOKEN_TYPES = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
# Keys or certificates carried or pointed at by the token (RFC 8725 section 3.10), and extensions.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit", "b64")
REQUIRED_CLAIMS = (
    "iss",
    "aud",
    "sub",
    "org_id",
    "org_slug",
    "permissions",
    "roles",
    "iat",
    "nbf",
    "exp",
    "jti",
    "auth_time",
)
MAX_STRING_CLAIM_LENGTH = 256
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# The organizations_slug_check constraint of the database.
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])")
# Permission keys and role names end up comma-joined in the authorizer context: no commas, no blanks.
LIST_ITEM = re.compile(r"[^,\s](?:[^,]*[^,\s])?")

KeyLookup = Callable[[str], PyJWK | None]


class TokenError(Exception):
    """A refused token. ``reason`` is short and machine-readable (``expired``, ``missing_claim:org_id``);
    ``payload`` holds the claims only when the signature was verified (for logging who it was)."""

    def __init__(self, reason: str, payload: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.payload = payload


@dataclass(frozen=True)
class Claims:
    """A verified token's claims, typed."""

    sub: str
    org_id: str
    org_slug: str
    permissions: tuple[str, ...]
    roles: tuple[str, ...]
    iat: int
    nbf: int
    exp: int
    jti: str
    auth_time: int

    @property
    def user_id(self) -> str:
        return self.sub


def read_header(token: str) -> dict[str, Any]:
    """The header of a compact JWS, after the size and shape checks (nothing is verified)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("token_too_large")
    segments = token.split(".")
    if len(segments) != 3 or not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise TokenError("malformed")
    try:
        raw = segments[0]
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        # One encoding per header: no trailing bits that a second parser could read differently.
        if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") != raw:
            raise ValueError("non-canonical base64url")
        header = json.loads(decoded, object_pairs_hook=_without_duplicates)
    except (ValueError, binascii.Error, RecursionError):
        raise TokenError("malformed") from None
    if not isinstance(header, dict):
        raise TokenError("malformed")
    return header


def check_header(header: Mapping[str, Any], settings: Settings) -> tuple[str, str]:
    """``(alg, kid)`` of an acceptable header; TokenError otherwise."""
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise TokenError(f"forbidden_header:{name}")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in settings.algorithms:
        raise TokenError("alg_not_allowed")
    if "typ" not in header:
        raise TokenError("missing_header:typ")
    token_type = header["typ"]
    if not isinstance(token_type, str) or token_type.lower() not in TOKEN_TYPES:
        raise TokenError("bad_typ")
    if "kid" not in header:
        raise TokenError("missing_header:kid")
    kid = header["kid"]
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise TokenError("bad_kid")
    return algorithm, kid


def verify_token(token: str, settings: Settings, keys: KeyLookup, now: float) -> Claims:
    """The claims of a valid token; :class:`TokenError` with the reason otherwise."""
    algorithm, kid = check_header(read_header(token), settings)
    try:
        key = keys(kid)
    except JwksUnavailable:
        raise TokenError("jwks_unavailable") from None
    if key is None:
        raise TokenError("unknown_kid")
    if key.algorithm_name != algorithm:
        raise TokenError("key_alg_mismatch")
    payload = _decode(token, key, algorithm, settings)
    try:
        claims = _typed_claims(payload)
        _check_times(claims, settings, now)
    except TokenError as error:
        raise TokenError(error.reason, payload) from None
    return claims


def _decode(token: str, key: PyJWK, algorithm: str, settings: Settings) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key=key,
            algorithms=[algorithm],
            audience=settings.audience,
            issuer=settings.issuer,
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_signature": True,
                "verify_aud": True,
                "verify_iss": True,
                "verify_sub": True,
                "verify_jti": True,
                # Checked by _check_times against the caller's clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "enforce_minimum_key_length": True,
            },
        )
    except InvalidSignatureError:
        raise TokenError("bad_signature") from None
    except MissingRequiredClaimError as error:
        raise TokenError(f"missing_claim:{error.claim}") from None
    except InvalidAudienceError:
        raise TokenError("bad_audience") from None
    except InvalidIssuerError:
        raise TokenError("bad_issuer") from None
    except InvalidSubjectError:
        raise TokenError("bad_claim:sub") from None
    except InvalidJTIError:
        raise TokenError("bad_claim:jti") from None
    except InvalidAlgorithmError:
        raise TokenError("alg_not_allowed") from None
    except InvalidKeyError:
        raise TokenError("bad_key") from None
    except DecodeError:
        raise TokenError("malformed") from None
    except PyJWTError:
        raise TokenError("invalid_token") from None


def _typed_claims(payload: Mapping[str, Any]) -> Claims:
    org_id = _string(payload, "org_id")
    try:
        canonical = str(uuid.UUID(org_id))
    except ValueError:
        canonical = ""
    if canonical != org_id:
        raise TokenError("bad_claim:org_id")
    org_slug = _string(payload, "org_slug")
    if not SLUG.fullmatch(org_slug):
        raise TokenError("bad_claim:org_slug")
    permissions = _string_list(payload, "permissions")
    if list(permissions) != sorted(set(permissions)):
        raise TokenError("bad_claim:permissions")
    return Claims(
        sub=_string(payload, "sub"),
        org_id=org_id,
        org_slug=org_slug,
        permissions=permissions,
        roles=_string_list(payload, "roles"),
        iat=_integer(payload, "iat"),
        nbf=_integer(payload, "nbf"),
        exp=_integer(payload, "exp"),
        jti=_string(payload, "jti"),
        auth_time=_integer(payload, "auth_time"),
    )


def _check_times(claims: Claims, settings: Settings, now: float) -> None:
    leeway = settings.leeway_seconds
    if claims.exp <= now - leeway:
        raise TokenError("expired")
    if claims.nbf > now + leeway:
        raise TokenError("not_yet_valid")
    if claims.iat > now + leeway:
        raise TokenError("issued_in_future")
    if claims.auth_time > claims.iat:
        raise TokenError("bad_claim:auth_time")
    # The issuer's own limits: exp is the last activity plus the idle period, and never later than
    # the sign-in plus the session maximum. A token outside them was not issued by the platform's rules.
    if claims.exp - claims.iat > settings.idle_ttl_seconds:
        raise TokenError("lifetime_exceeded")
    if claims.exp - claims.auth_time > settings.max_session_seconds:
        raise TokenError("session_exceeded")


def _string(payload: Mapping[str, Any], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_STRING_CLAIM_LENGTH:
        raise TokenError(f"bad_claim:{name}")
    return value


def _string_list(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = payload[name]
    if not isinstance(value, list) or not all(
        isinstance(item, str) and len(item) <= MAX_STRING_CLAIM_LENGTH and LIST_ITEM.fullmatch(item)
        for item in value
    ):
        raise TokenError(f"bad_claim:{name}")
    return tuple(value)


def _integer(payload: Mapping[str, Any], name: str) -> int:
    value = payload[name]
    # bool is an int in Python, not a NumericDate.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenError(f"bad_claim:{name}")
    return value


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result
