"""Background duties of the artifacts package, started in the server's lifespan."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from starlette.concurrency import run_in_threadpool

from conveyor.server.artifacts.service import remove_abandoned_uploads
from conveyor.server.config import Settings

logger = logging.getLogger("conveyor.server.artifacts")

ABANDONED_AFTER = timedelta(hours=6)
"""An upload untouched this long is abandoned: its agent resumes within minutes, or
never (it was lost and its job runs again elsewhere, uploading anew)."""
SWEEP_EVERY_SECONDS = 600.0


async def sweep_abandoned_uploads(settings: Settings) -> None:
    """Forever: remove uploads nobody finished, so a lost agent leaves no partial files."""
    while True:
        try:
            removed = await run_in_threadpool(remove_abandoned_uploads, settings, ABANDONED_AFTER)
        except OSError:
            logger.exception("sweeping abandoned uploads failed; trying again later")
        else:
            if removed:
                logger.info("removed %d abandoned upload(s)", removed)
        await asyncio.sleep(SWEEP_EVERY_SECONDS)
