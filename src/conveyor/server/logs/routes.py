"""Step logs over HTTP (line ranges, raw download) and WebSocket (live streams).

    GET /api/v1/steps/{step}/log?start=&end=   {start, lines, total, times}   lines as text
    GET /api/v1/steps/{step}/log/raw           the whole log, text/plain, attachment
    WS  /api/v1/runs/{run}/logs/ws?step=|job=[&index=]&offset=
    WS  /jobs/{job}/ws?index=&offset=          (the cicd service's path: a whole job)

`times` (one per line) and `time_runs` say when lines started, in ms since the epoch
(null: unknown); `time_runs` is `[[time, count], ...]`, `count` lines in a row at `time`.

WebSocket messages are JSON: `{"type": "status", "step", "job", "index", "name",
"status"}`, `{"type": "lines", "step", "start", "lines", "time_runs"}`, `{"type":
"end", "status"}`; a refused stream gets `{"type": "error", "error": {code, message,
detail}}` and is closed with code 4000 + the HTTP status (4401, 4403, 4404, 4422).
WebSockets authenticate with the session cookie, `Authorization: Bearer`, or `?token=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.routing import WebSocketRoute
from uvicorn.protocols.utils import ClientDisconnected

from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.deps import AppSettings, DbSession, RequestActor
from conveyor.server.errors import ConveyorError, InvalidInputError
from conveyor.server.events import EventBus
from conveyor.server.logs import service
from conveyor.server.logs.schemas import LogLines
from conveyor.server.logs.streams import LinesMessage, LogStreams, Send
from conveyor.server.users import service as users_service
from conveyor.server.users.authorization import Actor
from conveyor.server.users.sessions import SESSION_COOKIE_NAME, SessionSigner
from conveyor.server.websocket_protocol import FRAME_WRITER, FrameWriter

router = APIRouter(tags=["logs"])
logger = logging.getLogger("conveyor.server.logs")

_UNSAFE_FILE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


@router.get("/api/v1/steps/{step_id}/log", response_model=LogLines)
def read_log_lines(
    step_id: int,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
    start: Annotated[int, Query(ge=0)] = 0,
    end: Annotated[int | None, Query(ge=0)] = None,
) -> LogLines:
    """Lines `[start, end)` (0-based) of a step's log, masked; at most 10,000 per call."""
    context = service.step_for_reading(session, actor, step_id)
    secrets = service.step_secrets(session, settings, context.project)
    lines = service.read_text_range(settings, context.step, start, end, secrets)
    times = service.read_times(settings, context.step, start, len(lines))
    total = max(context.step.log_line_count, start + len(lines))
    return LogLines(start=start, lines=lines, total=total, times=times)


@router.get("/api/v1/steps/{step_id}/log/raw", response_class=StreamingResponse)
def download_raw_log(
    step_id: int, session: DbSession, settings: AppSettings, actor: RequestActor
) -> StreamingResponse:
    """The step's whole log as stored (masked), as a file."""
    context = service.step_for_reading(session, actor, step_id)
    secrets = service.step_secrets(session, settings, context.project)
    raw = service.raw_log(settings, context.step, secrets)
    name = "-".join(
        (context.project.name, str(context.run.number), context.job.name, str(context.step.index))
    )
    file_name = _UNSAFE_FILE_NAME_CHARACTERS.sub("_", name) + ".log"
    return StreamingResponse(
        raw.chunks(),
        media_type="text/plain; charset=utf-8",
        headers={
            "Content-Length": str(raw.length()),
            "Content-Disposition": f'attachment; filename="{file_name}"',
        },
    )


# --- WebSocket streams -----------------------------------------------------------------


def _log_streams(websocket: WebSocket) -> LogStreams:
    state = websocket.app.state
    streams: LogStreams | None = getattr(state, "log_streams", None)
    if streams is None:
        bus: EventBus = state.event_bus
        streams = state.log_streams = LogStreams(state.read_session_factory, state.settings, bus)
    return streams


def _websocket_actor(websocket: WebSocket, session: Session) -> Actor:
    settings: Settings = websocket.app.state.settings
    if settings.auth_disabled:
        return users_service.development_actor(session)
    token = websocket.query_params.get("token")
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if not token and scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip()
    if token:
        return users_service.actor_for_token(session, token)
    cookie = websocket.cookies.get(SESSION_COOKIE_NAME)
    if cookie:
        signer: SessionSigner = websocket.app.state.session_signer
        actor = users_service.actor_for_session(session, signer, cookie)
        if actor is not None:
            return actor
    return Actor.anonymous(read_allowed=settings.allow_anonymous_read)


@contextlib.contextmanager
def _writer_transaction(websocket: WebSocket) -> Iterator[Session]:
    # A writer from its first statement: on SQLite a read that later writes would fail
    # against concurrent log appends.
    state = websocket.app.state
    factory: sessionmaker[Session] = state.session_factory
    with factory() as session:
        session.connection(execution_options=dialect.write_transaction_options(state.engine))
        yield session
        session.commit()


def _checked(websocket: WebSocket, plan: Callable[[Session], Follow]) -> Follow:
    """Run `plan` (who asks, and may they) in one short transaction.

    A read transaction first: many viewers opening at once must not queue one by one
    for SQLite's single writer, holding up the agents' log appends meanwhile. Only
    when checking the actor changed a row (a token's last use, recorded at most once a
    minute; the first admin, in development mode) is it done again as a writer."""
    state = websocket.app.state
    settings: Settings = state.settings
    if not settings.auth_disabled:
        factory: sessionmaker[Session] = state.read_session_factory
        with factory() as session, session.no_autoflush:
            follow = plan(session)
            if not (session.new or session.dirty or session.deleted):
                return follow
            session.rollback()
    with _writer_transaction(websocket) as session:
        return plan(session)


Follow = Callable[[LogStreams, Send], Coroutine[Any, Any, None]]


def _plan_run_stream(
    websocket: WebSocket,
    session: Session,
    run_id: int,
    step: int | None,
    job: int | None,
    index: int | None,
    offset: int,
) -> Follow:
    """Check who asks and what; return the stream to run."""
    actor = _websocket_actor(websocket, session)
    run, _project = service.run_for_reading(session, actor, run_id)
    if step is not None:
        context = service.step_for_reading(session, actor, step)
        if context.run.id != run.id:
            raise service.StepNotFoundError(
                f"step {step} is not a step of run {run_id}",
                detail={"run": run_id, "step": step},
            )
        step_id = step
        return lambda streams, send: streams.follow_step(step_id, offset, send)
    if job is None:
        raise InvalidInputError(
            f"say which log of run {run_id} to follow: ?step=<step id>, or ?job=<job id> "
            "(every step of it) with &index=<step index> for one step",
            detail={"run": run_id},
        )
    found_job, job_run, _ = service.job_for_reading(session, actor, job)
    if job_run.id != run.id:
        raise service.JobNotFoundError(
            f"job {job} is not a job of run {run_id}", detail={"run": run_id, "job": job}
        )
    if index is None:
        job_id = found_job.id
        return lambda streams, send: streams.follow_job(job_id, run_id, 0, offset, send)
    one = service.step_of_job(session, found_job, index)
    if one is None:
        raise service.StepNotFoundError(
            f"job {job} of run {run_id} has no step {index}",
            detail={"run": run_id, "job": job, "index": index},
        )
    one_id = one.id
    return lambda streams, send: streams.follow_step(one_id, offset, send)


def _plan_job_stream(
    websocket: WebSocket, session: Session, job_id: int, index: int, offset: int
) -> Follow:
    actor = _websocket_actor(websocket, session)
    _job, run, _project = service.job_for_reading(session, actor, job_id)
    run_id = run.id
    return lambda streams, send: streams.follow_job(job_id, run_id, index, offset, send)


async def _until_disconnected(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


CheckKey = tuple[str, str, str | None, str | None]


def _same_request(websocket: WebSocket) -> CheckKey:
    """What decides a stream's check: the path and query (the target, `?token=`) and
    the credentials in the headers."""
    headers = websocket.headers
    return (
        websocket.url.path,
        websocket.url.query,
        headers.get("authorization"),
        headers.get("cookie"),
    )


CHECK_REMEMBERED_SECONDS = 1.0
"""How long a stream's successful check answers the identical requests that follow it."""


async def _check_once(websocket: WebSocket, plan: Callable[[], Follow]) -> Follow:
    """`plan` in the thread pool, shared by the identical requests that arrive while it
    runs or within `CHECK_REMEMBERED_SECONDS` after it succeeded: a hundred viewers
    opening one job at once cost one check (one database read), not a hundred in a
    row in the pool, ahead of the agent's log appends. A refusal is every sharer's
    while it runs, and never remembered; a token revoked or a member removed refuses
    new streams at most `CHECK_REMEMBERED_SECONDS` later (streams already open run on,
    as they always do)."""
    state = websocket.app.state
    checking: dict[CheckKey, asyncio.Future[Follow]] | None = getattr(
        state, "log_stream_checks", None
    )
    if checking is None:
        checking = state.log_stream_checks = {}
    key = _same_request(websocket)
    running = checking.get(key)
    if running is None:
        running = asyncio.ensure_future(run_in_threadpool(plan))
        checking[key] = running

        def forget(done: asyncio.Future[Follow], key: CheckKey = key) -> None:
            if checking.get(key) is done:
                del checking[key]

        def checked(done: asyncio.Future[Follow]) -> None:
            if done.cancelled() or done.exception() is not None:
                forget(done)
            else:
                asyncio.get_running_loop().call_later(CHECK_REMEMBERED_SECONDS, forget, done)

        running.add_done_callback(checked)
    return await asyncio.shield(running)


def _sender(websocket: WebSocket) -> Send:
    """Sends a stream's messages: straight to the connection where the server offers it
    (`websocket_protocol`; the compressed form of a lines message for every connection
    that takes it), else through ASGI as text."""
    write_text: FrameWriter | None = websocket.scope.get("extensions", {}).get(FRAME_WRITER)
    if write_text is None:

        async def send_text(message: str | LinesMessage) -> None:
            await websocket.send_text(message if isinstance(message, str) else message.text)

        return send_text

    async def send(message: str | LinesMessage) -> None:
        try:
            if isinstance(message, str):
                await write_text(message, None)
            else:
                await write_text(message.text, message.deflated)
        except ClientDisconnected as gone:
            raise WebSocketDisconnect(1006) from gone

    return send


async def _serve(websocket: WebSocket, plan: Callable[[], Follow]) -> None:
    await websocket.accept()
    try:
        follow = await _check_once(websocket, plan)
    except ConveyorError as error:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.send_text(json.dumps({"type": "error", **error.to_body()}))
            await websocket.close(code=4000 + error.status_code, reason=error.code)
        return
    streaming = asyncio.create_task(follow(_log_streams(websocket), _sender(websocket)))
    # The client never sends anything that matters, but its close must end the stream
    # at once (a stalled step would otherwise keep its follower alive).
    watching = asyncio.create_task(_until_disconnected(websocket))
    try:
        done, _ = await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (streaming, watching):
            task.cancel()
        for task in (streaming, watching):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
    if streaming not in done:
        return  # the client left
    failure = streaming.exception()
    if failure is not None and not isinstance(failure, WebSocketDisconnect):
        logger.error("a log stream failed", exc_info=failure)
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.close(code=1000 if failure is None else 1011)


_LARGEST = 2**31 - 1
"""The largest id or line number there can be (a database integer)."""


def _whole_number(websocket: WebSocket, name: str, default: int | None) -> int | None:
    """A path or query parameter that must be a whole number >= 0."""
    raw = websocket.path_params.get(name, websocket.query_params.get(name))
    if raw is None or raw == "":
        return default
    if raw.isascii() and raw.isdigit() and int(raw) <= _LARGEST:
        return int(raw)
    where = "path" if name in websocket.path_params else "query"
    raise InvalidInputError(
        f"the {where} parameter {name} must be a whole number >= 0, not {raw!r}",
        detail={"loc": [where, name], "value": raw},
    )


def _refused(error: ConveyorError) -> Callable[[], Follow]:
    def plan() -> Follow:
        raise error

    return plan


async def follow_run_logs(websocket: WebSocket) -> None:
    """Follow one step (`step`, or `job` + `index`) or a whole job (`job`) from line
    `offset`: the backlog, then live lines, then the end."""
    try:
        run_id = _whole_number(websocket, "run_id", 0) or 0
        step = _whole_number(websocket, "step", None)
        job = _whole_number(websocket, "job", None)
        index = _whole_number(websocket, "index", None)
        offset = _whole_number(websocket, "offset", 0) or 0
    except InvalidInputError as error:
        await _serve(websocket, _refused(error))
        return
    await _serve(
        websocket,
        lambda: _checked(
            websocket,
            lambda session: _plan_run_stream(websocket, session, run_id, step, job, index, offset),
        ),
    )


async def follow_job_logs(websocket: WebSocket) -> None:
    """Every step of a job in order (the cicd service's path)."""
    try:
        job_id = _whole_number(websocket, "job_id", 0) or 0
        index = _whole_number(websocket, "index", 0) or 0
        offset = _whole_number(websocket, "offset", 0) or 0
    except InvalidInputError as error:
        await _serve(websocket, _refused(error))
        return
    await _serve(
        websocket,
        lambda: _checked(
            websocket, lambda session: _plan_job_stream(websocket, session, job_id, index, offset)
        ),
    )


websocket_routes = [
    WebSocketRoute("/api/v1/runs/{run_id}/logs/ws", follow_run_logs),
    WebSocketRoute("/jobs/{job_id}/ws", follow_job_logs),
]
"""The log streams, as plain Starlette routes that `app.create_app` puts first: a
hundred viewers opening a job cost a hundred routings and parameter checks, and
FastAPI's (dependency solving, every included router matched twice) cost several
times these. A bad parameter is refused like anything else: the error message, then
close code 4422."""
