"""Every query of the notifications package."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select, union, update
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.models.forge_link import ForgeLink
from conveyor.server.models.notification_delivery import (
    DeliveryChannel,
    DeliveryStatus,
    NotificationDelivery,
)
from conveyor.server.models.notification_hook import NotificationHook
from conveyor.server.models.run import Run

FINISHED = [s for s in Status if s.finished]


class NotificationRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def hooks_of(
        self, project_id: int, *, enabled_only: bool = False
    ) -> Sequence[NotificationHook]:
        query = select(NotificationHook).where(NotificationHook.project_id == project_id)
        if enabled_only:
            query = query.where(NotificationHook.enabled.is_(True))
        return self.session.scalars(query.order_by(NotificationHook.id)).all()

    def notifying(self, project_ids: Iterable[int]) -> set[int]:
        """Those of `project_ids` that have an enabled hook or a forge link: one query
        for a burst of run events, so that the runs of the many projects that notify
        nobody cost next to nothing."""
        ids = sorted(set(project_ids))
        hooks = select(NotificationHook.project_id).where(
            NotificationHook.project_id.in_(ids), NotificationHook.enabled.is_(True)
        )
        links = select(ForgeLink.project_id).where(ForgeLink.project_id.in_(ids))
        return set(self.session.scalars(union(hooks, links)))

    def hook(self, project_id: int, hook_id: int) -> NotificationHook | None:
        hook = self.session.get(NotificationHook, hook_id)
        return hook if hook is not None and hook.project_id == project_id else None

    def add(self, row: NotificationHook | NotificationDelivery | ForgeLink) -> None:
        self.session.add(row)
        self.session.flush()

    def delete(self, row: NotificationHook | ForgeLink) -> None:
        self.session.delete(row)
        self.session.flush()

    def forge_link(self, project_id: int) -> ForgeLink | None:
        return self.session.get(ForgeLink, project_id)

    def delivery_exists(
        self, channel: DeliveryChannel, hook_id: int | None, run_id: int, trigger: str
    ) -> bool:
        query = select(NotificationDelivery.id).where(
            NotificationDelivery.channel == channel,
            NotificationDelivery.run_id == run_id,
            NotificationDelivery.trigger == trigger,
        )
        query = query.where(
            NotificationDelivery.hook_id.is_(None)
            if hook_id is None
            else NotificationDelivery.hook_id == hook_id
        )
        return self.session.scalar(query.limit(1)) is not None

    def deliveries_of_hook(self, hook_id: int, limit: int = 100) -> Sequence[NotificationDelivery]:
        return self.session.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.hook_id == hook_id)
            .order_by(NotificationDelivery.id.desc())
            .limit(limit)
        ).all()

    def commit_status_deliveries(
        self, project_id: int, limit: int = 100
    ) -> Sequence[NotificationDelivery]:
        return self.session.scalars(
            select(NotificationDelivery)
            .where(
                NotificationDelivery.project_id == project_id,
                NotificationDelivery.channel == DeliveryChannel.COMMIT_STATUS,
            )
            .order_by(NotificationDelivery.id.desc())
            .limit(limit)
        ).all()

    def due_deliveries(self, now: datetime, limit: int = 50) -> Sequence[NotificationDelivery]:
        return self.session.scalars(
            select(NotificationDelivery)
            .where(
                NotificationDelivery.status == DeliveryStatus.QUEUED,
                NotificationDelivery.next_attempt_at <= now,
            )
            .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
            .limit(limit)
        ).all()

    def claim_delivery(self, delivery_id: int, due_at: datetime, until: datetime) -> bool:
        """Take a due delivery until `until` (a conditional UPDATE: one process wins)."""
        result = self.session.execute(
            update(NotificationDelivery)
            .where(
                NotificationDelivery.id == delivery_id,
                NotificationDelivery.status == DeliveryStatus.QUEUED,
                NotificationDelivery.next_attempt_at == due_at,
            )
            .values(next_attempt_at=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def previous_finished_status(self, run: Run) -> Status | None:
        """The status of the project's last finished run on the same branch before `run`."""
        query = select(Run.status).where(
            Run.project_id == run.project_id,
            Run.number < run.number,
            Run.status.in_(FINISHED),
        )
        query = query.where(
            Run.branch.is_(None) if run.branch is None else Run.branch == run.branch
        )
        return self.session.scalar(query.order_by(Run.number.desc()).limit(1))
