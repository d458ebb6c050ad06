"""After a delivery is answered: make its run (git work, then one transaction); and at
server start, make the runs that a stopped server left unmade."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.errors import ConveyorError
from conveyor.server.models.project import Project
from conveyor.server.models.webhook_delivery import WebhookDelivery
from conveyor.server.webhooks import service
from conveyor.server.webhooks.providers.base import ForgeEvent
from conveyor.server.webhooks.repository import DeliveryRepository

logger = logging.getLogger("conveyor.server.webhooks")

RESUME_GRACE = timedelta(minutes=1)
"""A delivery younger than this at start may still be in the hands of another server
(a replica, or the process being replaced): it is looked at only once the grace has
passed. Making the same run twice is impossible either way (see `make_run`); the grace
only spares the git work."""


def make_run(
    read_sessions: sessionmaker[Session],
    write_sessions: sessionmaker[Session],
    settings: Settings,
    delivery_pk: int,
    event: ForgeEvent,
) -> None:
    """Resolve the accepted delivery's commit and record its run. Failures are written
    to the delivery (result `error`, with the reason), never raised: nobody waits.

    Idempotent: the run is recorded under a lock on the delivery's row, and only while
    the delivery still waits for it, so two callers racing on one delivery (the request's
    task and a restarted server, or two servers starting) make one run between them."""
    with read_sessions() as session:
        delivery = session.get(WebhookDelivery, delivery_pk)
        if delivery is None or delivery.pending_event is None:
            return  # the project was deleted meanwhile, or the run was made already
        project = session.get(Project, delivery.project_id)
        if project is not None:
            session.expunge(project)
    if project is None:
        return
    problem: str
    try:
        # No transaction is open while git fetches (writer sessions lock SQLite).
        resolved = service.resolve_commit(settings, project, event)
        with write_sessions() as session:
            waiting = service.run_still_to_make(session, delivery_pk)
            current = session.get(Project, project.id)
            if waiting is None or current is None:
                return
            service.record_run(session, settings, current, waiting, event, resolved)
            session.commit()
        return
    except ConveyorError as error:
        problem = error.message
    except Exception as error:  # a background task has nobody to raise to
        logger.exception("webhook delivery %s: the run could not be made", delivery_pk)
        problem = f"internal error ({type(error).__name__}); the server log has the details"
    _record_failure(write_sessions, delivery_pk, problem)


def _record_failure(write_sessions: sessionmaker[Session], delivery_pk: int, problem: str) -> None:
    with write_sessions() as session:
        waiting = service.run_still_to_make(session, delivery_pk)
        if waiting is not None:
            service.record_failure(waiting, problem)
            session.commit()


def resume_unmade_runs(
    read_sessions: sessionmaker[Session],
    write_sessions: sessionmaker[Session],
    settings: Settings,
    *,
    received_before: datetime,
) -> int:
    """Make the runs of the accepted deliveries received before `received_before` that
    still wait for one (the server stopped after answering the forge and before making
    the run). Returns how many deliveries were taken up."""
    with read_sessions() as session:
        pending = DeliveryRepository(session).pending(received_before)
    for delivery_pk, encoded in pending:
        logger.info("webhook delivery %s: making the run a stopped server left", delivery_pk)
        try:
            event = service.decode_event(encoded)
        except ValidationError as error:
            _record_failure(
                write_sessions,
                delivery_pk,
                f"the stored event cannot be read ({error.error_count()} problem(s)); "
                "redeliver it from the forge's webhook settings",
            )
            continue
        make_run(read_sessions, write_sessions, settings, delivery_pk, event)
    return len(pending)


async def resume_accepted_deliveries(
    read_sessions: sessionmaker[Session],
    write_sessions: sessionmaker[Session],
    settings: Settings,
    grace: timedelta = RESUME_GRACE,
) -> None:
    """Once, at server start: make the runs that accepted deliveries received before
    the start still wait for; those older than `grace` at once, the others when the
    grace has passed."""
    started = utcnow()
    for received_before, delay in ((started - grace, 0.0), (started, grace.total_seconds())):
        await asyncio.sleep(delay)
        try:
            taken = await run_in_threadpool(
                resume_unmade_runs,
                read_sessions,
                write_sessions,
                settings,
                received_before=received_before,
            )
        except Exception:
            # The deliveries stay as they are; the next start tries them again.
            logger.exception("making the runs of accepted webhook deliveries failed")
        else:
            if taken:
                logger.info("took up %d accepted webhook delivery(ies) left without a run", taken)
