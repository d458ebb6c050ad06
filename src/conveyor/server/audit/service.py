from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

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
) -> AuditEvent:
    """Add an audit event to the caller's unit of work (it is written with it)."""
    event = AuditEvent(
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
