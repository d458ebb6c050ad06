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


def queue_for_changes(
    factory: sessionmaker[Session],
    read_factory: sessionmaker[Session],
    settings: Settings,
    changes: list[RunChange],
    clock: Clock,
) -> list[int]:
    """Queue the deliveries a burst of run changes calls for; the new deliveries' ids.
    Which of their projects notify anybody is asked in one read transaction (unlike a
    writer's, it does not wait for the agents' reports to take its turn); the changes
    of those projects are queued in one writer transaction."""
    known = {change.project_id for change in changes if change.project_id is not None}
    if known:
        with read_factory() as session:
            notifying = NotificationRepository(session).notifying(known)
        changes = [c for c in changes if c.project_id is None or c.project_id in notifying]
    if not changes:
        return []
    try:
        return _queue(factory, settings, changes, clock)
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
    return created


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
    if event.kind == OVERFLOW or "run_id" not in event.data:
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
    with bus.subscribe(["runs"]) as subscription:
        async for event in subscription:
            try:
                changes = [
                    change
                    for change in map(_change_of, [event, *subscription.get_pending()])
                    if change is not None
                ]
                if not changes:
                    continue  # no thread to wake for these
                created = await run_in_threadpool(
                    queue_for_changes, factory, read_factory, settings, changes, clock
                )
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
