"""Browser sessions: a signed, timestamped token in an HttpOnly, SameSite=Lax cookie.

The token names the user and a fingerprint of their password hash, so changing the
password ends every session made with the old one. Nothing is stored server-side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE_NAME = "conveyor_session"
SESSION_MAX_AGE_SECONDS = 14 * 24 * 3600
_SALT = "conveyor.session"


@dataclass(frozen=True)
class SessionClaims:
    user_id: int
    password_fingerprint: str


def password_fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode("utf-8")).hexdigest()[:16]


class SessionSigner:
    """Signs and checks session tokens with the server's secret key."""

    def __init__(self, secret_key: str, max_age_seconds: int = SESSION_MAX_AGE_SECONDS) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
        self.max_age_seconds = max_age_seconds

    def sign(self, user_id: int, password_hash: str | None) -> str:
        return self._serializer.dumps({"u": user_id, "p": password_fingerprint(password_hash)})

    def read(self, token: str) -> SessionClaims | None:
        """The claims of a valid, unexpired token; None for anything else."""
        try:
            payload = self._serializer.loads(token, max_age=self.max_age_seconds)
        except BadSignature:  # also covers SignatureExpired
            return None
        if not isinstance(payload, dict):
            return None
        user_id, fingerprint = payload.get("u"), payload.get("p")
        if not isinstance(user_id, int) or not isinstance(fingerprint, str):
            return None
        return SessionClaims(user_id=user_id, password_fingerprint=fingerprint)
