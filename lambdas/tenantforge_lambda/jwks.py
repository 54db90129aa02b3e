"""The public keys the tokens are verified with: a JWKS document in a Secrets Manager secret.

:class:`JwksCache` keeps the parsed keys for ``JWT_JWKS_CACHE_SECONDS`` and, when a token names a kid
it does not hold (a key published by a rotation since the last fetch), fetches again at most once per
``JWT_JWKS_MIN_REFETCH_SECONDS``: a flood of tokens with invented kids costs one fetch per interval,
not one per request. A key removed from the secret is refused once the cache expires. So rotating a
key needs no redeploy.

A failed fetch fails closed (:class:`JwksUnavailable`, the caller denies) and counts as a fetch for the
interval, so an unavailable Secrets Manager is not asked once per request either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from tenantforge_lambda import secrets
from tenantforge_lambda.config import ASYMMETRIC_ALGORITHMS, Settings

Fetch = Callable[[], Any]
Clock = Callable[[], float]

# The public members of each key type: a private member ("d", ...) published by mistake is dropped
# rather than turned into a private key object.
PUBLIC_MEMBERS = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y"), "OKP": ("kty", "crv", "x")}
# The algorithm a key without "alg" is used with, by key type and curve.
DEFAULT_ALGORITHM = {("RSA", None): "RS256", ("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384"}
DEFAULT_ALGORITHM.update({("EC", "P-521"): "ES512", ("OKP", "Ed25519"): "EdDSA"})
MAX_KID_LENGTH = 256


class JwksUnavailable(Exception):
    """The JWKS secret could not be read or is not a JWKS document (the message holds no value)."""


def parse_jwks(document: Any, allowed_algorithms: Iterable[str]) -> dict[str, PyJWK]:
    """The usable keys of a JWKS document by kid.

    A key is skipped when it has no string kid, is not an RSA, EC or OKP public key, is not meant for
    signatures (``use`` other than ``sig``), or its algorithm is not allowed. The first of two keys
    with one kid wins (with RFC 7638 thumbprints as kids, two keys never share one).
    """
    if isinstance(document, (str, bytes)):
        try:
            document = json.loads(document)
        except ValueError:
            raise JwksUnavailable("the JWKS secret is not JSON") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable('the JWKS secret is not a JWKS document ({"keys": [...]})')
    allowed = set(allowed_algorithms) & ASYMMETRIC_ALGORITHMS
    keys: dict[str, PyJWK] = {}
    for candidate in document["keys"]:
        key = _usable_key(candidate, allowed)
        if key is not None and key.key_id not in keys:
            keys[str(key.key_id)] = key
    return keys


def _usable_key(candidate: Any, allowed: set[str]) -> PyJWK | None:
    if not isinstance(candidate, Mapping):
        return None
    kid, kty = candidate.get("kid"), candidate.get("kty")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH or kty not in PUBLIC_MEMBERS:
        return None
    if candidate.get("use", "sig") != "sig":
        return None
    algorithm = candidate.get("alg")
    if algorithm is None:
        algorithm = DEFAULT_ALGORITHM.get((kty, None if kty == "RSA" else candidate.get("crv")))
    if algorithm not in allowed or not _fits(kty, candidate.get("crv"), algorithm):
        return None
    public = {name: candidate[name] for name in PUBLIC_MEMBERS[kty] if name in candidate}
    try:
        key = PyJWK({**public, "kid": kid}, algorithm=algorithm)
    except (PyJWTError, ValueError, TypeError):
        return None
    return key


def _fits(kty: str, crv: Any, algorithm: str) -> bool:
    """Whether a key of this type (and curve) is used with ``algorithm`` (RFC 7518 section 3.1)."""
    if kty == "RSA":
        return algorithm[:2] in ("RS", "PS")
    if kty == "EC":
        return DEFAULT_ALGORITHM.get((kty, crv)) == algorithm
    return kty == "OKP" and algorithm == "EdDSA" and crv == "Ed25519"


class JwksCache:
    """Keys by kid, fetched lazily through ``fetch`` (which returns the JWKS document or its JSON)."""

    def __init__(
        self,
        fetch: Fetch,
        allowed_algorithms: Iterable[str],
        cache_seconds: float,
        min_refetch_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._allowed = tuple(allowed_algorithms)
        self._cache_seconds = cache_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # the last successful fetch
        self._attempted_at: float | None = None  # the last fetch, successful or not

    @classmethod
    def from_settings(cls, settings: Settings) -> JwksCache:
        """The cache of a function: the secret ``JWT_JWKS_SECRET_ID``, with the settings' periods."""
        return cls(
            secrets.reader(settings.jwks_secret_id),
            settings.algorithms,
            settings.jwks_cache_seconds,
            settings.jwks_min_refetch_seconds,
        )

    def get(self, kid: str) -> PyJWK | None:
        """The key named ``kid``, or None when the JWKS does not hold it (even after a refetch).

        Raises :class:`JwksUnavailable` when the keys have expired and cannot be fetched.
        """
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._cache_seconds:
            if not self._may_fetch(now):
                raise JwksUnavailable("the JWKS secret could not be read recently; not asking again yet")
            self._refresh(now)
        key = self._keys.get(kid)
        if key is None and self._may_fetch(now):
            self._refresh(now)
            key = self._keys.get(kid)
        return key

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._min_refetch_seconds

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            keys = parse_jwks(self._fetch(), self._allowed)
        except JwksUnavailable:
            self._expire(now)
            raise
        except Exception as error:  # any failure of the store fails closed
            self._expire(now)
            raise JwksUnavailable(f"the JWKS secret could not be read ({type(error).__name__})") from None
        self._keys = keys
        self._fetched_at = now

    def _expire(self, now: float) -> None:
        # Keys older than the cache period are never used; fresher ones stay until their period ends.
        if self._fetched_at is not None and now - self._fetched_at >= self._cache_seconds:
            self._keys, self._fetched_at = {}, None


def secrets_manager_fetch(secret_id: str, client: Any = None) -> Fetch:
    """A fetch function reading ``secret_id``'s SecretString (see :mod:`tenantforge_lambda.secrets`)."""
    return secrets.reader(secret_id, client)
