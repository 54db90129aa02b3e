"""Password hashes: Argon2id in PHC string format, with argon2-cffi's parameters (RFC 9106's second
recommended option: 64 MiB, 3 passes, 4 lanes).

An unknown user costs the same hash as a wrong password (:func:`verify` hashes against a fixed dummy),
so the response time does not tell which emails exist.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_LENGTH = 1024  # hashing a megabyte per request is a denial of service, not a password

HASHER = PasswordHasher()
# Verified against when the user has no password, so that this costs what a real check costs.
_DUMMY_HASH = HASHER.hash("not the password of anyone")


def hash_password(password: str) -> str:
    if not password or len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password is 1 to {MAX_PASSWORD_LENGTH} characters")
    return HASHER.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; always spends one hash, even without one."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters than today's (rehash it at the next sign-in)."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
