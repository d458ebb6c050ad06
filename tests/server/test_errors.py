from __future__ import annotations

import pytest

from conveyor.server.errors import (
    ConflictError,
    ConveyorError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
)


class TestConveyorError:
    @pytest.mark.parametrize(
        ("error_class", "status_code", "code"),
        [
            (NotFoundError, 404, "not_found"),
            (PermissionDeniedError, 403, "permission_denied"),
            (NotAuthenticatedError, 401, "not_authenticated"),
            (ConflictError, 409, "conflict"),
            (InvalidInputError, 422, "invalid_input"),
        ],
    )
    def test_family_members_carry_their_status_and_code(
        self, error_class: type[ConveyorError], status_code: int, code: str
    ) -> None:
        error = error_class("what went wrong")
        assert (error.status_code, error.code) == (status_code, code)

    def test_body_has_the_one_error_shape(self) -> None:
        error = NotFoundError("no project 'x'", code="project_not_found", detail={"name": "x"})
        assert error.to_body() == {
            "error": {
                "code": "project_not_found",
                "message": "no project 'x'",
                "detail": {"name": "x"},
            }
        }

    def test_status_code_can_be_given_per_instance(self) -> None:
        assert ConveyorError("teapot", status_code=418, code="teapot").status_code == 418
