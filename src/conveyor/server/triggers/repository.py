"""Every query of the polling and schedule duties."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conveyor.server.models.project_poll import ProjectPoll
from conveyor.server.models.schedule import Schedule


class PollRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, project_id: int) -> ProjectPoll | None:
        return self.session.get(ProjectPoll, project_id)

    def add(self, poll: ProjectPoll) -> ProjectPoll:
        self.session.add(poll)
        self.session.flush()
        return poll

    def due(self, now: datetime) -> Sequence[ProjectPoll]:
        return self.session.scalars(
            select(ProjectPoll)
            .where(ProjectPoll.interval_seconds.is_not(None), ProjectPoll.next_poll_at <= now)
            .order_by(ProjectPoll.next_poll_at)
        ).all()

    def claim(self, project_id: int, due_at: datetime, next_poll_at: datetime) -> bool:
        """Move the poll's next time on, if nobody did since `due_at` was read: the
        process whose UPDATE changes the row polls, the others skip it."""
        result = self.session.execute(
            update(ProjectPoll)
            .where(ProjectPoll.project_id == project_id, ProjectPoll.next_poll_at == due_at)
            .values(next_poll_at=next_poll_at)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)


class ScheduleRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, project_id: int, schedule_id: int) -> Schedule | None:
        schedule = self.session.get(Schedule, schedule_id)
        return schedule if schedule is not None and schedule.project_id == project_id else None

    def of_project(self, project_id: int) -> Sequence[Schedule]:
        return self.session.scalars(
            select(Schedule).where(Schedule.project_id == project_id).order_by(Schedule.id)
        ).all()

    def add(self, schedule: Schedule) -> Schedule:
        self.session.add(schedule)
        self.session.flush()
        return schedule

    def delete(self, schedule: Schedule) -> None:
        self.session.delete(schedule)
        self.session.flush()

    def due(self, now: datetime) -> Sequence[Schedule]:
        return self.session.scalars(
            select(Schedule)
            .where(Schedule.enabled.is_(True), Schedule.next_due_at <= now)
            .order_by(Schedule.next_due_at)
        ).all()

    def claim(self, schedule_id: int, due_at: datetime, next_due_at: datetime) -> bool:
        """Take the due time `due_at` of a schedule: the conditional UPDATE succeeds for
        exactly one caller (also across server processes on PostgreSQL), so a due time
        never starts two runs."""
        result = self.session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id, Schedule.next_due_at == due_at)
            .values(next_due_at=next_due_at, last_due_at=due_at)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)
