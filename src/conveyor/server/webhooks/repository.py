"""Queries of the webhook deliveries, and of the runs a new push supersedes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.models.run import Run
from conveyor.server.models.webhook_delivery import WebhookDelivery


class DeliveryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, delivery_pk: int) -> WebhookDelivery | None:
        return self.session.get(WebhookDelivery, delivery_pk)

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
