"""JSON API of agents: administration (`/api/v1/agents`, admins) and the agent protocol
(`/api/v1/agent/...`, agent tokens; see `conveyor.protocol.agents`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request, status
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.protocol.agents import (
    LEASE_HEADER,
    AgentInfo,
    AgentRegistered,
    ArtifactInfo,
    ClaimRequest,
    ClaimResponse,
    Heartbeat,
    HeartbeatResponse,
    JobReport,
    LogAppended,
    StepEnd,
    StepReport,
    UploadStart,
    UploadState,
)
from conveyor.server.agents import repository, service
from conveyor.server.agents.schemas import (
    AgentCreate,
    AgentCreated,
    AgentDeleted,
    AgentRead,
    JobWaiting,
)
from conveyor.server.artifacts import service as artifacts_service
from conveyor.server.audit import service as audit
from conveyor.server.config import Settings
from conveyor.server.deps import (
    AppSettings,
    CurrentActor,
    DbSession,
    RequestActor,
    remote_address,
)
from conveyor.server.errors import ConveyorError, NotAuthenticatedError
from conveyor.server.events import EventBus
from conveyor.server.logs import service as logs_service
from conveyor.server.models.agent import Agent
from conveyor.server.users.authorization import Actor

router = APIRouter(prefix="/api/v1", tags=["agents"])


# --- dependencies ------------------------------------------------------------------------


def _session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def bearer_token(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise NotAuthenticatedError(
            "agent calls need 'Authorization: Bearer <agent token>'; an administrator "
            "creates agents and their tokens with POST /api/v1/agents",
            code="agent_token_missing",
        )
    return credentials.strip()


LeaseId = Annotated[str | None, Header(alias=LEASE_HEADER)]
_T = TypeVar("_T")


async def _as_agent(request: Request, work: Callable[[Session, Agent], _T]) -> _T:
    """One agent call: authenticate the agent, do `work` and commit, in one trip to a
    worker thread (rolled back when `work` raises). A writer session from the start: agent
    calls read, then write (see `create_app`).

    The routes of the protocol are `async` and come here, rather than taking the session
    and the agent as FastAPI dependencies: each sync dependency and each sync route is a
    trip of its own to the thread pool (four for a report, with the session's exit), and
    those trips were a fifth of the server's work per run."""
    factory = _session_factory(request)
    token = bearer_token(request)

    def in_thread() -> _T:
        with factory() as session:
            try:
                result = work(session, service.authenticate(session, token))
            except BaseException:
                session.rollback()
                raise
            session.commit()
            return result

    return await run_in_threadpool(in_thread)


# --- administration ----------------------------------------------------------------------


def _audit(session: Session, request: Request, actor: Actor, action: str, agent_id: int) -> None:
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=action,
        target_type="agent",
        target_id=agent_id,
        remote_address=remote_address(request),
    )


@router.post("/agents", response_model=AgentCreated, status_code=status.HTTP_201_CREATED)
def create_agent(body: AgentCreate, actor: CurrentActor, session: DbSession) -> AgentCreated:
    agent, token = service.create_agent(session, actor, body.name)
    return AgentCreated(**AgentRead.model_validate(agent).model_dump(), token=token)


@router.get("/agents", response_model=list[AgentRead])
def list_agents(actor: CurrentActor, session: DbSession, settings: AppSettings) -> list[AgentRead]:
    return service.describe_agents(session, settings, service.list_agents(session, actor))


@router.get("/agents/{agent_id}", response_model=AgentRead)
def read_agent(
    agent_id: int, actor: CurrentActor, session: DbSession, settings: AppSettings
) -> AgentRead:
    (read,) = service.describe_agents(
        session, settings, [service.get_agent(session, actor, agent_id)]
    )
    return read


@router.post("/agents/{agent_id}/disable", response_model=AgentRead)
def disable_agent(
    agent_id: int,
    request: Request,
    actor: CurrentActor,
    session: DbSession,
    settings: AppSettings,
) -> AgentRead:
    """The agent finishes the jobs it runs and claims no more."""
    agent = service.set_enabled(session, actor, agent_id, enabled=False)
    _audit(session, request, actor, "agent.disable", agent.id)
    (read,) = service.describe_agents(session, settings, [agent])
    return read


@router.post("/agents/{agent_id}/enable", response_model=AgentRead)
def enable_agent(
    agent_id: int,
    request: Request,
    actor: CurrentActor,
    session: DbSession,
    settings: AppSettings,
) -> AgentRead:
    agent = service.set_enabled(session, actor, agent_id, enabled=True)
    _audit(session, request, actor, "agent.enable", agent.id)
    (read,) = service.describe_agents(session, settings, [agent])
    return read


@router.delete("/agents/{agent_id}", response_model=AgentDeleted)
def delete_agent(
    agent_id: int,
    request: Request,
    actor: CurrentActor,
    session: DbSession,
    force: Annotated[bool, Query()] = False,
) -> AgentDeleted:
    """409 `agent_busy` while the agent holds jobs, unless `?force=true`, which puts
    its running jobs back in the queue."""
    agent, requeued = service.delete_agent(session, actor, agent_id, force=force)
    _audit(session, request, actor, "agent.delete", agent_id)
    return AgentDeleted(id=agent_id, name=agent.name, requeued_jobs=requeued)


@router.get("/jobs/{job_id}/waiting", response_model=JobWaiting)
def job_waiting(
    job_id: int, actor: RequestActor, session: DbSession, settings: AppSettings
) -> JobWaiting:
    """Why a queued job waits (`reason` is None once it left the queue)."""
    job, reason = service.waiting_reason_of_job(session, settings, actor, job_id)
    return JobWaiting(job_id=job.id, status=job.status, reason=reason)


# --- the agent protocol ------------------------------------------------------------------


@router.post("/agent/register", response_model=AgentRegistered)
async def register(body: AgentInfo, request: Request, settings: AppSettings) -> AgentRegistered:
    return await _as_agent(
        request, lambda session, agent: service.register(session, settings, agent, body)
    )


def _authenticated_agent_id(factory: sessionmaker[Session], token: str) -> int:
    with factory() as session:
        return service.authenticate(session, token).id


def _known_agents(request: Request) -> dict[str, int]:
    """Agent ids by token hash, of the agents that claimed from this process: a claim
    needs its agent's id before it looks at the queue (to listen for its cancels), and
    a long-polling agent claims often. The claim's own transaction still checks that
    the agent holds the token; an entry that fails that check is dropped."""
    state = request.app.state
    if not hasattr(state, "agent_ids_by_token"):
        state.agent_ids_by_token = {}
    known: dict[str, int] = state.agent_ids_by_token
    return known


def _claim_once(
    factory: sessionmaker[Session],
    settings: Settings,
    agent_id: int,
    token_hash: str,
    free_slots: int,
) -> tuple[ClaimResponse, float | None]:
    """The claim, and when it gave nothing, the seconds until a job waiting out a
    back-off comes due (None: none waits)."""
    with repository.open_write_session(factory) as session:
        response = service.claim(session, settings, agent_id, free_slots, token_hash=token_hash)
        due_in = None if response.jobs else service.seconds_until_claimable(session)
        session.commit()
        return response, due_in


@router.post("/agent/claim", response_model=ClaimResponse)
async def claim(body: ClaimRequest, request: Request, settings: AppSettings) -> ClaimResponse:
    """Jobs for the agent's free slots; when there are none, the request waits (up to
    `wait` seconds) for a job to be queued, for a job's back-off to end, or for a
    cancel of one of its jobs."""
    factory = _session_factory(request)
    token = bearer_token(request)
    token_hash = service.hash_agent_token(token)
    known = _known_agents(request)
    agent_id = known.get(token_hash)
    if agent_id is None:
        agent_id = await run_in_threadpool(_authenticated_agent_id, factory, token)
        known[token_hash] = agent_id
    bus: EventBus = request.app.state.event_bus
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait
    gone = asyncio.ensure_future(_until_gone(request))
    # Subscribed before looking, so a job queued between the look and the wait still
    # wakes this request.
    try:
        with bus.subscribe(["queue", f"agent:{agent_id}"]) as subscription:
            while True:
                try:
                    response, due_in = await run_in_threadpool(
                        _claim_once, factory, settings, agent_id, token_hash, body.free_slots
                    )
                except ConveyorError:
                    known.pop(token_hash, None)
                    raise
                remaining = deadline - loop.time()
                if response.jobs or response.cancel or remaining <= 0 or gone.done():
                    return response
                # No event marks the end of a back-off: the wait is cut short to look
                # again when the next such job comes due (a hair after, so it is due by
                # then). Claims with nothing in back-off wait for events alone.
                wake_in = remaining if due_in is None else min(remaining, due_in + 0.01)
                waiting = asyncio.ensure_future(subscription.get(within=wake_in))
                await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    return response  # the agent hung up, or the server is stopping
                if waiting.result() is None and wake_in >= remaining:
                    return response
    finally:
        gone.cancel()


async def _until_gone(request: Request) -> None:
    """Returns when a waiting claim has no one left to answer: the agent closed the
    connection, or the server began to stop (`app.state.stopping`, set by `conveyor
    server` on SIGTERM/SIGINT), so that a stop does not wait out the long polls."""
    stopping: asyncio.Event | None = getattr(request.app.state, "stopping", None)
    # The body was read already: what the connection can still bring is its end.
    waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(request.receive())}
    if stopping is not None:
        waits.add(asyncio.ensure_future(stopping.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


@router.post("/agent/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(body: Heartbeat, request: Request, settings: AppSettings) -> HeartbeatResponse:
    return await _as_agent(
        request, lambda session, agent: service.heartbeat(session, settings, agent, body)
    )


@router.put("/agent/jobs/{job_id}/steps/{index}/log", response_model=LogAppended)
async def append_log(
    job_id: int,
    index: int,
    request: Request,
    settings: AppSettings,
    lease_id: LeaseId = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> LogAppended:
    """Raw log bytes at a byte offset; 409 `log_gap` with the size the server holds
    when the offset is past it. A `LogChunk` body carries the lines' times too."""
    chunk = logs_service.decode_chunk(request.headers.get("content-type"), await request.body())

    def append(session: Session, agent: Agent) -> LogAppended:
        job = service.check_lease(session, agent, job_id, lease_id)
        return service.append_log(session, settings, job, index, offset, chunk)

    return await _as_agent(request, append)


@router.post("/agent/jobs/{job_id}/steps/{index}")
async def report_step(
    job_id: int, index: int, body: StepReport, request: Request, lease_id: LeaseId = None
) -> dict[str, Any]:
    def report(session: Session, agent: Agent) -> dict[str, Any]:
        job = service.check_lease(session, agent, job_id, lease_id)
        service.report_step(session, job, index, body)
        return {}

    return await _as_agent(request, report)


@router.post("/agent/jobs/{job_id}/steps/{index}/end", response_model=LogAppended)
async def end_step(
    job_id: int,
    index: int,
    body: StepEnd,
    request: Request,
    settings: AppSettings,
    lease_id: LeaseId = None,
) -> LogAppended:
    """The last of a step's log and its end report in one transaction (see `StepEnd`):
    409 `log_gap` (nothing applied) when the tail's offset is past what the server holds."""

    def end(session: Session, agent: Agent) -> LogAppended:
        job = service.check_lease(session, agent, job_id, lease_id)
        return service.end_step(session, settings, job, index, body)

    return await _as_agent(request, end)


@router.post("/agent/jobs/{job_id}/finish")
async def finish_job(
    job_id: int,
    body: JobReport,
    request: Request,
    settings: AppSettings,
    lease_id: LeaseId = None,
) -> dict[str, Any]:
    """The job's final status, with the end of its last step when the agent had not
    sent it (see `JobReport.step_end`)."""

    def finish(session: Session, agent: Agent) -> dict[str, Any]:
        job = service.check_lease(session, agent, job_id, lease_id)
        service.finish(session, settings, agent, job, body)
        return {}

    return await _as_agent(request, finish)


@router.post("/agent/jobs/{job_id}/uploads", response_model=UploadState)
async def start_upload(
    job_id: int,
    body: UploadStart,
    request: Request,
    settings: AppSettings,
    lease_id: LeaseId = None,
) -> UploadState:
    def start(session: Session, agent: Agent) -> UploadState:
        job = service.check_lease(session, agent, job_id, lease_id)
        return artifacts_service.start_upload(session, settings, job, agent.id, body)

    return await _as_agent(request, start)


@router.get("/agent/uploads/{upload_id}", response_model=UploadState)
async def upload_state(upload_id: str, request: Request, settings: AppSettings) -> UploadState:
    return await _as_agent(
        request,
        lambda _session, agent: artifacts_service.upload_state(settings, upload_id, agent.id),
    )


@router.put("/agent/uploads/{upload_id}", response_model=UploadState)
async def write_upload_chunk(
    upload_id: str,
    request: Request,
    settings: AppSettings,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> UploadState:
    data = await request.body()
    return await _as_agent(
        request,
        lambda _session, agent: artifacts_service.write_chunk(
            settings, upload_id, agent.id, offset, data
        ),
    )


@router.post("/agent/uploads/{upload_id}/complete", response_model=ArtifactInfo)
async def complete_upload(upload_id: str, request: Request, settings: AppSettings) -> ArtifactInfo:
    def complete(session: Session, agent: Agent) -> ArtifactInfo:
        artifact = artifacts_service.complete_upload(session, settings, upload_id, agent.id)
        return ArtifactInfo(
            id=artifact.id,
            name=artifact.name,
            size=artifact.size_bytes,
            sha256=artifact.sha256,
            hash_algorithm=artifact.hash_algorithm,
            hash=artifact.hash_value,
            archive=artifact.archive_format,
        )

    return await _as_agent(request, complete)
