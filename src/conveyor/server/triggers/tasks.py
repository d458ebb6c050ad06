"""Background duties of the triggers package: the poller and the scheduler, one loop
each, started in the server's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.triggers import service

logger = logging.getLogger("conveyor.server.triggers")

Clock = Callable[[], datetime]


async def poll_repositories(
    factory: sessionmaker[Session], settings: Settings, clock: Clock = utcnow
) -> None:
    """Forever: poll the repositories whose interval has passed."""
    while True:
        try:
            outcome = await run_in_threadpool(service.poll_due, factory, settings, clock())
        except Exception:
            # A database or git hiccup must not end the duty; the next tick tries again.
            logger.exception("the poller failed; retrying")
        else:
            if outcome.run_ids:
                logger.info("polling started runs %s", outcome.run_ids)
            for project, error in outcome.errors.items():
                logger.warning("polling project %s: %s", project, error)
        await asyncio.sleep(settings.triggers_tick_seconds)


async def run_schedules(
    factory: sessionmaker[Session], settings: Settings, clock: Clock = utcnow
) -> None:
    """Forever: start the runs of due cron schedules."""
    while True:
        try:
            outcome = await run_in_threadpool(service.run_due_schedules, factory, settings, clock())
        except Exception:
            logger.exception("the scheduler failed; retrying")
        else:
            if outcome.run_ids:
                logger.info("schedules started runs %s", outcome.run_ids)
            for schedule_id, error in outcome.errors.items():
                logger.warning("schedule %s: %s", schedule_id, error)
        await asyncio.sleep(settings.triggers_tick_seconds)
