"""Queries of the webhook deliveries, and of the runs a new push supersedes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.models.run import Run
from conveyor.server.models.webhook_delivery import DeliveryResult, WebhookDelivery


class DeliveryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, delivery_pk: int) -> WebhookDelivery | None:
        return self.session.get(WebhookDelivery, delivery_pk)

    def lock(self, delivery_pk: int) -> WebhookDelivery | None:
        """The delivery as committed now, its row locked until the transaction ends (on
        SQLite, writer sessions hold the database's write lock already)."""
        return self.session.scalar(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_pk)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    def pending(self, received_before: datetime) -> Sequence[tuple[int, str]]:
        """(id, pending event) of the accepted deliveries received before
        `received_before` whose run is still to be made, oldest first."""
        rows = self.session.execute(
            select(WebhookDelivery.id, WebhookDelivery.pending_event)
            .where(
                WebhookDelivery.result == DeliveryResult.ACCEPTED,
                WebhookDelivery.run_id.is_(None),
                WebhookDelivery.pending_event.is_not(None),
                WebhookDelivery.received_at < received_before,
            )
            .order_by(WebhookDelivery.received_at, WebhookDelivery.id)
        )
        return [(delivery_pk, event) for delivery_pk, event in rows if event is not None]

    def add(self, delivery: WebhookDelivery) -> WebhookDelivery:
        self.session.add(delivery)
        self.session.flush()
        return delivery

    def find(self, project_id: int, provider: str, delivery_id: str) -> WebhookDelivery | None:
        return self.session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.project_id == project_id,
                WebhookDelivery.provider == provider,
                WebhookDelivery.delivery_id == delivery_id,
            )
        ).first()

    def page(
        self, project_id: int, *, offset: int, limit: int
    ) -> tuple[Sequence[WebhookDelivery], int]:
        """Newest first."""
        rows = self.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.project_id == project_id)
            .order_by(WebhookDelivery.received_at.desc(), WebhookDelivery.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        total = self.session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.project_id == project_id)
        )
        return rows, int(total or 0)


def superseded_runs(session: Session, run: Run) -> Sequence[Run]:
    """The queued or running push runs of `run`'s project and branch made before it."""
    return session.scalars(
        select(Run)
        .where(
            Run.project_id == run.project_id,
            Run.branch == run.branch,
            Run.event == "push",
            Run.id < run.id,
            Run.status.in_([Status.QUEUED, Status.RUNNING]),
        )
        .order_by(Run.id)
    ).all()
