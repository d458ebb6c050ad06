"""Encryption of secret values at rest.

Values are encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`).
Its key is derived from the server's secret key (`Settings.session_secret_key()`:
`CONVEYOR_SECRET_KEY`, or the key kept in `data_dir/secret_key`) with HKDF-SHA256 and
a purpose label, so the cookie-signing key itself never encrypts anything and the two
uses cannot be confused. Changing the server's secret key makes stored secrets
unreadable: set them again afterwards.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from conveyor.server.errors import ConflictError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

# `cryptography` is imported where a secret is encrypted or decrypted, not here: its
# bindings add about 6 MiB to the server, which a server whose projects keep no secret
# never needs.

KEY_PURPOSE = b"conveyor project secrets v1"


class SecretUnreadableError(ConflictError):
    code = "secret_unreadable"


def derive_fernet_key(server_key: str) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) for secrets under `server_key`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_PURPOSE).derive(
        server_key.encode("utf-8")
    )
    return base64.urlsafe_b64encode(derived)


class SecretCipher:
    def __init__(self, server_key: str) -> None:
        from cryptography.fernet import Fernet

        self._fernet: Fernet = Fernet(derive_fernet_key(server_key))

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode("utf-8"))

    def decrypt(self, ciphertext: bytes, *, name: str, project: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(ciphertext).decode("utf-8")
        except InvalidToken as error:
            raise SecretUnreadableError(
                f"secret {name!r} of project {project!r} cannot be decrypted: the server's "
                "secret key changed since it was stored; set the secret again "
                f"(PUT /api/v1/projects/{project}/secrets/{name})",
                detail={"project": project, "secret": name},
            ) from error
