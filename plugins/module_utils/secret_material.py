# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Generation and planning of the secret material behind ``tenantforge.platform.platform_secret``.

Pure logic, no AWS: the module reads the current values, asks :func:`plan` what the secrets must hold
after the task, and writes what the returned :class:`Plan` says. Every error raised here is a
:class:`SecretError` whose message names secrets and fields, never values.

Value shapes (contracts other parts of the platform read):

* ``credentials``: ``{"username": ..., "password": <generated>, **extra}``
* ``erlang_cookie``: ``{"cookie": <48 chars A-Z0-9>, **extra}``
* ``jwt_signing_key``: ``{"kid": ..., "alg": "RS256|ES256", "private_key_pem": <PKCS8 PEM>, **extra}``
  and, in the second secret, the public JWKS ``{"keys": [<newest JWK>, <previous JWK>]}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - only kind=jwt_signing_key needs it, checked at use
    HAS_CRYPTOGRAPHY = False

KINDS = ("credentials", "erlang_cookie", "jwt_signing_key")
ALGORITHMS = ("RS256", "ES256")
RSA_KEY_SIZES = (2048, 3072, 4096)

PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_MIN_LENGTH = 20
PASSWORD_MAX_LENGTH = 128
COOKIE_ALPHABET = string.ascii_uppercase + string.digits
COOKIE_LENGTH = 48
USERNAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MAX_JWKS_KEYS = 2

# The field of each kind that holds generated material, and the fields the module owns.
GENERATED_FIELD = {"credentials": "password", "erlang_cookie": "cookie", "jwt_signing_key": "private_key_pem"}
RESERVED_FIELDS = {
    "credentials": ("username", "password"),
    "erlang_cookie": ("cookie",),
    "jwt_signing_key": ("kid", "alg", "private_key_pem"),
}

# RFC 7638: the required members of a public JWK, the only ones its thumbprint covers.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}
_PUBLIC_MEMBERS = {
    "RSA": ("kty", "kid", "use", "alg", "n", "e"),
    "EC": ("kty", "kid", "use", "alg", "crv", "x", "y"),
}
_EC_COORDINATE_BYTES = 32  # P-256

if TYPE_CHECKING:  # annotations only: nothing below is evaluated at run time
    from typing import TypeAlias

    PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class SecretError(Exception):
    """A failure the module reports as is. Messages never contain secret material."""


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def generate_password(length: int = 32) -> str:
    """Letters and digits only (safe in URLs, pgbouncer userlists and shells), with at least one
    lower case letter, one upper case letter and one digit, from the OS CSPRNG."""
    if not PASSWORD_MIN_LENGTH <= length <= PASSWORD_MAX_LENGTH:
        raise SecretError(
            f"password_length must be between {PASSWORD_MIN_LENGTH} and {PASSWORD_MAX_LENGTH}, got {length}"
        )
    while True:
        password = "".join(secrets.choice(PASSWORD_ALPHABET) for _position in range(length))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
        ):
            return password


def generate_cookie() -> str:
    """An Erlang distribution cookie: 48 characters from A-Z and 0-9."""
    return "".join(secrets.choice(COOKIE_ALPHABET) for _position in range(COOKIE_LENGTH))


def _require_cryptography() -> None:
    if not HAS_CRYPTOGRAPHY:
        raise SecretError("kind=jwt_signing_key needs the Python library 'cryptography' on the managed host")


def generate_private_key(algorithm: str, rsa_key_size: int = 3072) -> PrivateKey:
    _require_cryptography()
    if algorithm == "RS256":
        if rsa_key_size not in RSA_KEY_SIZES:
            raise SecretError(
                f"rsa_key_size must be one of {', '.join(map(str, RSA_KEY_SIZES))}, got {rsa_key_size}"
            )
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_key_size)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise SecretError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm}")


def private_key_to_pem(key: PrivateKey) -> str:
    """Unencrypted PKCS#8 PEM (the secret store encrypts it at rest)."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")


def load_private_key(pem: str, secret_name: str) -> PrivateKey:
    """Parse a PEM private key; the error names the secret and the field, never the content."""
    _require_cryptography()
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise SecretError(
            f"secret {secret_name}: field 'private_key_pem' is not an unencrypted PEM private key; "
            "fix the value or set rotate: true to generate a new key"
        ) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SecretError(
            f"secret {secret_name}: field 'private_key_pem' holds a key type other than RSA or EC; "
            "set rotate: true to generate a new key"
        )
    return key


def key_algorithm(key: PrivateKey | None) -> str | None:
    """The JWS algorithm this module uses the key for, or None when the key fits neither."""
    if key is None:
        return None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


# --------------------------------------------------------------------------------------------------
# JWK
# --------------------------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint_to_b64url(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(size, "big"))


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint: base64url SHA-256 of the canonical JSON of the required members."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if members is None:
        raise SecretError(f"JWK key type {jwk.get('kty')!r} is not supported (RSA or EC)")
    canonical = json.dumps({name: jwk[name] for name in members}, sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    """The public JWK of a private key, with ``kid`` set to its RFC 7638 thumbprint."""
    _require_cryptography()
    algorithm = key_algorithm(key)
    if isinstance(key, rsa.RSAPrivateKey) and algorithm:
        numbers = key.public_key().public_numbers()
        jwk: dict[str, Any] = {"kty": "RSA", "n": _uint_to_b64url(numbers.n), "e": _uint_to_b64url(numbers.e)}
    elif isinstance(key, ec.EllipticCurvePrivateKey) and algorithm:
        point = key.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _uint_to_b64url(point.x, _EC_COORDINATE_BYTES),
            "y": _uint_to_b64url(point.y, _EC_COORDINATE_BYTES),
        }
    else:
        raise SecretError("only RSA (2048 bits or more) and EC P-256 keys can be published as JWK")
    jwk.update(kid=jwk_thumbprint(jwk), use="sig", alg=algorithm)
    return {name: jwk[name] for name in _PUBLIC_MEMBERS[jwk["kty"]]}


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """The public key a JWK describes (used to check JWKS entries and by tests to verify signatures)."""
    _require_cryptography()
    try:
        if jwk["kty"] == "RSA":
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if jwk["kty"] == "EC" and jwk["crv"] == "P-256":
            x = int.from_bytes(b64url_decode(jwk["x"]), "big")
            y = int.from_bytes(b64url_decode(jwk["y"]), "big")
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    raise SecretError("not a public RSA or EC P-256 JWK")


def _sanitised_public_jwk(candidate: Any) -> dict[str, Any] | None:
    """A JWKS entry reduced to its public members, or None when it is not a usable public key."""
    if not isinstance(candidate, dict) or candidate.get("kty") not in _PUBLIC_MEMBERS:
        return None
    try:
        public_key_from_jwk(candidate)
    except SecretError:
        return None
    if not isinstance(candidate.get("kid"), str) or not candidate["kid"]:
        return None
    return {name: candidate[name] for name in _PUBLIC_MEMBERS[candidate["kty"]] if name in candidate}


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    """What the task asks for (the module's parameters, minus the AWS ones)."""

    name: str
    kind: str
    username: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    password_length: int = 32
    algorithm: str = "RS256"
    rsa_key_size: int = 3072
    rotate: bool = False
    jwks_name: str | None = None


@dataclass
class Plan:
    """What the secret (and, for jwt_signing_key, the JWKS secret) must hold after the task.

    ``value`` carries secret material: it is excluded from ``repr`` and must never be returned.
    ``reasons`` and ``jwks_reasons`` are safe to show (field names and causes only).
    """

    value: dict[str, Any] = field(repr=False)
    write: bool = False
    generated: bool = False
    reasons: list[str] = field(default_factory=list)
    kid: str | None = None
    jwks: dict[str, Any] | None = None
    write_jwks: bool = False
    jwks_reasons: list[str] = field(default_factory=list)

    @property
    def secret_string(self) -> str:
        return json.dumps(self.value)

    @property
    def jwks_string(self) -> str | None:
        return None if self.jwks is None else json.dumps(self.jwks)

    @property
    def generated_value(self) -> str:
        """The generated field's value (for no_log masking only)."""
        for name in GENERATED_FIELD.values():
            if name in self.value:
                return str(self.value[name])
        return ""


def validate(desired: Desired) -> None:
    """Check the parameters; raise SecretError naming the offending option."""
    if desired.kind not in KINDS:
        raise SecretError(f"kind must be one of {', '.join(KINDS)}, got {desired.kind}")
    if desired.kind == "credentials":
        if not desired.username:
            raise SecretError("username is required when kind=credentials")
        if not USERNAME_PATTERN.match(desired.username):
            raise SecretError(
                f"username {desired.username!r} must match {USERNAME_PATTERN.pattern} "
                "(lower case letters, digits and underscores, at most 63 characters, "
                "not starting with a digit)"
            )
    if not PASSWORD_MIN_LENGTH <= desired.password_length <= PASSWORD_MAX_LENGTH:
        raise SecretError(
            f"password_length must be between {PASSWORD_MIN_LENGTH} and {PASSWORD_MAX_LENGTH}, "
            f"got {desired.password_length}"
        )
    if desired.algorithm not in ALGORITHMS:
        raise SecretError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {desired.algorithm}")
    if desired.rsa_key_size not in RSA_KEY_SIZES:
        raise SecretError(
            f"rsa_key_size must be one of {', '.join(map(str, RSA_KEY_SIZES))}, got {desired.rsa_key_size}"
        )
    if desired.kind == "jwt_signing_key":
        if not desired.jwks_name:
            raise SecretError("jwks_name is required when kind=jwt_signing_key")
        if desired.jwks_name == desired.name:
            raise SecretError("jwks_name must differ from name (the JWKS is a second secret)")
    reserved = RESERVED_FIELDS[desired.kind]
    for key, value in desired.extra.items():
        if key in reserved:
            raise SecretError(
                f"extra.{key}: the field {key!r} is managed by the module for kind={desired.kind}"
            )
        if not isinstance(value, str):
            raise SecretError(f"extra.{key} must be a string (quote it), got {type(value).__name__}")


def parse_current(secret_name: str, current: str | None, required_field: str) -> dict[str, Any]:
    """The current value as a dict holding ``required_field``; the error names secret and field."""
    hint = "fix the value or set rotate: true to regenerate it"
    try:
        data = json.loads(current) if current is not None else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SecretError(
            f"secret {secret_name}: the current value is not a JSON object, so its field "
            f"'{required_field}' cannot be kept; {hint}"
        )
    value = data.get(required_field)
    if not isinstance(value, str) or not value:
        raise SecretError(f"secret {secret_name}: the current value has no field '{required_field}'; {hint}")
    return data


def parse_jwks(current_jwks: str | None) -> dict[str, Any] | None:
    """The JWKS document, or None when the secret is missing, is not JSON or has no key list."""
    if current_jwks is None:
        return None
    try:
        data = json.loads(current_jwks)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        return None
    return data


def _changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


def _build_value(desired: Desired, generated: dict[str, Any]) -> dict[str, Any]:
    if desired.kind == "credentials":
        value: dict[str, Any] = {"username": desired.username, "password": generated["password"]}
    elif desired.kind == "erlang_cookie":
        value = {"cookie": generated["cookie"]}
    else:
        value = {
            "kid": generated["kid"],
            "alg": generated["alg"],
            "private_key_pem": generated["private_key_pem"],
        }
    value.update(desired.extra)
    return value


def plan(
    desired: Desired,
    current: str | None,
    current_jwks: str | None = None,
    exists: bool | None = None,
) -> Plan:
    """Decide what to write, given the current value(s) (None when a secret does not exist).

    Generated material is created when the secret does not exist or ``rotate`` is set, and kept
    otherwise; only the non-generated fields (username, extra, alg, kid) are brought in line.
    ``exists`` tells an existing secret whose value was not read (pointless when rotating a password
    or cookie) from a missing one; it defaults to ``current is not None``.
    """
    if exists is None:
        exists = current is not None
    validate(desired)
    if desired.kind == "jwt_signing_key":
        return _plan_jwt(desired, current, current_jwks, exists)

    field_name = GENERATED_FIELD[desired.kind]
    if not exists or desired.rotate:
        material = (
            generate_password(desired.password_length) if desired.kind == "credentials" else generate_cookie()
        )
        reason = "rotate" if exists else "create"
        return Plan(
            value=_build_value(desired, {field_name: material}), write=True, generated=True, reasons=[reason]
        )

    existing = parse_current(desired.name, current, field_name)
    value = _build_value(desired, existing)
    changed = _changed_fields(existing, value)
    return Plan(value=value, write=bool(changed), reasons=[f"field {name} changed" for name in changed])


def _plan_jwt(desired: Desired, current: str | None, current_jwks: str | None, exists: bool) -> Plan:
    old_value: dict[str, Any] | None = None
    old_key: PrivateKey | None = None
    if exists:
        try:
            old_value = parse_current(desired.name, current, "private_key_pem")
            old_key = load_private_key(old_value["private_key_pem"], desired.name)
        except SecretError:
            if not desired.rotate:
                raise
            old_value = old_key = None

    jwks_doc = parse_jwks(current_jwks)
    if not exists:
        regenerate = "create"
    elif desired.rotate:
        regenerate = "rotate"
    elif key_algorithm(old_key) != desired.algorithm:
        regenerate = "algorithm changed"
    else:
        regenerate = ""

    if regenerate:
        key = generate_private_key(desired.algorithm, desired.rsa_key_size)
        jwk = public_jwk(key)
        value = _build_value(
            desired, {"kid": jwk["kid"], "alg": desired.algorithm, "private_key_pem": private_key_to_pem(key)}
        )
        keys = [jwk]
        # The key in use until now stays published so that tokens it signed verify until they expire.
        if old_key is not None and key_algorithm(old_key) is not None:
            previous = public_jwk(old_key)
            if previous["kid"] != jwk["kid"]:
                keys.append(previous)
        jwks = {"keys": keys[:MAX_JWKS_KEYS]}
        return Plan(
            value=value,
            write=True,
            generated=True,
            reasons=[regenerate],
            kid=jwk["kid"],
            jwks=jwks,
            write_jwks=jwks != jwks_doc,
            jwks_reasons=["create" if current_jwks is None else regenerate],
        )

    if old_value is None or old_key is None:  # unreachable: parse errors raised above unless rotating
        raise SecretError(f"secret {desired.name}: field 'private_key_pem' could not be read")
    jwk = public_jwk(old_key)
    value = _build_value(
        desired,
        {"kid": jwk["kid"], "alg": desired.algorithm, "private_key_pem": old_value["private_key_pem"]},
    )
    changed = _changed_fields(old_value, value)

    existing_keys = jwks_doc["keys"] if jwks_doc is not None else []
    previous_keys = []
    for candidate in existing_keys:
        public = _sanitised_public_jwk(candidate)
        if public is not None and public["kid"] != jwk["kid"]:
            previous_keys.append(public)
    jwks = {"keys": [jwk, *previous_keys][:MAX_JWKS_KEYS]}
    if current_jwks is None:
        jwks_reasons = ["missing, rebuilt from the private key"]
    elif jwks_doc is None:
        jwks_reasons = ["not a JWKS document, rebuilt from the private key"]
    elif not any(isinstance(k, dict) and k.get("kid") == jwk["kid"] for k in existing_keys):
        jwks_reasons = ["current key missing, added from the private key"]
    elif jwks != jwks_doc:
        jwks_reasons = ["normalised (current key first, at most 2 public keys)"]
    else:
        jwks_reasons = []
    return Plan(
        value=value,
        write=bool(changed),
        reasons=[f"field {name} changed" for name in changed],
        kid=jwk["kid"],
        jwks=jwks,
        write_jwks=bool(jwks_reasons),
        jwks_reasons=jwks_reasons,
    )


# --------------------------------------------------------------------------------------------------
# Safe descriptions (for diffs)
# --------------------------------------------------------------------------------------------------


def fingerprint(secret_string: str | None) -> str | None:
    """A short SHA-256 of a stored value: shows that it changed without revealing it."""
    if secret_string is None:
        return None
    return hashlib.sha256(secret_string.encode("utf-8")).hexdigest()[:12]


def key_names(secret_string: str | None) -> list[str] | None:
    """The top-level field names of a JSON object value (None when it is not one)."""
    if secret_string is None:
        return None
    try:
        data = json.loads(secret_string)
    except ValueError:
        return None
    return sorted(data) if isinstance(data, dict) else None


def jwks_kids(jwks_string: str | None) -> list[str] | None:
    doc = parse_jwks(jwks_string)
    if doc is None:
        return None
    return [str(k.get("kid")) for k in doc["keys"] if isinstance(k, dict)]
