"""Background duties of the agents package, started in the server's lifespan."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.server.agents import repository, service
from conveyor.server.config import Settings

logger = logging.getLogger("conveyor.server.agents")


def release_expired_leases_once(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """One pass of the lease reaper, in its own transaction."""
    with repository.open_write_session(factory) as session:
        handled = service.release_expired_leases(session, settings)
        session.commit()
        return handled


def end_overdue_jobs_once(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """One pass of the server's job-timeout backstop, in its own transaction."""
    with repository.open_write_session(factory) as session:
        ended = service.end_overdue_jobs(session, settings)
        session.commit()
        return ended


def reaper_interval(settings: Settings) -> float:
    # Often enough that a lost agent's job waits at most about a quarter lease more.
    return max(0.05, min(settings.heartbeat_seconds, settings.lease_seconds / 4))


async def reap_expired_leases(factory: sessionmaker[Session], settings: Settings) -> None:
    """Forever: requeue (or end in `error`) the jobs whose agent stopped heartbeating,
    and end in `error` the jobs that outran their timeout without a report."""
    interval = reaper_interval(settings)
    while True:
        try:
            handled = await run_in_threadpool(release_expired_leases_once, factory, settings)
            ended = await run_in_threadpool(end_overdue_jobs_once, factory, settings)
        except Exception:
            # A database hiccup must not end the duty; the next pass tries again.
            logger.exception("the lease reaper failed; retrying in %.1fs", interval)
        else:
            if handled:
                logger.info("released the expired leases of jobs %s", handled)
            if ended:
                logger.warning(
                    "ended jobs %s: their timeout passed and their agents did not report", ended
                )
        await asyncio.sleep(interval)
