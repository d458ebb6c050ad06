"""Background duties of notifications: one turns run events into deliveries, one
sends the deliveries that are due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.events import OVERFLOW, Event, EventBus
from conveyor.server.notifications import service
from conveyor.server.notifications.repository import NotificationRepository
from conveyor.server.triggers.tasks import Clock

logger = logging.getLogger("conveyor.server.notifications")


@dataclass(frozen=True)
class RunChange:
    """A run reached a status that may call for notifications."""

    run_id: int
    status: Status
    project_id: int | None


class NotifyingProjects:
    """Which projects notify anybody (an enabled hook or a forge link), remembered
    between run events: most projects notify nobody, and then their runs cost no query
    and no trip to a worker thread. Forgotten whenever hooks or forge links change
    (their service publishes on `SETTINGS_TOPIC` after commit) and after an overflow of
    events, which may have hidden such a change."""

    def __init__(self) -> None:
        self._known: dict[int, bool] = {}

    def unknown(self, changes: list[RunChange]) -> set[int]:
        return {
            c.project_id
            for c in changes
            if c.project_id is not None and c.project_id not in self._known
        }

    def learn(self, asked: set[int], notifying: set[int]) -> None:
        self._known.update({project_id: project_id in notifying for project_id in asked})

    def may_notify(self, change: RunChange) -> bool:
        """False only for a project known to notify nobody."""
        return change.project_id is None or self._known.get(change.project_id, True)

    def forget(self) -> None:
        self._known.clear()


def queue_for_changes(
    factory: sessionmaker[Session],
    read_factory: sessionmaker[Session],
    settings: Settings,
    changes: list[RunChange],
    clock: Clock,
    ask: set[int],
) -> tuple[list[int], set[int]]:
    """Queue the deliveries a burst of run changes calls for. Which of the projects in
    `ask` notify anybody is asked first, in one read transaction (unlike a writer's, it
    does not wait for the agents' reports to take its turn), and the changes of the
    others dropped; the rest are queued in one writer transaction. Returns the new
    deliveries' ids and those of `ask` that notify."""
    notifying: set[int] = set()
    if ask:
        with read_factory() as session:
            notifying = NotificationRepository(session).notifying(ask)
        changes = [c for c in changes if c.project_id not in ask or c.project_id in notifying]
    if not changes:
        return [], notifying
    try:
        return _queue(factory, settings, changes, clock), notifying
    except Exception:
        if len(changes) == 1:
            raise
    # One change that cannot be queued must not cost the others theirs.
    created: list[int] = []
    for change in changes:
        try:
            created += _queue(factory, settings, [change], clock)
        except Exception:
            logger.exception("queueing notifications for run %s failed", change.run_id)
    return created, notifying


def _queue(
    factory: sessionmaker[Session], settings: Settings, changes: list[RunChange], clock: Clock
) -> list[int]:
    created: list[int] = []
    with factory() as session:
        for change in changes:
            created += service.queue_for_run_status(
                session, settings, change.run_id, change.status, clock()
            )
        if created:
            session.commit()
    return created


def _change_of(event: Event) -> RunChange | None:
    if event.topic != "runs" or "run_id" not in event.data:
        return None
    status = Status(event.data["status"])
    if status is not Status.RUNNING and not status.finished:
        return None  # queued: nothing to tell
    project_id = event.data.get("project_id")
    return RunChange(int(event.data["run_id"]), status, project_id)


async def queue_run_notifications(
    bus: EventBus,
    factory: sessionmaker[Session],
    read_factory: sessionmaker[Session],
    settings: Settings,
    wake: asyncio.Event | None = None,
    clock: Clock = utcnow,
) -> None:
    """Forever: for each burst of run status events, queue the deliveries they call
    for, then wake the sender. (Events are per process: the process that changed the
    run queues them.) `read_factory` makes the sessions of the checks that only read."""
    projects = NotifyingProjects()
    with bus.subscribe(["runs", service.SETTINGS_TOPIC]) as subscription:
        async for event in subscription:
            try:
                changes: list[RunChange] = []
                for item in [event, *subscription.get_pending()]:
                    if item.kind == OVERFLOW or item.topic == service.SETTINGS_TOPIC:
                        projects.forget()
                    change = _change_of(item)
                    if change is not None and projects.may_notify(change):
                        changes.append(change)
                if not changes:
                    continue  # nothing to tell, no thread to wake for it
                ask = projects.unknown(changes)
                created, notifying = await run_in_threadpool(
                    queue_for_changes, factory, read_factory, settings, changes, clock, ask
                )
                projects.learn(ask, notifying)
            except Exception:
                logger.exception("queueing notifications for %s failed", event.data)
                continue
            if created and wake is not None:
                wake.set()


async def send_deliveries(
    factory: sessionmaker[Session],
    settings: Settings,
    wake: asyncio.Event | None = None,
    clock: Clock = utcnow,
) -> None:
    """Forever: send the deliveries that are due, when woken or every tick."""
    while True:
        try:
            await run_in_threadpool(service.deliver_due, factory, settings, clock())
        except Exception:
            logger.exception("sending notifications failed; retrying")
        if wake is None:
            await asyncio.sleep(settings.triggers_tick_seconds)
            continue
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), settings.triggers_tick_seconds)
