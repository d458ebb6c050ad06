"""After a delivery is answered: make its run (git work, then one transaction)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.config import Settings
from conveyor.server.errors import ConveyorError
from conveyor.server.models.project import Project
from conveyor.server.models.webhook_delivery import WebhookDelivery
from conveyor.server.webhooks import service
from conveyor.server.webhooks.providers.base import ForgeEvent

logger = logging.getLogger("conveyor.server.webhooks")


def make_run(
    read_sessions: sessionmaker[Session],
    write_sessions: sessionmaker[Session],
    settings: Settings,
    delivery_pk: int,
    event: ForgeEvent,
) -> None:
    """Resolve the accepted delivery's commit and record its run. Failures are written
    to the delivery (result `error`, with the reason), never raised: nobody waits."""
    with read_sessions() as session:
        delivery = session.get(WebhookDelivery, delivery_pk)
        project = session.get(Project, delivery.project_id) if delivery else None
        if project is not None:
            session.expunge(project)
    if project is None:
        return  # the project was deleted meanwhile, and its deliveries with it
    problem: str
    try:
        # No transaction is open while git fetches (writer sessions lock SQLite).
        resolved = service.resolve_commit(settings, project, event)
        with write_sessions() as session:
            delivery = session.get(WebhookDelivery, delivery_pk)
            current = session.get(Project, project.id)
            if delivery is None or current is None:
                return
            service.record_run(session, settings, current, delivery, event, resolved)
            session.commit()
        return
    except ConveyorError as error:
        problem = error.message
    except Exception as error:  # a background task has nobody to raise to
        logger.exception("webhook delivery %s: the run could not be made", delivery_pk)
        problem = f"internal error ({type(error).__name__}); the server log has the details"
    with write_sessions() as session:
        delivery = session.get(WebhookDelivery, delivery_pk)
        if delivery is not None:
            service.record_failure(delivery, problem)
            session.commit()
