"""`/ui/ws/runs`: run status changes pushed to the dashboard as they happen.

Each `runs` event from the bus is a wake-up with a run id; the run is read again and
sent only if the viewer may read its project. Messages:
`{"type": "run", "run": <run summary as in the API>}`, and `{"type": "resync"}` when
events were lost (the page then reloads its lists).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.server.config import Settings
from conveyor.server.errors import ConveyorError
from conveyor.server.events import OVERFLOW, EventBus
from conveyor.server.runs import service as runs_service
from conveyor.server.users import service as users_service
from conveyor.server.users.authorization import Action, Actor
from conveyor.server.users.sessions import SESSION_COOKIE_NAME, SessionSigner

router = APIRouter(include_in_schema=False)


def _actor(websocket: WebSocket) -> Actor:
    state = websocket.app.state
    settings: Settings = state.settings
    factory: sessionmaker[Session] = state.read_session_factory
    with factory() as session:
        if settings.auth_disabled:
            return users_service.development_actor(session)
        cookie = websocket.cookies.get(SESSION_COOKIE_NAME)
        if cookie:
            signer: SessionSigner = state.session_signer
            actor = users_service.actor_for_session(session, signer, cookie)
            if actor is not None:
                return actor
    return Actor.anonymous(read_allowed=settings.allow_anonymous_read)


def _summary(websocket: WebSocket, actor: Actor, run_id: int) -> str | None:
    factory: sessionmaker[Session] = websocket.app.state.read_session_factory
    with factory() as session:
        try:
            run, project = runs_service.get_run_for(session, actor, run_id, Action.READ)
        except ConveyorError:
            return None  # not visible to this viewer, or gone
        summary = runs_service.summarize(run, project.name)
    return json.dumps({"type": "run", "run": summary.model_dump(mode="json")})


@router.websocket("/ui/ws/runs")
async def follow_runs(websocket: WebSocket) -> None:
    """Push every status change of a run the signed-in viewer may read."""
    await websocket.accept()
    actor = await run_in_threadpool(_actor, websocket)
    if actor.is_anonymous and not actor.anonymous_read_allowed:
        await websocket.close(code=4401, reason="not_authenticated")
        return
    bus: EventBus = websocket.app.state.event_bus
    watching = asyncio.create_task(_until_disconnected(websocket))
    try:
        with bus.subscribe(["runs"]) as subscription:
            while not watching.done():
                event = await subscription.get(within=1.0)
                if event is None:
                    continue
                if event.kind == OVERFLOW:
                    await websocket.send_text(json.dumps({"type": "resync"}))
                    continue
                run_id = event.data.get("run_id")
                if not isinstance(run_id, int):
                    continue
                message = await run_in_threadpool(_summary, websocket, actor, run_id)
                if message is not None:
                    await websocket.send_text(message)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
            await watching


async def _until_disconnected(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
