"""`/ui/ws/runs`: run status changes pushed to the dashboard as they happen.

Each `runs` event from the bus is a wake-up with a run id, each `queue` event one with
a job id (a run queued, or a job put back); the run is read again and sent only if the
viewer may read its project. Messages:

- `{"type": "run", "run": <run summary as in the API, plus "waiting_reason">,
  "waiting": {<run id>: <reason>}}`: the run, and why each queued run the viewer may
  read waits (a claim or a new run changes the reasons of others too);
- `{"type": "waiting", "waiting": {...}}`: the reasons alone, when they changed without
  a run event (an agent went offline or came back), checked every few seconds.

The reasons cost a few queries per event, so only a page that shows them asks for
them (`?waiting=1`, the dashboard); others get `waiting_reason` null and no `waiting`.
- `{"type": "resync"}` when events were lost (the page then reloads its lists).

`/ui/ws/runs/{run_id}`: one run in full, for its page (`follow_run`). Messages:

- `{"type": "detail", "run": <the run as GET /api/v1/runs/{id} gives it: status,
  timings, and each job with its steps>}` on connect and whenever any of it changed.

Each `run:<id>` event (a run or step status) wakes it; a job can change without one (a
second job starting while the run already runs), so while the run is unfinished it also
looks every `DETAIL_CHECK_SECONDS`. A whole snapshot each time: a lost event costs
nothing but a late update, and the page needs no resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.protocol.status import Status
from conveyor.server.agents import service as agents_service
from conveyor.server.config import Settings
from conveyor.server.errors import ConveyorError
from conveyor.server.events import OVERFLOW, Event, EventBus
from conveyor.server.models.job import Job
from conveyor.server.runs import service as runs_service
from conveyor.server.runs.repository import RunFilter
from conveyor.server.users import service as users_service
from conveyor.server.users.authorization import Action, Actor
from conveyor.server.users.sessions import SESSION_COOKIE_NAME, SessionSigner

router = APIRouter(include_in_schema=False)

WAITING_CHECK_SECONDS = 3.0
"""How often the reasons of queued runs are checked while nothing else is pushed: an
agent going offline changes them without any run event."""

DETAIL_CHECK_SECONDS = 3.0
"""How often the run page's socket looks at an unfinished run without being woken."""
RUN_NOT_READABLE_CODE = 4404
"""Close code when the run does not exist or the viewer may not read it."""


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


def _waiting(session: Session, settings: Settings, actor: Actor) -> dict[str, str]:
    """Why each queued run that `actor` may read waits, by run id (as JSON keys)."""
    try:
        queued = runs_service.tasks(session, actor, RunFilter(), include=(Status.QUEUED,)).queued
    except ConveyorError:
        return {}
    reasons = agents_service.explain_waiting_runs(
        session, settings, [task.run_id for task in queued]
    )
    return {str(run_id): reason for run_id, reason in reasons.items()}


def _run_id_of(session: Session, event: Event) -> int | None:
    if event.topic == "queue":
        job_id = event.data.get("job_id")
        job = session.get(Job, job_id) if isinstance(job_id, int) else None
        return job.run_id if job is not None else None
    run_id = event.data.get("run_id")
    return run_id if isinstance(run_id, int) else None


def _run_message(
    websocket: WebSocket, actor: Actor, event: Event, *, with_waiting: bool
) -> dict[str, Any] | None:
    """The run the event is about (with every waiting reason, when asked), if the viewer
    may read it."""
    state = websocket.app.state
    factory: sessionmaker[Session] = state.read_session_factory
    with factory() as session:
        run_id = _run_id_of(session, event)
        if run_id is None:
            return None
        try:
            run, project = runs_service.get_run_for(session, actor, run_id, Action.READ)
        except ConveyorError:
            return None  # not visible to this viewer, or gone
        summary: dict[str, Any] = runs_service.summarize(run, project.name).model_dump(mode="json")
        waiting = _waiting(session, state.settings, actor) if with_waiting else None
    if waiting is None:
        return {"type": "run", "run": {**summary, "waiting_reason": None}}
    summary["waiting_reason"] = waiting.get(str(run_id))
    return {"type": "run", "run": summary, "waiting": waiting}


def _waiting_now(websocket: WebSocket, actor: Actor) -> dict[str, str]:
    state = websocket.app.state
    factory: sessionmaker[Session] = state.read_session_factory
    with factory() as session:
        return _waiting(session, state.settings, actor)


@router.websocket("/ui/ws/runs")
async def follow_runs(websocket: WebSocket) -> None:
    """Push every status change of a run the signed-in viewer may read."""
    await websocket.accept()
    actor = await run_in_threadpool(_actor, websocket)
    if actor.is_anonymous and not actor.anonymous_read_allowed:
        await websocket.close(code=4401, reason="not_authenticated")
        return
    with_waiting = websocket.query_params.get("waiting") == "1"
    bus: EventBus = websocket.app.state.event_bus
    watching = asyncio.create_task(_until_disconnected(websocket))
    try:
        with bus.subscribe(["runs", "queue"]) as subscription:
            waiting = (
                await run_in_threadpool(_waiting_now, websocket, actor) if with_waiting else {}
            )
            checked_at = time.monotonic()
            while not watching.done():
                event = await subscription.get(within=1.0)
                if event is None:
                    if not with_waiting or time.monotonic() - checked_at < WAITING_CHECK_SECONDS:
                        continue
                    now_waiting = await run_in_threadpool(_waiting_now, websocket, actor)
                    checked_at = time.monotonic()
                    if now_waiting != waiting:
                        waiting = now_waiting
                        await websocket.send_text(
                            json.dumps({"type": "waiting", "waiting": waiting})
                        )
                    continue
                if event.kind == OVERFLOW:
                    await websocket.send_text(json.dumps({"type": "resync"}))
                    continue
                message = await run_in_threadpool(
                    functools.partial(
                        _run_message, websocket, actor, event, with_waiting=with_waiting
                    )
                )
                if message is not None:
                    if with_waiting:
                        waiting = message["waiting"]
                        checked_at = time.monotonic()
                    await websocket.send_text(json.dumps(message))
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


def _run_detail(websocket: WebSocket, actor: Actor, run_id: int) -> dict[str, Any] | None:
    """The run with its jobs and steps, as the API gives it, if the viewer may read it."""
    factory: sessionmaker[Session] = websocket.app.state.read_session_factory
    with factory() as session:
        try:
            run, project = runs_service.get_run_for(session, actor, run_id, Action.READ)
        except ConveyorError:
            return None
        detail: dict[str, Any] = runs_service.describe_run(session, run, project).model_dump(
            mode="json"
        )
        return detail


@router.websocket("/ui/ws/runs/{run_id}")
async def follow_run(websocket: WebSocket, run_id: int) -> None:
    """Push the run `run_id` whole (status, jobs, steps) each time any of it changes."""
    await websocket.accept()
    actor = await run_in_threadpool(_actor, websocket)
    if actor.is_anonymous and not actor.anonymous_read_allowed:
        await websocket.close(code=4401, reason="not_authenticated")
        return
    bus: EventBus = websocket.app.state.event_bus
    watching = asyncio.create_task(_until_disconnected(websocket))
    try:
        # Subscribed before the first read, so no change falls between the two.
        with bus.subscribe([f"run:{run_id}"]) as subscription:
            sent: str | None = None
            while not watching.done():
                detail = await run_in_threadpool(_run_detail, websocket, actor, run_id)
                if detail is None:
                    await websocket.close(code=RUN_NOT_READABLE_CODE, reason="run_not_readable")
                    return
                text = json.dumps({"type": "detail", "run": detail})
                if text != sent:
                    await websocket.send_text(text)
                    sent = text
                finished = Status(detail["status"]).finished
                woken_at = time.monotonic()
                while not watching.done():
                    # A finished run changes only by a late event; an unfinished one
                    # is also looked at now and then.
                    event = await subscription.get(within=1.0)
                    if event is not None:
                        subscription.get_pending()  # a burst is one read
                        break
                    if not finished and time.monotonic() - woken_at >= DETAIL_CHECK_SECONDS:
                        break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
            await watching
