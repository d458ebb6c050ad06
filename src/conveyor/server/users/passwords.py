"""Password hashing with argon2id (argon2-cffi's recommended parameters)."""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


@functools.cache
def _decoy_hash() -> str:
    """Verified against when the user does not exist, so that a wrong name takes as long
    as a wrong password and sign-in does not reveal which names exist."""
    # Made at first use, not at import: a hash takes about 0.1 s of CPU and 64 MiB for a
    # moment, which every start of the server and of each CLI command paid.
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing or unreadable hash never matches."""
    try:
        return _hasher.verify(password_hash or _decoy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def generate_password() -> str:
    """A random password for a new account, given to its owner once."""
    return secrets.token_urlsafe(15)
