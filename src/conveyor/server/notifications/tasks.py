"""Background duties of notifications: one turns run events into deliveries, one
sends the deliveries that are due."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.events import OVERFLOW, EventBus
from conveyor.server.notifications import service
from conveyor.server.notifications.repository import NotificationRepository
from conveyor.server.triggers.tasks import Clock

logger = logging.getLogger("conveyor.server.notifications")


def queue_once(
    factory: sessionmaker[Session],
    settings: Settings,
    run_id: int,
    status: Status,
    clock: Clock,
    project_id: int | None,
    read_factory: sessionmaker[Session],
) -> list[int]:
    if project_id is not None:
        # Most projects notify nobody: asked in a read transaction, which (unlike a
        # writer's) does not wait for the agents' reports to take its turn.
        with read_factory() as session:
            if not NotificationRepository(session).notifies(project_id):
                return []
    with factory() as session:
        created = service.queue_for_run_status(session, settings, run_id, status, clock())
        if created:
            session.commit()
        return created


async def queue_run_notifications(
    bus: EventBus,
    factory: sessionmaker[Session],
    read_factory: sessionmaker[Session],
    settings: Settings,
    wake: asyncio.Event | None = None,
    clock: Clock = utcnow,
) -> None:
    """Forever: for each run status event, queue the deliveries it calls for, then wake
    the sender. (Events are per process: the process that changed the run queues them.)
    `read_factory` makes the sessions of the checks that only read."""
    with bus.subscribe(["runs"]) as subscription:
        async for event in subscription:
            if event.kind == OVERFLOW or "run_id" not in event.data:
                continue
            try:
                status = Status(event.data["status"])
                if status is not Status.RUNNING and not status.finished:
                    continue  # queued: nothing to tell (and no thread to wake for it)
                created = await run_in_threadpool(
                    queue_once,
                    factory,
                    settings,
                    int(event.data["run_id"]),
                    status,
                    clock,
                    event.data.get("project_id"),
                    read_factory,
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
