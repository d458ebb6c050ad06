"""Agents and the queue: accounts and tokens, claims, leases, heartbeats and the
reports agents send about the jobs they run.

Rules that are not obvious:
- A claim gives out at most `free_slots` jobs and never more than the agent's capacity
  minus the jobs it holds a lease on; only jobs whose labels are all among the agent's;
  highest priority first, then oldest; never beyond a project's concurrency limit.
- A claim is atomic on both databases: each job is taken with a compare-and-set
  (`UPDATE ... WHERE status = 'queued'`) on a row locked for the claim (PostgreSQL) or
  inside an exclusive write transaction (SQLite), so no job ever goes to two agents.
- Every report about a job carries its lease (`check_lease`): a report of another
  agent's job is refused (403), one on a stale or expired lease too (409), and neither
  changes anything.
- A lease that runs out (agent lost) puts the job back in the queue while attempts
  remain, else ends it in `error`. A job put back waits out an exponential back-off
  before it may be claimed again (`retry_backoff_seconds` doubled per attempt, at most
  `retry_backoff_max_seconds`), so that a job that kills its agents does not kill the
  next one at once; a claim that waits wakes when the back-off ends.
- The server backs up the agent's own enforcement of a job's timeout: a job still
  running `job_timeout_grace_seconds` after its timeout ends in `error`, its lease
  released; its agent is told to stop at its next heartbeat.
- An agent is online when it was heard from (heartbeat or claim) within the lease
  duration, and not since lost: once the reaper took a job from it because the lease
  ran out, it is offline until it is heard from again, so the status says what the
  reaper did. A disabled agent claims nothing and finishes what it runs; a deleted
  one's running jobs (only with `force`) go back to the queue.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from conveyor.pipeline.plan import JobPlan
from conveyor.protocol.agents import (
    AgentInfo,
    AgentRegistered,
    ClaimResponse,
    CommitFacts,
    Heartbeat,
    HeartbeatResponse,
    JobReport,
    JobSpec,
    LogAppended,
    LogChunk,
    StepEnd,
    StepReport,
)
from conveyor.protocol.status import Status
from conveyor.server.agents import repository
from conveyor.server.agents.schemas import AgentRead, AgentStatus
from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.errors import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
)
from conveyor.server.logs import service as logs_service
from conveyor.server.models.agent import Agent
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.models.step import Step
from conveyor.server.runs import state
from conveyor.server.secrets import service as secrets_service
from conveyor.server.users.authorization import Action, Actor, authorize

AGENT_TOKEN_MARKER = "cva"  # noqa: S105  (the public start of agent tokens, not a secret)


class AgentNotFoundError(NotFoundError):
    code = "agent_not_found"


class AgentNameTakenError(ConflictError):
    code = "agent_name_taken"


class AgentTokenInvalidError(NotAuthenticatedError):
    code = "agent_token_invalid"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class JobOfAnotherAgentError(PermissionDeniedError):
    code = "job_of_another_agent"


class StaleLeaseError(ConflictError):
    code = "stale_lease"


class StepNotFoundError(NotFoundError):
    code = "step_not_found"


class InvalidReportError(InvalidInputError):
    code = "invalid_report"


class AgentBusyError(ConflictError):
    code = "agent_busy"


# --- accounts --------------------------------------------------------------------------


def hash_agent_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_agent_token() -> str:
    return f"{AGENT_TOKEN_MARKER}_{secrets.token_urlsafe(32)}"


def require_agent_admin(actor: Actor, *, writing: bool) -> None:
    """Agents are the server's own machinery: only global admins see or manage them."""
    if actor.is_anonymous:
        raise NotAuthenticatedError("sign in as an administrator to manage agents")
    if not actor.is_admin:
        raise PermissionDeniedError(
            f"{actor.name!r} is not an administrator; only administrators manage agents "
            "(an administrator can run `conveyor user set-admin NAME`)"
        )
    if writing and "write" not in {str(scope) for scope in actor.scopes}:
        raise PermissionDeniedError(
            "this API token may only read; creating agents needs the 'write' scope",
            code="token_scope_insufficient",
        )


def create_agent(session: Session, actor: Actor, name: str) -> tuple[Agent, str]:
    """A new agent and its token (returned once; only its hash is stored)."""
    require_agent_admin(actor, writing=True)
    if repository.agent_by_name(session, name) is not None:
        raise AgentNameTakenError(
            f"an agent named {name!r} already exists; choose another name",
            detail={"name": name},
        )
    token = new_agent_token()
    agent = Agent(name=name, token_hash=hash_agent_token(token), labels=[], capacity=1)
    session.add(agent)
    session.flush()
    return agent, token


def ensure_embedded_agent(session: Session, name: str, capacity: int) -> str:
    """The embedded agent's row (made on first start), with a fresh token for this
    start; returns the token."""
    token = new_agent_token()
    agent = repository.agent_by_name(session, name)
    if agent is None:
        agent = Agent(name=name, labels=[], capacity=capacity)
        session.add(agent)
    agent.token_hash = hash_agent_token(token)
    agent.capacity = capacity
    session.flush()
    return token


def list_agents(session: Session, actor: Actor) -> list[Agent]:
    require_agent_admin(actor, writing=False)
    return list(repository.list_agents(session))


def get_agent(session: Session, actor: Actor, agent_id: int) -> Agent:
    require_agent_admin(actor, writing=False)
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise AgentNotFoundError(
            f"there is no agent with id {agent_id}; GET /api/v1/agents lists them",
            detail={"agent_id": agent_id},
        )
    return agent


def agent_status(settings: Settings, agent: Agent, now: datetime) -> AgentStatus:
    """Disabled; else online when heard from within the lease duration and not found
    lost since (`Agent.lost_at`, cleared when it is heard from again); else offline."""
    if not agent.enabled:
        return AgentStatus.DISABLED
    if agent.lost_at is not None:
        return AgentStatus.OFFLINE
    heard = agent.last_heartbeat_at
    if heard is not None and now - heard <= timedelta(seconds=settings.lease_seconds):
        return AgentStatus.ONLINE
    return AgentStatus.OFFLINE


def _heard_from(agent: Agent, now: datetime) -> None:
    agent.last_heartbeat_at = now
    agent.lost_at = None


def describe_agents(
    session: Session, settings: Settings, agents: Sequence[Agent], *, now: datetime | None = None
) -> list[AgentRead]:
    """The agents as the API shows them, with their status and running jobs."""
    now = now or utcnow()
    running = repository.running_job_counts(session)
    return [
        AgentRead.model_validate(agent).model_copy(
            update={
                "status": agent_status(settings, agent, now),
                "running_jobs": running.get(agent.id, 0),
            }
        )
        for agent in agents
    ]


def set_enabled(session: Session, actor: Actor, agent_id: int, *, enabled: bool) -> Agent:
    """Enable or disable an agent. A disabled agent claims nothing more; the jobs it
    runs go on to their end and its reports are taken as before."""
    require_agent_admin(actor, writing=True)
    agent = get_agent(session, actor, agent_id)
    agent.enabled = enabled
    session.flush()
    return agent


def delete_agent(
    session: Session, actor: Actor, agent_id: int, *, force: bool = False
) -> tuple[Agent, list[int]]:
    """Delete an agent (its token stops working). While it holds jobs this is refused
    (409), unless `force`: its running jobs then go back to the queue and jobs that
    ended on the server (cancelled) lose their lease. Returns the agent and the ids
    of the requeued jobs."""
    require_agent_admin(actor, writing=True)
    agent = get_agent(session, actor, agent_id)
    held = repository.leased_jobs_of_agent(session, agent.id)
    if held and not force:
        raise AgentBusyError(
            f"agent {agent.name!r} still runs {len(held)} job(s) "
            f"({', '.join(str(job.id) for job in held)}); disable it and delete it once "
            "they end, or delete with ?force=true to put them back in the queue",
            detail={"agent_id": agent.id, "job_ids": [job.id for job in held]},
        )
    requeued: list[int] = []
    for job in held:
        if job.status is Status.RUNNING:
            state.requeue_job(session, job, reason=f"agent {agent.name} deleted")
            requeued.append(job.id)
        else:
            state.release_job(session, job)
    session.delete(agent)
    session.flush()
    return agent, requeued


def _invalid_token() -> AgentTokenInvalidError:
    return AgentTokenInvalidError(
        "the agent token is not valid; an administrator creates agents and their tokens "
        "with POST /api/v1/agents"
    )


def authenticate(session: Session, token: str) -> Agent:
    agent = repository.agent_by_token_hash(session, hash_agent_token(token))
    if agent is None:
        raise _invalid_token()
    return agent


def register(
    session: Session, settings: Settings, agent: Agent, info: AgentInfo
) -> AgentRegistered:
    agent.labels = sorted(set(info.labels))
    agent.capacity = info.capacity
    agent.version = info.version[:64]
    # The table has no column of its own for the backend; it is part of the platform.
    platform = f"{info.platform} / {info.backend}" if info.backend else info.platform
    agent.platform = platform[:100]
    _heard_from(agent, utcnow())
    session.flush()
    return AgentRegistered(
        agent_id=agent.id,
        heartbeat_interval=settings.heartbeat_seconds,
        lease_duration=settings.lease_seconds,
    )


# --- the queue ---------------------------------------------------------------------------


def claim(
    session: Session,
    settings: Settings,
    agent_id: int,
    free_slots: int,
    *,
    token_hash: str | None = None,
    now: datetime | None = None,
) -> ClaimResponse:
    """Give the agent what it may run now (see the module's rules) and the jobs it must
    stop. With `token_hash`, the agent must still hold that token (as `authenticate`
    checks). The caller runs this in a write transaction
    (`dialect.write_transaction_options`) and commits."""
    now = now or utcnow()
    agent = session.get(Agent, agent_id)
    if token_hash is not None and (agent is None or agent.token_hash != token_hash):
        raise _invalid_token()
    if agent is None:
        raise AgentNotFoundError(f"agent {agent_id} no longer exists; register it again")
    cancel = repository.cancelled_job_ids(session, agent.id)
    held = repository.leased_job_count(session, agent.id)
    wanted = min(free_slots, agent.capacity - held) if agent.enabled else 0
    taken: list[Job] = []
    if wanted > 0:
        taken = _take_jobs(session, settings, agent, wanted, now)
    agent.running = held + len(taken)
    # A claim is a sign of life as good as a heartbeat (see `agent_status`); written at
    # most every half heartbeat, so that a busy claim loop does not write on every turn,
    # and at once by an agent that was found lost.
    heard = agent.last_heartbeat_at
    stale = heard is None or now - heard >= timedelta(seconds=settings.heartbeat_seconds / 2)
    if stale or agent.lost_at is not None:
        _heard_from(agent, now)
    session.flush()
    return ClaimResponse(jobs=job_specs(session, settings, taken), cancel=cancel)


def _take_jobs(
    session: Session, settings: Settings, agent: Agent, wanted: int, now: datetime
) -> list[Job]:
    labels = sorted(set(agent.labels or []))
    running_by_project: dict[int, int] = {}
    full_projects: set[int] = set()
    taken: list[Job] = []
    page_size = max(repository.CLAIM_PAGE_SIZE, 2 * wanted)
    last: repository.QueuedCandidate | None = None
    while len(taken) < wanted:
        page = repository.queued_candidates(
            session,
            labels=labels,
            now=now,
            limit=page_size,
            after=last,
            skip_projects=full_projects,
        )
        for candidate in page:
            job = _take_candidate(session, settings, agent, candidate, running_by_project, now)
            if job is not None:
                taken.append(job)
                if len(taken) == wanted:
                    break
            limit = candidate.concurrency_limit
            if limit is not None and running_by_project.get(candidate.project_id, 0) >= limit:
                # The next pages leave the project's jobs out in SQL: a long queue of one
                # limited project costs a claim one page, not the whole project.
                full_projects.add(candidate.project_id)
        if len(page) < page_size:
            break  # the end of the claimable queue
        last = page[-1]
    return taken


def _take_candidate(
    session: Session,
    settings: Settings,
    agent: Agent,
    candidate: repository.QueuedCandidate,
    running_by_project: dict[int, int],
    now: datetime,
) -> Job | None:
    """Start `candidate` on `agent` if its project has room and no other claimer holds
    or took it; the job when it is now this agent's."""
    # Labels were matched in SQL; checked again because a job given to the wrong
    # machine is far worse than the cost of a set comparison.
    if not set(candidate.labels) <= set(agent.labels or []):
        return None
    limit = candidate.concurrency_limit
    if limit is not None:
        if candidate.project_id not in running_by_project:
            repository.lock_project(session, candidate.project_id)
            running_by_project[candidate.project_id] = repository.running_job_count(
                session, candidate.project_id
            )
        if running_by_project[candidate.project_id] >= limit:
            return None
    job = repository.lock_queued_job(session, candidate.job_id)
    if job is None:
        return None  # another claimer holds or took it
    lease_id = secrets.token_hex(16)
    if not repository.reserve_queued_job(session, job.id, lease_id):
        return None
    state.start_job(
        session,
        job,
        agent_id=agent.id,
        lease_id=lease_id,
        lease_expires_at=now + timedelta(seconds=settings.lease_seconds),
        now=now,
    )
    if limit is not None:
        running_by_project[candidate.project_id] += 1
    return job


def seconds_until_claimable(session: Session, *, now: datetime | None = None) -> float | None:
    """Seconds until the next job that waits out a back-off may be claimed (None when
    no job waits so): how long a long-polling claim may sleep before it looks again."""
    now = now or utcnow()
    due = repository.next_claimable_at(session, now)
    return None if due is None else max(0.0, (due - now).total_seconds())


def job_specs(session: Session, settings: Settings, jobs: Sequence[Job]) -> list[JobSpec]:
    """What the agent needs to run each of `jobs` (claimed, so under a lease): their
    runs and projects read in one query, each project's secrets decrypted once."""
    if not jobs:
        return []
    runs = repository.runs_with_projects(session, sorted({job.run_id for job in jobs}))
    secrets_by_project: dict[int, dict[str, str]] = {}
    specs: list[JobSpec] = []
    for job in jobs:
        run, project = runs[job.run_id]  # jobs are deleted with their run
        # Fork pull requests run code nobody of the project reviewed: no secrets.
        secrets: dict[str, str] = {}
        if not run.secrets_withheld:
            if project.id not in secrets_by_project:
                secrets_by_project[project.id] = project_secrets(session, settings, project)
            secrets = secrets_by_project[project.id]
        specs.append(_job_spec(settings, job, run, project, secrets))
    return specs


def _job_spec(
    settings: Settings, job: Job, run: Run, project: Project, secrets: dict[str, str]
) -> JobSpec:
    assert job.lease_id is not None and job.lease_expires_at is not None
    return JobSpec(
        job_id=job.id,
        run_id=run.id,
        run_number=run.number,
        project=project.name,
        attempt=job.attempts,
        lease_id=job.lease_id,
        lease_expires_in=settings.lease_seconds,
        repo_url=project.git_url,
        commit=CommitFacts(
            sha=run.commit_sha,
            branch=run.branch,
            tag=run.tag,
            message=run.commit_message,
            author=run.commit_author,
        ),
        event=run.event,
        variables={str(k): str(v) for k, v in (run.variables or {}).items()},
        secrets=dict(secrets),
        plan=JobPlan.model_validate(job.plan),
    )


def project_secrets(session: Session, settings: Settings, project: Project) -> dict[str, str]:
    """The project's decrypted secrets, for its jobs and for masking their logs."""
    return secrets_service.secret_values(session, settings, project)


def job_project(session: Session, job: Job) -> Project:
    run = session.get(Run, job.run_id)
    assert run is not None  # jobs are deleted with their run
    project = session.get(Project, run.project_id)
    assert project is not None  # runs are deleted with their project
    return project


# --- why jobs wait ----------------------------------------------------------------------


def explain_waiting(
    session: Session, settings: Settings, jobs: Sequence[Job], *, now: datetime | None = None
) -> dict[int, str]:
    """For each queued job among `jobs` (others are left out), why it waits, in words.
    The first reason that holds, in the order the claim checks them:

    - "retrying after agent X was lost; due in 8 s": it went back to the queue and
      waits out its back-off;
    - "no online agent has labels X, Y" (or "no agent is online" for a job without
      labels): no enabled agent heard from within the lease carries all its labels;
    - "project concurrency limit reached (N of N running)";
    - "all matching agents are full (N running of N)": every online agent with its
      labels has no free slot;
    - "waiting for an agent to claim it": a matching agent has a free slot, so the
      job goes on its next claim (or after jobs of higher priority).
    """
    queued = [job for job in jobs if job.status is Status.QUEUED]
    if not queued:
        return {}
    now = now or utcnow()
    online = [
        agent
        for agent in repository.list_agents(session)
        if agent_status(settings, agent, now) is AgentStatus.ONLINE
    ]
    held = repository.leased_job_counts(session)
    projects = repository.project_limits_of_jobs(session, [job.id for job in queued])
    running_in_project = repository.running_job_counts_of_projects(
        session, sorted({project_id for project_id, _ in projects.values()})
    )
    reasons: dict[int, str] = {}
    for job in queued:
        if job.claimable_at is not None and job.claimable_at > now:
            due_in = describe_wait((job.claimable_at - now).total_seconds())
            after = job.error_message or "its agent was lost"
            reasons[job.id] = f"retrying after {after}; due in {due_in}"
            continue
        wanted = set(job.labels or [])
        matching = [agent for agent in online if wanted <= set(agent.labels or [])]
        project_id, limit = projects.get(job.id, (0, None))
        running = running_in_project.get(project_id, 0)
        if not matching:
            reasons[job.id] = (
                f"no online agent has labels {', '.join(sorted(wanted))}"
                if wanted
                else "no agent is online"
            )
        elif limit is not None and running >= limit:
            reasons[job.id] = f"project concurrency limit reached ({running} of {limit} running)"
        elif all(held.get(agent.id, 0) >= agent.capacity for agent in matching):
            busy = sum(held.get(agent.id, 0) for agent in matching)
            slots = sum(agent.capacity for agent in matching)
            reasons[job.id] = f"all matching agents are full ({busy} running of {slots})"
        else:
            reasons[job.id] = "waiting for an agent to claim it"
    return reasons


def describe_wait(seconds: float) -> str:
    """A wait in words, rounded up to the second: "8 s", "2 min 5 s", "5 min"."""
    whole = max(1, math.ceil(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def explain_waiting_runs(
    session: Session, settings: Settings, run_ids: Sequence[int]
) -> dict[int, str]:
    """Per run id, why the first queued job of the run waits (runs without a queued
    job are left out)."""
    firsts = repository.first_queued_jobs_of_runs(session, run_ids)
    reasons = explain_waiting(session, settings, firsts)
    return {job.run_id: reasons[job.id] for job in firsts if job.id in reasons}


def waiting_reason_of_job(
    session: Session, settings: Settings, actor: Actor, job_id: int
) -> tuple[Job, str | None]:
    """The job and why it waits (None when it is not queued), for an actor who may
    read its project."""
    job = session.get(Job, job_id)
    project = job_project(session, job) if job is not None else None
    if job is None or project is None:
        raise JobNotFoundError(
            f"there is no job {job_id}; GET /api/v1/runs/{{run_id}} lists the jobs of a run",
            detail={"job_id": job_id},
        )
    authorize(actor, project, Action.READ)
    return job, explain_waiting(session, settings, [job]).get(job.id)


# --- leases ------------------------------------------------------------------------------


def check_lease(session: Session, agent: Agent, job_id: int, lease_id: str | None) -> Job:
    """The job, if `agent` holds its current lease; raises (changing nothing) when it is
    unknown (404), another agent's (403), or the lease is stale or expired (409)."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFoundError(
            f"there is no job {job_id}; it may have been deleted with its run",
            detail={"job_id": job_id},
        )
    if job.agent_id != agent.id:
        raise JobOfAnotherAgentError(
            f"job {job_id} is not running on agent {agent.name!r}; an agent may only report "
            "on the jobs it claimed",
            detail={"job_id": job_id},
        )
    if lease_id is None or job.lease_id is None or lease_id != job.lease_id:
        raise StaleLeaseError(
            f"the lease sent for job {job_id} is not its current lease (the job was "
            "requeued or already finished); stop the job and claim new work",
            detail={"job_id": job_id},
        )
    if job.lease_expires_at is not None and job.lease_expires_at < utcnow():
        raise StaleLeaseError(
            f"the lease of job {job_id} expired at {job.lease_expires_at.isoformat()}; "
            "heartbeats must arrive more often than the lease duration",
            detail={"job_id": job_id},
        )
    return job


def heartbeat(
    session: Session, settings: Settings, agent: Agent, beat: Heartbeat
) -> HeartbeatResponse:
    """Extend the leases the agent still holds; name the jobs it must stop: cancelled
    ones (their lease lives on until the agent confirms) and ones no longer its own."""
    now = utcnow()
    expires_at = now + timedelta(seconds=settings.lease_seconds)
    cancel: list[int] = []
    for running in beat.running:
        job = session.get(Job, running.job_id)
        if job is None or job.agent_id != agent.id or job.lease_id != running.lease_id:
            cancel.append(running.job_id)
            continue
        job.lease_expires_at = expires_at
        if job.status is not Status.RUNNING:
            cancel.append(job.id)
    # Jobs before the agent row, in that order everywhere (claims and reports too):
    # one flush would write the agent first and deadlock with a concurrent report.
    session.flush()
    _heard_from(agent, now)
    session.flush()
    return HeartbeatResponse(cancel=cancel, lease_expires_in=settings.lease_seconds)


def retry_backoff(settings: Settings, attempts: int) -> timedelta:
    """How long a job whose agent was lost on attempt `attempts` (1 for the first) waits
    before it may be claimed again: the base, doubled per further attempt, capped."""
    exponent = max(0, attempts - 1)
    # Capped before the power grows: a job with many attempts must not overflow.
    seconds = settings.retry_backoff_seconds * 2 ** min(exponent, 32)
    return timedelta(seconds=min(seconds, settings.retry_backoff_max_seconds))


def release_expired_leases(
    session: Session, settings: Settings, *, now: datetime | None = None
) -> list[int]:
    """Jobs whose lease ran out: back to the queue while attempts remain, claimable
    after their back-off (`retry_backoff`), else `error` ("agent <name> was lost");
    cancelled jobs whose agent never confirmed just lose the lease. The agent each was
    taken from shows offline until it is heard from again. Returns the ids handled.
    The caller commits."""
    now = now or utcnow()
    handled: list[int] = []
    for job_id in repository.expired_lease_job_ids(session, now):
        job = repository.lock_job(session, job_id)
        if job is None or job.lease_id is None or job.lease_expires_at is None:
            continue
        if job.lease_expires_at >= now:
            continue  # a heartbeat extended it meanwhile
        agent = session.get(Agent, job.agent_id) if job.agent_id is not None else None
        reason = f"agent {agent.name if agent else '(deleted)'} was lost"
        if job.status is Status.RUNNING and job.attempts < job.max_attempts:
            state.requeue_job(
                session,
                job,
                reason=reason,
                now=now,
                claimable_at=now + retry_backoff(settings, job.attempts),
            )
        elif job.status is Status.RUNNING:
            state.finish_job(session, job, Status.ERROR, message=reason, now=now)
        else:
            state.release_job(session, job)
        if agent is not None:
            agent.running = max(0, agent.running - 1)
            agent.lost_at = now
        handled.append(job_id)
    session.flush()
    return handled


def describe_duration(seconds: float) -> str:
    """A duration the way pipeline files write it: "0.5s", "90s", "10m", "1h30m", "2h"."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = round(seconds)
    if whole % 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60 or minutes % 60:
        return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60}m"
    return f"{minutes // 60}h"


def end_overdue_jobs(
    session: Session, settings: Settings, *, now: datetime | None = None
) -> list[int]:
    """The server's backstop for job timeouts (the agent enforces them): running jobs
    whose timeout plus `job_timeout_grace_seconds` has passed since they started end in
    `error` ("timed out on the server after 10m (the agent did not report)"), their
    lease released, so that a stuck agent cannot hold a job (and its run) forever. The
    agent learns at its next heartbeat that the job is no longer its own and stops it;
    reports on the old lease are refused. `error`, not the `failure` an agent reports
    for a timeout: the server cannot tell slow code from an agent that stopped working.
    Returns the ids ended. The caller commits."""
    now = now or utcnow()
    grace = timedelta(seconds=settings.job_timeout_grace_seconds)
    ended: list[int] = []
    for job_id, started_at, timeout in repository.running_jobs_with_timeout(session):
        if started_at + timedelta(seconds=timeout) + grace >= now:
            continue
        job = repository.lock_job(session, job_id)
        if job is None or job.status is not Status.RUNNING or job.started_at != started_at:
            continue  # it ended, or was requeued and started again, meanwhile
        agent = session.get(Agent, job.agent_id) if job.agent_id is not None else None
        message = (
            f"timed out on the server after {describe_duration(timeout)} (the agent did not report)"
        )
        state.finish_job(session, job, Status.ERROR, message=message, now=now)
        if agent is not None:
            agent.running = max(0, agent.running - 1)
        ended.append(job_id)
    session.flush()
    return ended


# --- reports -----------------------------------------------------------------------------


def step_for(session: Session, job: Job, index: int) -> Step:
    step = repository.step_of(session, job.id, index)
    if step is None:
        raise StepNotFoundError(
            f"job {job.id} has no step {index}; steps are numbered from 0 in plan order",
            detail={"job_id": job.id, "index": index},
        )
    return step


def append_log(
    session: Session, settings: Settings, job: Job, index: int, offset: int, chunk: LogChunk
) -> LogAppended:
    """Append a batch of step `index`'s log at byte `offset` (masked again with the
    project's secrets); `logs.service.append` says what a duplicate or a gap gets."""
    return _append_log(session, settings, job, step_for(session, job, index), offset, chunk)


def _append_log(
    session: Session, settings: Settings, job: Job, step: Step, offset: int, chunk: LogChunk
) -> LogAppended:
    secrets = project_secrets(session, settings, job_project(session, job))
    return logs_service.append(
        session, settings, step, offset, chunk.data, secrets, logs_service.times_of(chunk)
    )


def end_step(
    session: Session, settings: Settings, job: Job, index: int, end: StepEnd
) -> LogAppended:
    """A step's log tail and its end report (see `StepEnd`): on a gap the append
    raises before the report, and the caller's rollback leaves nothing applied."""
    step = step_for(session, job, index)
    body = logs_service.decode_step_end_log(end)
    if body:
        chunk = logs_service.decode_chunk(end.log_media_type, body)
        appended = _append_log(session, settings, job, step, end.log_offset, chunk)
    else:
        appended = LogAppended(size=step.log_byte_size, lines=step.log_line_count)
    _report_step(session, job, step, end.report)
    return appended


def report_step(session: Session, job: Job, index: int, report: StepReport) -> None:
    """A step started (`running`) or ended. Repeated reports (a retried request) and
    reports about a job that already ended on the server change nothing."""
    _report_step(session, job, step_for(session, job, index), report)


def _report_step(session: Session, job: Job, step: Step, report: StepReport) -> None:
    index = step.index
    if job.status is not Status.RUNNING or step.status is report.status:
        return
    if report.status is Status.RUNNING:
        state.start_step(session, step, now=report.started_at)
        return
    if report.status is Status.QUEUED:
        raise InvalidReportError(
            f"step {index} of job {job.id} cannot be reported queued; report running "
            "or a final status",
            detail={"status": str(report.status)},
        )
    state.finish_step(
        session,
        step,
        report.status,
        exit_code=report.exit_code,
        started_at=report.started_at,
        finished_at=report.finished_at,
    )


def finish(session: Session, settings: Settings, agent: Agent, job: Job, report: JobReport) -> None:
    """The agent finished the job: its status is recorded, or, if the server already
    ended it (cancelled), the lease is released and the status stays. The end of its
    last step, when the report carries it, is applied first (see `end_step`)."""
    if not report.status.finished:
        raise InvalidReportError(
            f"job {job.id} cannot finish as {report.status}; send its final status",
            detail={"status": str(report.status)},
        )
    if report.step_end is not None:
        end_step(session, settings, job, report.step_end.index, report.step_end)
    if job.status is Status.RUNNING:
        state.finish_job(session, job, report.status, message=report.message)
    else:
        state.release_job(session, job)
    agent.running = max(0, agent.running - 1)
    session.flush()
