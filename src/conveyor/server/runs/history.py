"""A run's history: who did what to it, and when, in words a person reads.

Built from two sources, so that it is complete without writing a row per status
change: the run and job rows say when the run was triggered (and by whom), when each
job last started (on which agent) and when the run finished; the audit trail adds what
the rows forget or never held: who cancelled or retried, and the attempts lost with an
agent (`job.requeue`, written by `runs/state.py`, keeps the lost attempt's start).

Actors are a user's name, `webhook`, `schedule`, `agent <name>` or `system`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from conveyor.server.audit import service as audit
from conveyor.server.models.audit_event import AuditEvent
from conveyor.server.models.run import Run
from conveyor.server.runs import service as runs_service
from conveyor.server.runs.repository import RunRepository
from conveyor.server.runs.schemas import RunEventAction, RunEventRead
from conveyor.server.runs.state import REQUEUE_ACTION, SYSTEM_ACTOR
from conveyor.server.triggers.service import POLLER, SCHEDULER
from conveyor.server.users.authorization import Action, Actor

CANCEL_ACTION = "run.cancel"
RETRY_ACTION = "run.retry"
TRIGGER_ACTION = "run.trigger"
WEBHOOK_ACTOR = "webhook"
SCHEDULE_ACTOR = "schedule"
PERSON_EVENTS = frozenset({"manual", "api"})
"""Events a person starts (the UI's button, the API); any other comes from a forge,
the poller or a schedule."""

# Events of the same moment read in this order: a cancel stamps the run finished at
# the very time it is recorded, and the cancel is the cause.
_ORDER = {
    RunEventAction.TRIGGERED: 0,
    RunEventAction.STARTED: 1,
    RunEventAction.REQUEUED: 2,
    RunEventAction.CANCELLED: 3,
    RunEventAction.FINISHED: 4,
    RunEventAction.RETRIED: 5,
}


def run_events(session: Session, actor: Actor, run_id: int) -> list[RunEventRead]:
    """The history of a run that `actor` may read, oldest first."""
    run, _project = runs_service.get_run_for(session, actor, run_id, Action.READ)
    return history_of(session, run)


def history_of(session: Session, run: Run) -> list[RunEventRead]:
    """The history of `run`, oldest first (see the module's docstring)."""
    recorded = audit.events_of(
        session,
        "run",
        run.id,
        actions=(TRIGGER_ACTION, CANCEL_ACTION, RETRY_ACTION, REQUEUE_ACTION),
    )
    events = [_triggered(run, recorded)]
    events += _job_events(session, run, recorded)
    for event in recorded:
        if event.action == CANCEL_ACTION:
            newer = event.detail.get(SUPERSEDED_BY)
            events.append(
                RunEventRead(
                    time=event.created_at,
                    actor=event.actor_name,
                    action=RunEventAction.CANCELLED,
                    details="asked to stop the run"
                    if newer is None
                    else f"superseded by run #{newer} of the same branch",
                )
            )
        elif event.action == RETRY_ACTION and "number" in event.detail:
            events.append(
                RunEventRead(
                    time=event.created_at,
                    actor=event.actor_name,
                    action=RunEventAction.RETRIED,
                    details=f"as run #{event.detail['number']}",
                )
            )
    if run.finished_at is not None:
        # The run's own start is stamped even when it is cancelled in the queue; only
        # a job that started means it ran.
        ran = any(event.action is RunEventAction.STARTED for event in events)
        events.append(_finished(run, run.finished_at, ran=ran))
    return sorted(events, key=lambda event: (event.time, _ORDER[event.action]))


def record_cancel(session: Session, actor: Actor, run: Run, *, remote_address: str | None) -> None:
    """Audit that `actor` cancelled `run` (after `runs_service.cancel`)."""
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=CANCEL_ACTION,
        target_type="run",
        target_id=run.id,
        remote_address=remote_address,
        # The moment the cancel stamped on the run, so the history reads cause, then end.
        at=run.finished_at,
    )


SUPERSEDED_BY = "superseded_by"


def record_superseded(session: Session, older: Run, newer: Run) -> None:
    """Audit that a webhook's new run cancelled `older` (the project cancels superseded
    runs; after `state.cancel_run`)."""
    audit.record(
        session,
        actor_id=None,
        actor_name="webhook",
        action=CANCEL_ACTION,
        target_type="run",
        target_id=older.id,
        detail={SUPERSEDED_BY: newer.number},
        at=older.finished_at,
    )


def record_retry(
    session: Session, actor: Actor, retried_id: int, new_run: Run, *, remote_address: str | None
) -> None:
    """Audit a retry on both runs (after `runs_service.retry`): the retried one says
    which run it became, the new one which run it retries."""
    retried = session.get(Run, retried_id)
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=RETRY_ACTION,
        target_type="run",
        target_id=retried_id,
        remote_address=remote_address,
        detail={"run_id": new_run.id, "number": new_run.number},
    )
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=TRIGGER_ACTION,
        target_type="run",
        target_id=new_run.id,
        remote_address=remote_address,
        detail={
            "retry_of_run_id": retried_id,
            "retry_of_number": retried.number if retried is not None else None,
        },
    )


def trigger_actor(run: Run) -> str:
    """Who triggered `run`, as the history names them."""
    if run.actor_id is not None:
        return run.actor_name
    if run.actor_name == SCHEDULER:
        return SCHEDULE_ACTOR
    if run.actor_name == POLLER:
        return SYSTEM_ACTOR
    if run.event in PERSON_EVENTS:
        return run.actor_name or SYSTEM_ACTOR  # a user since deleted keeps the name
    return WEBHOOK_ACTOR


def _triggered(run: Run, recorded: list[AuditEvent]) -> RunEventRead:
    ref = f"tag {run.tag}" if run.tag else f"branch {run.branch}" if run.branch else "commit"
    parts = [f"{run.event} on {ref} at commit {run.commit_sha[:12]}"]
    actor = trigger_actor(run)
    if actor == WEBHOOK_ACTOR and run.actor_name:
        parts.append(f"sent by {run.actor_name}")
    if actor == SYSTEM_ACTOR and run.actor_name == POLLER:
        parts.append("the poller saw a new commit")
    for event in recorded:
        retried = event.detail.get("retry_of_number")
        if event.action == TRIGGER_ACTION and retried is not None:
            parts.append(f"retry of #{retried}")
    return RunEventRead(
        time=run.created_at,
        actor=actor,
        action=RunEventAction.TRIGGERED,
        details=", ".join(parts),
    )


def _job_events(session: Session, run: Run, recorded: list[AuditEvent]) -> list[RunEventRead]:
    runs = RunRepository(session)
    jobs = runs.jobs_of_run(run.id)
    agents = runs.agent_names(sorted({job.agent_id for job in jobs if job.agent_id is not None}))
    requeued_jobs = {
        event.detail.get("job_id") for event in recorded if event.action == REQUEUE_ACTION
    }
    events: list[RunEventRead] = []
    for event in recorded:
        if event.action != REQUEUE_ACTION:
            continue
        detail: dict[str, Any] = event.detail
        name = str(detail.get("job", "?"))
        attempt = detail.get("attempt")
        started_at = _parsed_time(detail.get("started_at"))
        if started_at is not None:
            events.append(_started(name, detail.get("agent"), attempt, started_at))
        events.append(
            RunEventRead(
                time=event.created_at,
                actor=event.actor_name,
                action=RunEventAction.REQUEUED,
                job=name,
                details=(
                    f"job {name} back in the queue: {detail.get('reason', 'agent lost')}"
                    f" (after attempt {attempt} of {detail.get('max_attempts', '?')})"
                ),
            )
        )
    for job in jobs:
        if job.started_at is None:
            continue
        agent = agents.get(job.agent_id) if job.agent_id is not None else None
        shown_attempt = job.attempts if job.attempts > 1 or job.id in requeued_jobs else None
        events.append(_started(job.name, agent, shown_attempt, job.started_at))
    return events


def _started(job: str, agent: Any, attempt: Any, at: datetime) -> RunEventRead:
    where = f" on agent {agent}" if agent else ""
    which = f", attempt {attempt}" if attempt else ""
    return RunEventRead(
        time=at,
        actor=f"agent {agent}" if agent else SYSTEM_ACTOR,
        action=RunEventAction.STARTED,
        job=job,
        details=f"job {job} started{where}{which}",
    )


def _finished(run: Run, finished_at: datetime, *, ran: bool) -> RunEventRead:
    if run.started_at is None or not ran:
        took = "without starting"
    else:
        took = "after " + spoken_duration((finished_at - run.started_at).total_seconds())
    details = f"{run.status} {took}"
    if run.error_message:
        details += f": {run.error_message}"
    return RunEventRead(
        time=finished_at,
        actor=SYSTEM_ACTOR,
        action=RunEventAction.FINISHED,
        details=details,
    )


def spoken_duration(seconds: float) -> str:
    """`4.2s`, `35s`, `2m 05s`, `1h 03m`: how long, as the UI writes it."""
    seconds = max(0.0, seconds)
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _parsed_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
