"""The server's errors: one base class carrying the HTTP status and a stable code.

Services raise these; `app.py` renders every one of them once, as
`{"error": {"code", "message", "detail"}}`. Nothing here knows about FastAPI.

    ConveyorError
    ├── InvalidInputError        422  the request is well-formed but its values are not
    ├── NotAuthenticatedError    401  no credentials, or credentials that are not valid
    ├── PermissionDeniedError    403  signed in, but not allowed to do this
    ├── NotFoundError            404  the named thing does not exist
    ├── ConflictError            409  the thing's state does not allow this (already exists, ...)
    └── ServiceUnavailableError  503  a dependency (database, migrations) is not ready
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base of every error the server reports to a client.

    `message` is for people (say what, where and how to fix); `code` is for programs
    and never changes once published; `detail` is optional structured context.
    """

    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.detail = detail

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class InvalidInputError(ConveyorError):
    status_code = 422
    code = "invalid_input"


class NotAuthenticatedError(ConveyorError):
    status_code = 401
    code = "not_authenticated"


class PermissionDeniedError(ConveyorError):
    status_code = 403
    code = "permission_denied"


class NotFoundError(ConveyorError):
    status_code = 404
    code = "not_found"


class ConflictError(ConveyorError):
    status_code = 409
    code = "conflict"


class ServiceUnavailableError(ConveyorError):
    status_code = 503
    code = "service_unavailable"
