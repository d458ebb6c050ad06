"""The one writer of run, job and step status.

Every status change goes through a function here: it checks that the transition is
allowed, writes it with its timestamps, keeps the run's status in step with its jobs,
and queues the events that tell the rest of the server (published after commit, see
`conveyor.server.events`). Nobody else assigns `.status`.

    queued  -> running | cancelled | skipped | error
    running -> success | failure | warning | cancelled | error
    running -> queued       (requeue: the agent was lost and attempts remain;
                             claimable again once a back-off ends)
    finished -> (nothing)   (a retry makes a new run)

A running job that a user cancels becomes `cancelled` at once and keeps its lease
until its agent confirms it stopped (`release_job`), so the agent's last log lines and
reports still land; the agent learns of the cancel on its next claim or heartbeat.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.audit import service as audit
from conveyor.server.db.base import utcnow
from conveyor.server.errors import ConflictError
from conveyor.server.events import Event, publish_after_commit
from conveyor.server.models.agent import Agent
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.models.step import Step

FINISHED = frozenset(s for s in Status if s.finished)
REQUEUE_ACTION = "job.requeue"
SYSTEM_ACTOR = "system"
ALLOWED: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.SKIPPED, Status.ERROR}),
    Status.RUNNING: frozenset(
        {
            Status.SUCCESS,
            Status.FAILURE,
            Status.WARNING,
            Status.CANCELLED,
            Status.ERROR,
            Status.QUEUED,
        }
    ),
}
# A run that has finished jobs of several outcomes takes the most serious one.
SEVERITY = [
    Status.SKIPPED,
    Status.SUCCESS,
    Status.WARNING,
    Status.CANCELLED,
    Status.FAILURE,
    Status.ERROR,
]


class InvalidTransitionError(ConflictError):
    def __init__(self, what: str, current: Status, wanted: Status) -> None:
        super().__init__(
            f"{what} is {current}; it cannot become {wanted}",
            code="invalid_transition",
            detail={"current": str(current), "wanted": str(wanted)},
        )


def _check(what: str, current: Status, wanted: Status) -> None:
    if wanted not in ALLOWED.get(current, frozenset()):
        raise InvalidTransitionError(what, current, wanted)


def _run_events(run: Run) -> list[Event]:
    data = {"run_id": run.id, "project_id": run.project_id, "status": str(run.status)}
    return [Event(f"run:{run.id}", "run.status", data), Event("runs", "run.status", data)]


# --- jobs --------------------------------------------------------------------------------


def announce_queued(session: Session, job: Job) -> None:
    """A job was created (or put back) queued: wake the agents waiting to claim."""
    publish_after_commit(session, Event("queue", "job.queued", {"job_id": job.id}))


def start_job(
    session: Session,
    job: Job,
    *,
    agent_id: int,
    lease_id: str,
    lease_expires_at: datetime,
    now: datetime | None = None,
) -> None:
    """An agent claimed the job: it runs under a new lease, one more attempt."""
    _check(f"job {job.id}", job.status, Status.RUNNING)
    now = now or utcnow()
    job.status = Status.RUNNING
    job.agent_id = agent_id
    job.lease_id = lease_id
    job.lease_expires_at = lease_expires_at
    job.attempts += 1
    job.started_at = now
    job.finished_at = None
    job.error_message = None
    job.claimable_at = None
    session.flush()
    _run_has_a_running_job(session, job.run_id, now)


def finish_job(
    session: Session,
    job: Job,
    status: Status,
    *,
    message: str | None = None,
    now: datetime | None = None,
) -> None:
    """The job ended (reported by its agent, or decided by the server). Steps that
    never ran are marked skipped, a step still running takes the job's status, and
    the lease is released."""
    if status not in FINISHED:
        raise ValueError(f"finish_job needs a final status, not {status}")
    _check(f"job {job.id}", job.status, status)
    now = now or utcnow()
    was_running = job.status is Status.RUNNING
    job.status = status
    job.finished_at = now
    job.error_message = message
    job.lease_id = None
    job.lease_expires_at = None
    job.claimable_at = None
    _close_steps(session, job, status, now)
    session.flush()
    if was_running:
        _announce_freed_slot(session, job)
    _refresh_run(session, job.run_id, now)


def cancel_job(session: Session, job: Job, *, now: datetime | None = None) -> None:
    """Cancel a queued job (it leaves the queue) or a running one (its agent is told
    to stop; the lease stays until the agent confirms with `release_job`)."""
    _check(f"job {job.id}", job.status, Status.CANCELLED)
    now = now or utcnow()
    running = job.status is Status.RUNNING
    job.status = Status.CANCELLED
    job.finished_at = now
    if not running:
        job.lease_id = None
        job.lease_expires_at = None
        job.claimable_at = None
    _close_steps(session, job, Status.CANCELLED, now)
    session.flush()
    if running and job.agent_id is not None:
        publish_after_commit(
            session, Event(f"agent:{job.agent_id}", "job.cancel", {"job_id": job.id})
        )
    if running:
        _announce_freed_slot(session, job)
    _refresh_run(session, job.run_id, now)


def _announce_freed_slot(session: Session, job: Job) -> None:
    """A running job ended: if its project has a concurrency limit, its queued jobs
    may be claimable now, so the waiting claims are woken (no event, no pickup until
    a claim times out)."""
    # By key: the run and its project are usually in the session already (an agent's
    # report loaded them), and then no query is made.
    run = session.get(Run, job.run_id)
    project = session.get(Project, run.project_id) if run is not None else None
    if project is not None and project.concurrency_limit is not None:
        publish_after_commit(session, Event("queue", "job.slot_freed", {"job_id": job.id}))


def release_job(session: Session, job: Job) -> None:
    """The agent of a job that already finished on the server (cancelled, or timed
    out by the server) confirmed it stopped: the lease ends, the status stays."""
    job.lease_id = None
    job.lease_expires_at = None
    session.flush()


def requeue_job(
    session: Session,
    job: Job,
    *,
    reason: str,
    now: datetime | None = None,
    claimable_at: datetime | None = None,
) -> None:
    """The agent running the job was lost and attempts remain: back to the queue, to be
    claimed from `claimable_at` on (a back-off; None: at once)."""
    _check(f"job {job.id}", job.status, Status.QUEUED)
    now = now or utcnow()
    _audit_requeue(session, job, reason, now)
    job.status = Status.QUEUED
    job.agent_id = None
    job.lease_id = None
    job.lease_expires_at = None
    job.queued_at = now
    job.claimable_at = claimable_at
    job.started_at = None
    job.error_message = reason
    for step in _steps(session, job):
        step.status = Status.QUEUED
        step.exit_code = None
        step.started_at = None
        step.finished_at = None
        # The next attempt writes a log of its own (see logs.paths), from nothing.
        step.log_byte_size = 0
        step.log_line_count = 0
    session.flush()
    announce_queued(session, job)
    _refresh_run(session, job.run_id, now)


def _audit_requeue(session: Session, job: Job, reason: str, now: datetime) -> None:
    # The next claim overwrites the lost attempt in the job row; the run's history
    # (runs/history.py) reads that attempt back from this event.
    agent = session.get(Agent, job.agent_id) if job.agent_id is not None else None
    audit.record(
        session,
        actor_id=None,
        actor_name=SYSTEM_ACTOR,
        action=REQUEUE_ACTION,
        target_type="run",
        target_id=job.run_id,
        detail={
            "job_id": job.id,
            "job": job.name,
            "reason": reason,
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
            "agent": agent.name if agent is not None else None,
            "started_at": job.started_at.isoformat() if job.started_at else None,
        },
        at=now,
    )


# --- steps -------------------------------------------------------------------------------


def start_step(session: Session, step: Step, *, now: datetime | None = None) -> None:
    _check(f"step {step.name!r}", step.status, Status.RUNNING)
    step.status = Status.RUNNING
    step.started_at = now or utcnow()
    session.flush()
    _step_event(session, step)


def finish_step(
    session: Session,
    step: Step,
    status: Status,
    *,
    exit_code: int | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> None:
    """A step ended. A step reported finished without a start report (a skipped one, or
    one whose start report was lost) goes straight from queued to its end."""
    if status not in FINISHED:
        raise ValueError(f"finish_step needs a final status, not {status}")
    if step.status is Status.QUEUED and status is not Status.SKIPPED:
        step.status = Status.RUNNING
    _check(f"step {step.name!r}", step.status, status)
    step.status = status
    step.exit_code = exit_code
    step.started_at = step.started_at or started_at
    step.finished_at = finished_at or utcnow()
    session.flush()
    _step_event(session, step)


def _step_event(session: Session, step: Step) -> None:
    job = session.get(Job, step.job_id)
    if job is None:
        return
    publish_after_commit(
        session,
        Event(
            f"run:{job.run_id}",
            "step.status",
            {"job_id": job.id, "step_id": step.id, "index": step.index, "status": str(step.status)},
        ),
    )


def _steps(session: Session, job: Job) -> list[Step]:
    return list(session.scalars(select(Step).where(Step.job_id == job.id).order_by(Step.index)))


def _close_steps(session: Session, job: Job, status: Status, now: datetime) -> None:
    for step in _steps(session, job):
        if step.status is Status.RUNNING:
            step.status = status if status is not Status.SUCCESS else Status.ERROR
            step.finished_at = now
        elif step.status is Status.QUEUED:
            step.status = Status.SKIPPED


# --- runs --------------------------------------------------------------------------------


def _refresh_run(session: Session, run_id: int, now: datetime) -> None:
    """Derive the run's status from its jobs: running while any job runs (or some ran
    and others wait), finished with the most serious outcome once all are."""
    run = session.get(Run, run_id)
    if run is None:
        return
    statuses = list(session.scalars(select(Job.status).where(Job.run_id == run_id)))
    if not statuses:
        return
    if all(s in FINISHED for s in statuses):
        new = max(statuses, key=SEVERITY.index)
        finished_at: datetime | None = run.finished_at or now
    elif any(s is Status.RUNNING for s in statuses) or any(s in FINISHED for s in statuses):
        new, finished_at = Status.RUNNING, None
    else:
        new, finished_at = Status.QUEUED, None
    if new is run.status and finished_at == run.finished_at:
        return
    run.status = new
    if new is not Status.QUEUED and run.started_at is None:
        run.started_at = now
    run.finished_at = finished_at
    session.flush()
    publish_after_commit(session, *_run_events(run))


def _run_has_a_running_job(session: Session, run_id: int, now: datetime) -> None:
    """`_refresh_run` after a job started, without reading the other jobs: a run with a
    running job is running, whatever the others are."""
    run = session.get(Run, run_id)
    if run is None or run.status is Status.RUNNING:
        return
    run.status = Status.RUNNING
    run.started_at = run.started_at or now
    run.finished_at = None
    session.flush()
    publish_after_commit(session, *_run_events(run))


def fail_run(session: Session, run: Run, message: str, *, now: datetime | None = None) -> None:
    """The run could not even be planned (commit not found, pipeline file unreadable):
    it ends in `error` with the reason, and has no jobs."""
    _check(f"run {run.number}", run.status, Status.ERROR)
    now = now or utcnow()
    run.status = Status.ERROR
    run.error_message = message
    run.started_at = run.started_at or now
    run.finished_at = now
    session.flush()
    publish_after_commit(session, *_run_events(run))


def cancel_run(session: Session, run: Run, *, now: datetime | None = None) -> int:
    """Cancel every job of the run that has not finished; returns how many."""
    jobs = list(session.scalars(select(Job).where(Job.run_id == run.id)))
    pending = [job for job in jobs if job.status not in FINISHED]
    for job in pending:
        cancel_job(session, job, now=now)
    if not jobs and run.status not in FINISHED:
        run.status = Status.CANCELLED
        run.finished_at = now or utcnow()
        session.flush()
        publish_after_commit(session, *_run_events(run))
    return len(pending)


def skip_run(session: Session, run: Run, reason: str, *, now: datetime | None = None) -> None:
    """The pipeline's `when` did not match the trigger: the run ends `skipped`, without
    jobs, and `reason` (kept in `error_message`) says which condition did not match."""
    _check(f"run {run.number}", run.status, Status.SKIPPED)
    now = now or utcnow()
    run.status = Status.SKIPPED
    run.error_message = reason
    run.finished_at = now
    session.flush()
    publish_after_commit(session, *_run_events(run))
