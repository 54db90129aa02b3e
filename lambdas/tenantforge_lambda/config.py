"""The ``JWT_*`` settings of the functions, read from the environment once, at cold start.

Every problem raises :class:`ConfigError` naming the variable. Values are not echoed (a secret pasted
into the wrong variable must not reach the logs), except the refused names of ``JWT_ALGORITHMS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# Asymmetric JWS algorithms only: the verifier never holds a shared secret, and an HMAC algorithm
# beside an RSA one is the classic key-confusion hole (RFC 8725 section 2.1).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = "RS256,ES256"
DEFAULT_LEEWAY_SECONDS = 30
MAX_LEEWAY_SECONDS = 60
DEFAULT_JWKS_CACHE_SECONDS = 300
DEFAULT_JWKS_MIN_REFETCH_SECONDS = 30
DEFAULT_IDLE_TTL_SECONDS = 3600
DEFAULT_MAX_SESSION_SECONDS = 43200


class ConfigError(ValueError):
    """A missing or invalid setting; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    algorithms: tuple[str, ...]
    issuer: str
    audience: str
    jwks_secret_id: str
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    jwks_cache_seconds: int = DEFAULT_JWKS_CACHE_SECONDS
    jwks_min_refetch_seconds: int = DEFAULT_JWKS_MIN_REFETCH_SECONDS
    idle_ttl_seconds: int = DEFAULT_IDLE_TTL_SECONDS
    max_session_seconds: int = DEFAULT_MAX_SESSION_SECONDS
    # Only the functions that issue tokens need it (they check it is set); the authorizer does not.
    signing_secret_id: str | None = None

    def __post_init__(self) -> None:
        _check_algorithms(self.algorithms)
        for name, text in (
            ("JWT_ISSUER", self.issuer),
            ("JWT_AUDIENCE", self.audience),
            ("JWT_JWKS_SECRET_ID", self.jwks_secret_id),
        ):
            if not text or text != text.strip():
                raise ConfigError(f"{name} must be a non-empty string without surrounding whitespace")
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ConfigError(f"JWT_LEEWAY_SECONDS must be between 0 and {MAX_LEEWAY_SECONDS}")
        for name, seconds in (
            ("JWT_JWKS_CACHE_SECONDS", self.jwks_cache_seconds),
            ("JWT_JWKS_MIN_REFETCH_SECONDS", self.jwks_min_refetch_seconds),
            ("JWT_IDLE_TTL_SECONDS", self.idle_ttl_seconds),
            ("JWT_MAX_SESSION_SECONDS", self.max_session_seconds),
        ):
            if seconds < 1:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.jwks_min_refetch_seconds > self.jwks_cache_seconds:
            raise ConfigError("JWT_JWKS_MIN_REFETCH_SECONDS must not exceed JWT_JWKS_CACHE_SECONDS")
        if self.max_session_seconds < self.idle_ttl_seconds:
            raise ConfigError("JWT_MAX_SESSION_SECONDS must be at least JWT_IDLE_TTL_SECONDS")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            algorithms=parse_algorithms(env.get("JWT_ALGORITHMS", DEFAULT_ALGORITHMS)),
            issuer=_required(env, "JWT_ISSUER"),
            audience=_required(env, "JWT_AUDIENCE"),
            jwks_secret_id=_required(env, "JWT_JWKS_SECRET_ID"),
            leeway_seconds=_integer(env, "JWT_LEEWAY_SECONDS", DEFAULT_LEEWAY_SECONDS),
            jwks_cache_seconds=_integer(env, "JWT_JWKS_CACHE_SECONDS", DEFAULT_JWKS_CACHE_SECONDS),
            jwks_min_refetch_seconds=_integer(
                env, "JWT_JWKS_MIN_REFETCH_SECONDS", DEFAULT_JWKS_MIN_REFETCH_SECONDS
            ),
            idle_ttl_seconds=_integer(env, "JWT_IDLE_TTL_SECONDS", DEFAULT_IDLE_TTL_SECONDS),
            max_session_seconds=_integer(env, "JWT_MAX_SESSION_SECONDS", DEFAULT_MAX_SESSION_SECONDS),
            signing_secret_id=env.get("JWT_SIGNING_SECRET_ID") or None,
        )


def parse_algorithms(text: str) -> tuple[str, ...]:
    """``"RS256, ES256"`` -> ``("RS256", "ES256")``; duplicates dropped, order kept."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    _check_algorithms(names)
    return names


def _check_algorithms(names: tuple[str, ...]) -> None:
    if not names:
        raise ConfigError("JWT_ALGORITHMS must list at least one algorithm")
    refused = [name for name in names if name not in ASYMMETRIC_ALGORITHMS]
    if refused:
        raise ConfigError(
            f"JWT_ALGORITHMS: {', '.join(refused)} not allowed; only asymmetric algorithms "
            f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}), never HMAC (HS*) or none"
        )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value.strip():
        raise ConfigError(f"{name} is required")
    return value


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of seconds") from None
