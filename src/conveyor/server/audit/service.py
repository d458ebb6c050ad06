"""The audit trail: who did what, when, from where."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.db.base import utcnow
from conveyor.server.models.audit_event import AuditEvent


def record(
    session: Session,
    *,
    actor_id: int | None,
    actor_name: str,
    action: str,
    target_type: str = "",
    target_id: str | int = "",
    remote_address: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Add an audit event to the caller's unit of work (it is written with it). `at`
    is when it happened, for callers that act at a time of their own (now by default)."""
    event = AuditEvent(
        created_at=at or utcnow(),
        actor_id=actor_id,
        actor_name=actor_name,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        remote_address=remote_address,
        detail=detail or {},
    )
    session.add(event)
    return event


def events_of(
    session: Session, target_type: str, target_id: str | int, *, actions: Sequence[str] = ()
) -> list[AuditEvent]:
    """The events about one target (of `actions` only, when given), oldest first."""
    statement = select(AuditEvent).where(
        AuditEvent.target_type == target_type, AuditEvent.target_id == str(target_id)
    )
    if actions:
        statement = statement.where(AuditEvent.action.in_(actions))
    return list(session.scalars(statement.order_by(AuditEvent.created_at, AuditEvent.id)))
