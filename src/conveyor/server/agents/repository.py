"""Every query of the agents package: agents, the queue, leases."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from conveyor.protocol.status import Status
from conveyor.server.db import dialect
from conveyor.server.models.agent import Agent
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.models.step import Step

# A claim reads the queue in pages of at least this many jobs (twice what it wants, if
# more), from the front, and stops once it has what it wants: its cost follows what it
# takes and what it has to pass over, not the length of the queue.
CLAIM_PAGE_SIZE = 16


def open_write_session(factory: sessionmaker[Session]) -> Session:
    """A session whose transaction writes from its start (`BEGIN IMMEDIATE` on SQLite):
    agent calls read and then write, and must wait for a concurrent claim rather than
    fail on it."""
    session = factory()
    bind = session.get_bind()
    session.connection(execution_options=dialect.write_transaction_options(bind.engine))
    return session


@dataclass(frozen=True)
class QueuedCandidate:
    job_id: int
    labels: list[str]
    project_id: int
    concurrency_limit: int | None
    priority: int
    queued_at: datetime


def agent_by_token_hash(session: Session, token_hash: str) -> Agent | None:
    return session.scalars(select(Agent).where(Agent.token_hash == token_hash)).first()


def agent_by_name(session: Session, name: str) -> Agent | None:
    return session.scalars(select(Agent).where(Agent.name == name)).first()


def list_agents(session: Session) -> Sequence[Agent]:
    return session.scalars(select(Agent).order_by(Agent.name)).all()


def queued_candidates(
    session: Session,
    *,
    labels: Collection[str],
    now: datetime,
    limit: int,
    after: QueuedCandidate | None = None,
    skip_projects: Collection[int] = (),
) -> list[QueuedCandidate]:
    """One page of the claimable queue, in the order jobs are given out (highest priority,
    then oldest, then lowest id; the order of `ix_jobs_queue`, so the database reads the
    page off the index): queued jobs that are due (`claimable_at`), whose labels are all
    among `labels`, past `after` (the last candidate of the previous page), and not of
    `skip_projects` (projects found at their concurrency limit)."""
    statement = (
        select(
            Job.id,
            Job.labels,
            Run.project_id,
            Project.concurrency_limit,
            Job.priority,
            Job.queued_at,
        )
        .join(Run, Run.id == Job.run_id)
        .join(Project, Project.id == Run.project_id)
        .where(
            Job.status == Status.QUEUED,
            or_(Job.claimable_at.is_(None), Job.claimable_at <= now),
            dialect.json_array_within(Job.labels, list(labels)),
        )
        .order_by(Job.priority.desc(), Job.queued_at, Job.id)
        .limit(limit)
    )
    if after is not None:
        # Keyset pagination in the index's order; the first bound lets the database
        # start its index scan at the cursor's priority, not at the front of the queue.
        statement = statement.where(
            Job.priority <= after.priority,
            or_(
                Job.priority < after.priority,
                Job.queued_at > after.queued_at,
                and_(Job.queued_at == after.queued_at, Job.id > after.job_id),
            ),
        )
    if skip_projects:
        statement = statement.where(Run.project_id.not_in(sorted(skip_projects)))
    return [
        QueuedCandidate(row[0], list(row[1] or []), row[2], row[3], row[4], row[5])
        for row in session.execute(statement)
    ]


def next_claimable_at(session: Session, now: datetime) -> datetime | None:
    """When the next queued job that waits out a back-off comes due (None: none waits)."""
    statement = select(func.min(Job.claimable_at)).where(
        Job.status == Status.QUEUED, Job.claimable_at > now
    )
    return session.scalar(statement)


def running_jobs_with_timeout(session: Session) -> list[tuple[int, datetime, float]]:
    """(id, started_at, timeout_seconds) of the running jobs that have a timeout; the
    caller decides which ran too long (few rows: at most the agents' total capacity)."""
    statement = select(Job.id, Job.started_at, Job.timeout_seconds).where(
        Job.status == Status.RUNNING,
        Job.timeout_seconds.is_not(None),
        Job.started_at.is_not(None),
    )
    return [
        (int(job_id), started_at, float(timeout))
        for job_id, started_at, timeout in session.execute(statement.order_by(Job.id))
        if started_at is not None and timeout is not None
    ]


def runs_with_projects(session: Session, run_ids: Sequence[int]) -> dict[int, tuple[Run, Project]]:
    """Per run id: the run and its project, in one query."""
    if not run_ids:
        return {}
    statement = (
        select(Run, Project).join(Project, Project.id == Run.project_id).where(Run.id.in_(run_ids))
    )
    return {run.id: (run, project) for run, project in session.execute(statement)}


def lock_queued_job(session: Session, job_id: int) -> Job | None:
    """The job, locked for this transaction, if it is still queued and no other claimer
    holds it (PostgreSQL); None otherwise."""
    statement = select(Job).where(Job.id == job_id, Job.status == Status.QUEUED)
    statement = dialect.lock_for_claim(statement, skip_locked=True)
    return session.scalars(statement.execution_options(populate_existing=True)).first()


def lock_project(session: Session, project_id: int) -> None:
    """Serialise the claims of one project's jobs, so that two claimers cannot both
    see room under its concurrency limit."""
    statement = dialect.lock_for_claim(
        select(Project.id).where(Project.id == project_id), skip_locked=False
    )
    session.execute(statement)


def running_job_count(session: Session, project_id: int) -> int:
    statement = (
        select(func.count())
        .select_from(Job)
        .join(Run, Run.id == Job.run_id)
        .where(Run.project_id == project_id, Job.status == Status.RUNNING)
    )
    return int(session.scalar(statement) or 0)


def reserve_queued_job(session: Session, job_id: int, lease_id: str) -> bool:
    """Compare-and-set: mark the job as taken under `lease_id` if it is still queued.
    True when this transaction won it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == Status.QUEUED)
        .values(lease_id=lease_id)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def leased_job_count(session: Session, agent_id: int) -> int:
    """Jobs that hold one of the agent's slots: every job it has a lease on."""
    statement = (
        select(func.count())
        .select_from(Job)
        .where(Job.agent_id == agent_id, Job.lease_id.is_not(None))
    )
    return int(session.scalar(statement) or 0)


def cancelled_job_ids(session: Session, agent_id: int) -> list[int]:
    """Jobs the agent still holds a lease on that ended on the server (cancelled)."""
    statement = select(Job.id).where(
        Job.agent_id == agent_id,
        Job.lease_id.is_not(None),
        Job.status != Status.RUNNING,
        Job.status != Status.QUEUED,
    )
    return list(session.scalars(statement.order_by(Job.id)))


def expired_lease_job_ids(session: Session, now: datetime) -> list[int]:
    statement = select(Job.id).where(Job.lease_id.is_not(None), Job.lease_expires_at < now)
    return list(session.scalars(statement.order_by(Job.id)))


def lock_job(session: Session, job_id: int) -> Job | None:
    statement = dialect.lock_for_claim(select(Job).where(Job.id == job_id), skip_locked=True)
    return session.scalars(statement.execution_options(populate_existing=True)).first()


def step_of(session: Session, job_id: int, index: int) -> Step | None:
    return session.scalars(select(Step).where(Step.job_id == job_id, Step.index == index)).first()


def leased_job_counts(session: Session) -> dict[int, int]:
    """Per agent id, the jobs holding one of its slots (as `leased_job_count`)."""
    statement = (
        select(Job.agent_id, func.count())
        .where(Job.agent_id.is_not(None), Job.lease_id.is_not(None))
        .group_by(Job.agent_id)
    )
    return {int(agent_id or 0): int(count) for agent_id, count in session.execute(statement)}


def running_job_counts(session: Session) -> dict[int, int]:
    """Per agent id, its jobs whose status is `running`."""
    statement = (
        select(Job.agent_id, func.count())
        .where(Job.agent_id.is_not(None), Job.status == Status.RUNNING)
        .group_by(Job.agent_id)
    )
    return {int(agent_id or 0): int(count) for agent_id, count in session.execute(statement)}


def leased_jobs_of_agent(session: Session, agent_id: int) -> list[Job]:
    """The jobs the agent holds a lease on, locked for this transaction."""
    statement = dialect.lock_for_claim(
        select(Job).where(Job.agent_id == agent_id, Job.lease_id.is_not(None)),
        skip_locked=False,
    )
    return list(session.scalars(statement.order_by(Job.id)))


def project_limits_of_jobs(
    session: Session, job_ids: Sequence[int]
) -> dict[int, tuple[int, int | None]]:
    """Per job id: its project's id and concurrency limit."""
    if not job_ids:
        return {}
    statement = (
        select(Job.id, Run.project_id, Project.concurrency_limit)
        .join(Run, Run.id == Job.run_id)
        .join(Project, Project.id == Run.project_id)
        .where(Job.id.in_(job_ids))
    )
    return {row[0]: (row[1], row[2]) for row in session.execute(statement)}


def running_job_counts_of_projects(session: Session, project_ids: Sequence[int]) -> dict[int, int]:
    if not project_ids:
        return {}
    statement = (
        select(Run.project_id, func.count())
        .select_from(Job)
        .join(Run, Run.id == Job.run_id)
        .where(Run.project_id.in_(project_ids), Job.status == Status.RUNNING)
        .group_by(Run.project_id)
    )
    return {int(project_id): int(count) for project_id, count in session.execute(statement)}


def first_queued_jobs_of_runs(session: Session, run_ids: Sequence[int]) -> list[Job]:
    """For each of the runs, its queued job with the lowest id (if any)."""
    if not run_ids:
        return []
    statement = (
        select(Job).where(Job.run_id.in_(run_ids), Job.status == Status.QUEUED).order_by(Job.id)
    )
    first: dict[int, Job] = {}
    for job in session.scalars(statement):
        first.setdefault(job.run_id, job)
    return list(first.values())
