"""API token format: `cvy_<prefix>_<secret>`.

The prefix is public and unique (it finds the row, and lets a user tell tokens apart);
the whole token is stored only as its sha256. Tokens have 256 random bits, so a fast
hash is enough: nobody can guess one, and a stolen database gives none away.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_MARKER = "cvy"  # noqa: S105  (the public start of every token, not a secret)


@dataclass(frozen=True)
class NewToken:
    plaintext: str
    """Shown to the user once, never stored."""
    prefix: str
    token_hash: str


def generate_token() -> NewToken:
    prefix = secrets.token_hex(6)
    plaintext = f"{TOKEN_MARKER}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewToken(plaintext=plaintext, prefix=prefix, token_hash=hash_token(plaintext))


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def prefix_of(plaintext: str) -> str | None:
    """The lookup prefix of a presented token, or None when it has not our shape."""
    marker, _, rest = plaintext.partition("_")
    prefix, _, secret = rest.partition("_")
    if marker != TOKEN_MARKER or len(prefix) != 12 or not secret:
        return None
    return prefix


def token_matches(plaintext: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(plaintext), stored_hash)
