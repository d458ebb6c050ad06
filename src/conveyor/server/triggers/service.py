"""Polling and cron schedules: their settings, and the passes the duties make.

Polling (`poll_due`): for each project whose poll is due, `git ls-remote` lists the
branch heads; every branch that matches the project's branch filter and is new or
moved since the last poll gets a run (event `push`, actor `poller`). The first poll
of a project only records the heads and starts nothing: switching polling on must not
build every branch the repository ever had; the next change of a branch builds it.

Schedules (`run_due_schedules`): a schedule whose due time has come is claimed with a
conditional UPDATE (see `ScheduleRepository.claim`) and then runs its branch (event
`cron`, actor `scheduler`). The next due time is the first cron time after *now*: a
server that was down for a day starts one run for what it missed, not one per missed
time.

Both take `now` from the caller, so tests drive the clock. git and the trigger run
outside any open transaction (`runs.service.trigger` commits before git works).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from conveyor.agent.checkout import CheckoutError, MirrorCache
from conveyor.pipeline import branch_matches
from conveyor.server.config import Settings
from conveyor.server.errors import ConveyorError, NotFoundError
from conveyor.server.models.project import Project
from conveyor.server.models.project_poll import ProjectPoll
from conveyor.server.models.schedule import Schedule
from conveyor.server.projects import service as projects_service
from conveyor.server.runs import service as runs_service
from conveyor.server.runs.schemas import TriggerRequest
from conveyor.server.triggers.repository import PollRepository, ScheduleRepository
from conveyor.server.triggers.schemas import PollingPut, ScheduleCreate, ScheduleUpdate
from conveyor.server.users.authorization import Action, Actor

logger = logging.getLogger("conveyor.server.triggers")

POLLER = "poller"
SCHEDULER = "scheduler"
BRANCH_PREFIX = "refs/heads/"
_ERROR_LIMIT = 2000


class ScheduleNotFoundError(NotFoundError):
    code = "schedule_not_found"


def server_time_zone(settings: Settings) -> str:
    return settings.time_zone or "UTC"


def next_due(cron: str, time_zone: str, after: datetime) -> datetime:
    """The first time strictly after `after` that `cron` names, read in `time_zone`, in UTC."""
    from croniter import croniter  # loaded at the first schedule, not with the server

    local = after.astimezone(ZoneInfo(time_zone))
    following: datetime = croniter(cron, local).get_next(datetime)
    return following.astimezone(UTC)


# --- polling settings ----------------------------------------------------------------------


def get_polling(session: Session, actor: Actor, project_name: str) -> ProjectPoll:
    project = projects_service.get_project_for(session, actor, project_name, Action.READ)
    return PollRepository(session).get(project.id) or ProjectPoll(
        project_id=project.id, interval_seconds=None, heads=None
    )


def set_polling(
    session: Session, actor: Actor, project_name: str, change: PollingPut, now: datetime
) -> ProjectPoll:
    """Set or switch off (None) the poll interval (maintainers). A new interval polls at
    once; the heads seen so far are kept, so switching off and on builds what changed."""
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    polls = PollRepository(session)
    poll = polls.get(project.id) or polls.add(ProjectPoll(project_id=project.id, heads=None))
    poll.interval_seconds = change.interval_seconds
    poll.next_poll_at = now if change.interval_seconds is not None else None
    session.flush()
    return poll


# --- polling pass --------------------------------------------------------------------------


@dataclass
class PollOutcome:
    """What one pass of the poller did (for logs and tests)."""

    polled: list[str] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _branch_heads(heads: dict[str, str]) -> dict[str, str]:
    return {
        ref.removeprefix(BRANCH_PREFIX): sha
        for ref, sha in heads.items()
        if ref.startswith(BRANCH_PREFIX)
    }


def _changed_branches(
    project: Project, before: dict[str, str], now_heads: dict[str, str]
) -> list[str]:
    patterns = projects_service.branch_patterns(project.branch_filter)
    return sorted(
        branch
        for branch, sha in now_heads.items()
        if before.get(branch) != sha and (not patterns or branch_matches(branch, patterns))
    )


def poll_due(factory: sessionmaker[Session], settings: Settings, now: datetime) -> PollOutcome:
    """One pass of the poller over every project whose poll is due at `now`."""
    outcome = PollOutcome()
    with factory() as session:
        due = [
            (poll.project_id, poll.next_poll_at, poll.interval_seconds)
            for poll in PollRepository(session).due(now)
        ]
    for project_id, due_at, interval in due:
        assert due_at is not None and interval is not None  # the query asks for both
        with factory() as session:
            claimed = PollRepository(session).claim(
                project_id, due_at, now + timedelta(seconds=interval)
            )
            session.commit()
        if claimed:
            _poll_project(factory, settings, project_id, now, outcome)
    return outcome


def _poll_project(
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
    now: datetime,
    outcome: PollOutcome,
) -> None:
    with factory() as session:
        project = session.get(Project, project_id)
        if project is None:
            return
        name, url = project.name, project.git_url
    outcome.polled.append(name)
    try:
        heads = _branch_heads(MirrorCache(settings.repos_path).remote_heads(url))
    except CheckoutError as error:
        _record_poll(factory, project_id, None, now, str(error))
        outcome.errors[name] = str(error)
        return
    with factory() as session:
        poll = PollRepository(session).get(project_id)
        project = session.get(Project, project_id)
        if poll is None or project is None:
            return
        first_poll = poll.heads is None
        changed = [] if first_poll else _changed_branches(project, poll.heads or {}, heads)
        problems: list[str] = []
        for branch in changed:
            try:
                run = runs_service.trigger(
                    session,
                    settings,
                    Actor.service(POLLER),
                    project,
                    TriggerRequest(branch=branch, event="push"),
                )
                session.commit()
            except ConveyorError as error:
                session.rollback()
                problems.append(f"{branch}: {error.message}")
                continue
            outcome.run_ids.append(run.id)
    error_text = "; ".join(problems) or None
    if error_text:
        outcome.errors[name] = error_text
    _record_poll(factory, project_id, heads, now, error_text)


def _record_poll(
    factory: sessionmaker[Session],
    project_id: int,
    heads: dict[str, str] | None,
    now: datetime,
    error: str | None,
) -> None:
    with factory() as session:
        poll = PollRepository(session).get(project_id)
        if poll is None:
            return
        if heads is not None:
            poll.heads = heads
        poll.last_polled_at = now
        poll.last_error = error[:_ERROR_LIMIT] if error else None
        session.commit()


# --- schedules -----------------------------------------------------------------------------


def list_schedules(session: Session, actor: Actor, project_name: str) -> Sequence[Schedule]:
    project = projects_service.get_project_for(session, actor, project_name, Action.READ)
    return ScheduleRepository(session).of_project(project.id)


def get_schedule(session: Session, actor: Actor, project_name: str, schedule_id: int) -> Schedule:
    project = projects_service.get_project_for(session, actor, project_name, Action.READ)
    return _schedule_of(session, project, schedule_id)


def _schedule_of(session: Session, project: Project, schedule_id: int) -> Schedule:
    schedule = ScheduleRepository(session).get(project.id, schedule_id)
    if schedule is None:
        raise ScheduleNotFoundError(
            f"project {project.name!r} has no schedule {schedule_id}; "
            f"GET /api/v1/projects/{project.name}/schedules lists them",
            detail={"project": project.name, "schedule": schedule_id},
        )
    return schedule


def _check_branch(project: Project, branch: str | None) -> None:
    if branch is not None:
        projects_service.check_branch_name(branch, "branch")


def create_schedule(
    session: Session,
    settings: Settings,
    actor: Actor,
    project_name: str,
    body: ScheduleCreate,
    now: datetime,
) -> Schedule:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    _check_branch(project, body.branch)
    time_zone = body.time_zone or server_time_zone(settings)
    schedule = Schedule(
        project_id=project.id,
        cron=body.cron,
        branch=body.branch,
        variables=dict(body.variables),
        time_zone=time_zone,
        enabled=body.enabled,
        next_due_at=next_due(body.cron, time_zone, now) if body.enabled else None,
    )
    return ScheduleRepository(session).add(schedule)


def update_schedule(
    session: Session,
    actor: Actor,
    project_name: str,
    schedule_id: int,
    body: ScheduleUpdate,
    now: datetime,
) -> Schedule:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    schedule = _schedule_of(session, project, schedule_id)
    changes = body.model_dump(exclude_unset=True)
    if "branch" in changes:
        _check_branch(project, body.branch)
        schedule.branch = body.branch
    if body.cron is not None:
        schedule.cron = body.cron
    if body.variables is not None:
        schedule.variables = dict(body.variables)
    if body.time_zone is not None:
        schedule.time_zone = body.time_zone
    if body.enabled is not None:
        schedule.enabled = body.enabled
    schedule.next_due_at = (
        next_due(schedule.cron, schedule.time_zone, now) if schedule.enabled else None
    )
    session.flush()
    return schedule


def delete_schedule(session: Session, actor: Actor, project_name: str, schedule_id: int) -> None:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    ScheduleRepository(session).delete(_schedule_of(session, project, schedule_id))


@dataclass
class ScheduleOutcome:
    """What one pass of the scheduler did."""

    run_ids: list[int] = field(default_factory=list)
    skipped_claims: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)


def run_due_schedules(
    factory: sessionmaker[Session], settings: Settings, now: datetime
) -> ScheduleOutcome:
    """One pass of the scheduler: start a run for every schedule due at `now`."""
    outcome = ScheduleOutcome()
    with factory() as session:
        due = [
            (s.id, s.next_due_at, s.cron, s.time_zone) for s in ScheduleRepository(session).due(now)
        ]
    for schedule_id, due_at, cron, time_zone in due:
        assert due_at is not None  # the query asks for it
        with factory() as session:
            claimed = ScheduleRepository(session).claim(
                schedule_id, due_at, next_due(cron, time_zone, now)
            )
            session.commit()
        if not claimed:
            outcome.skipped_claims.append(schedule_id)
            continue
        _run_schedule(factory, settings, schedule_id, outcome)
    return outcome


def _run_schedule(
    factory: sessionmaker[Session], settings: Settings, schedule_id: int, outcome: ScheduleOutcome
) -> None:
    with factory() as session:
        schedule = session.get(Schedule, schedule_id)
        project = session.get(Project, schedule.project_id) if schedule else None
        if schedule is None or project is None:
            return
        request = TriggerRequest(
            branch=schedule.branch, variables=dict(schedule.variables), event="cron"
        )
        try:
            run = runs_service.trigger(
                session, settings, Actor.service(SCHEDULER), project, request
            )
            session.commit()
        except ConveyorError as error:
            session.rollback()
            outcome.errors[schedule_id] = error.message
            schedule = session.get(Schedule, schedule_id)
            if schedule is not None:
                schedule.last_error = error.message[:_ERROR_LIMIT]
                session.commit()
            return
        outcome.run_ids.append(run.id)
        run_id = run.id
        schedule = session.get(Schedule, schedule_id)
        if schedule is not None:
            schedule.last_run_id = run_id
            schedule.last_error = None
            session.commit()
