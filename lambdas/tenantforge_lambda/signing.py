"""The private key tokens are signed with: the Secrets Manager secret named by ``JWT_SIGNING_SECRET_ID``,
``{"kid": ..., "alg": ..., "private_key_pem": ...}`` as ``tenantforge.platform.platform_secret``
writes it (the kid is the RFC 7638 thumbprint of the public key published in the JWKS secret).

The key is cached like the JWKS (``JWT_JWKS_CACHE_SECONDS``), so a rotation is picked up without a
redeploy; the rotation publishes the new public key first, so a token signed with it always verifies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tenantforge_lambda.jwks import MAX_KID_LENGTH

TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a password; RFC 9068's type of a JWT access token


class SigningKeyError(Exception):
    """The signing secret cannot be read or holds no usable key (the message holds no value)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    key: Any  # a cryptography private key

    @classmethod
    def from_secret(cls, value: str, allowed_algorithms: tuple[str, ...]) -> SigningKey:
        try:
            document = json.loads(value)
        except ValueError:
            raise SigningKeyError("the signing key secret is not JSON") from None
        if not isinstance(document, Mapping):
            raise SigningKeyError("the signing key secret is not a JSON object")
        kid, algorithm, pem = (document.get(name) for name in ("kid", "alg", "private_key_pem"))
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
            raise SigningKeyError("the signing key secret has no kid")
        if algorithm not in allowed_algorithms:
            raise SigningKeyError("the signing key's alg is not in JWT_ALGORITHMS")
        if not isinstance(pem, str):
            raise SigningKeyError("the signing key secret has no private_key_pem")
        try:
            key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            raise SigningKeyError("the signing key's private_key_pem is not an unencrypted PEM key") from None
        if not _fits(key, algorithm):
            raise SigningKeyError(f"the signing key is not a key for {algorithm}")
        return cls(kid, algorithm, key)

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(
            dict(claims), self.key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": TOKEN_TYPE}
        )


def _fits(key: Any, algorithm: str) -> bool:
    if isinstance(key, rsa.RSAPrivateKey):
        return algorithm[:2] in ("RS", "PS") and key.key_size >= 2048
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curves = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
        return curves.get(algorithm) == key.curve.name
    return False


class SigningKeyCache:
    """The current signing key, read through ``fetch`` at most once per ``cache_seconds``."""

    def __init__(
        self,
        fetch: Callable[[], str],
        allowed_algorithms: tuple[str, ...],
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._allowed = allowed_algorithms
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._key: SigningKey | None = None
        self._fetched_at = 0.0

    def get(self) -> SigningKey:
        now = self._clock()
        if self._key is None or now - self._fetched_at >= self._cache_seconds:
            try:
                value = self._fetch()
            except Exception as error:  # any failure of the store: no token rather than a stale key
                raise SigningKeyError(
                    f"the signing key secret could not be read ({type(error).__name__})"
                ) from None
            self._key = SigningKey.from_secret(value, self._allowed)
            self._fetched_at = now
        return self._key
