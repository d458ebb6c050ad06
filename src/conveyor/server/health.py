"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from conveyor.server.db.migrate import current_revision_is_head
from conveyor.server.errors import ServiceUnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive and serving requests; says nothing about the database."""
    return {"status": "ok"}


def check_database(engine: Engine) -> None:
    """Return when the database answers and has every migration; raise
    ServiceUnavailableError saying which of the two is wrong otherwise."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        at_head = current_revision_is_head(engine)
    except SQLAlchemyError as exc:
        raise ServiceUnavailableError(
            f"the database does not answer ({type(exc).__name__}); check "
            "CONVEYOR_DATABASE_URL and that the database server is running",
            code="database_unreachable",
        ) from exc
    if not at_head:
        raise ServiceUnavailableError(
            "the database schema is not at the newest migration; run `conveyor db upgrade` "
            "(the server also upgrades at start)",
            code="migrations_pending",
        )


@router.get("/readyz")
def readyz(request: Request) -> dict[str, str]:
    """Ready for traffic: the database answers and its schema is current (503 if not)."""
    check_database(request.app.state.engine)
    return {"status": "ready"}
