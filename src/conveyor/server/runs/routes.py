"""JSON API of runs: trigger, query, cancel, retry, a run's history, and the tasks view.

The handlers are sync on purpose: triggering runs git, which blocks, in the request's
worker thread.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.audit import service as audit
from conveyor.server.deps import AppSettings, DbSession, RequestActor, remote_address
from conveyor.server.projects import service as projects_service
from conveyor.server.runs import history
from conveyor.server.runs import service as runs_service
from conveyor.server.runs.repository import RunFilter
from conveyor.server.runs.schemas import (
    RunDetail,
    RunEventRead,
    RunPage,
    TaskRead,
    TasksView,
    TriggerRequest,
)
from conveyor.server.users.authorization import Action, Actor

router = APIRouter(prefix="/api/v1", tags=["runs"])

TRIGGER_EVENT_API = "api"


def _as_utc(moment: datetime | None) -> datetime | None:
    # A time without a zone is taken as UTC, the zone every stored time is in.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def run_filter(
    status: Annotated[Status | None, Query(description="queued, running, success, ...")] = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    branch: Annotated[str | None, Query(max_length=255)] = None,
    created_by: Annotated[str | None, Query(max_length=200, description="actor name")] = None,
    event: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; created at or after")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; created at or before")] = None,
) -> RunFilter:
    return RunFilter(
        status=status,
        project=project,
        branch=branch,
        created_by=created_by,
        event=event,
        since=_as_utc(since),
        until=_as_utc(until),
    )


def task_filter(
    project: Annotated[str | None, Query(max_length=100)] = None,
    created_by: Annotated[str | None, Query(max_length=200)] = None,
) -> RunFilter:
    return RunFilter(project=project, created_by=created_by)


Filters = Annotated[RunFilter, Depends(run_filter)]
TaskFilters = Annotated[RunFilter, Depends(task_filter)]
PageNumber = Annotated[int, Query(ge=1)]
PerPage = Annotated[int, Query(ge=1, le=runs_service.MAX_PER_PAGE)]


def _audit(session: Session, request: Request, actor: Actor, action: str, run_id: int) -> None:
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=action,
        target_type="run",
        target_id=run_id,
        remote_address=remote_address(request),
    )


@router.post("/projects/{name}/runs", response_model=RunDetail, status_code=status.HTTP_201_CREATED)
def trigger_run(
    name: str,
    request: Request,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
    body: TriggerRequest | None = None,
) -> RunDetail:
    project = projects_service.get_project(session, name)
    trigger = (body or TriggerRequest()).model_copy(update={"event": TRIGGER_EVENT_API})
    run = runs_service.trigger(session, settings, actor, project, trigger)
    _audit(session, request, actor, "run.trigger", run.id)
    return runs_service.describe_run(session, run, project)


@router.get("/projects/{name}/runs", response_model=RunPage)
def list_project_runs(
    name: str,
    session: DbSession,
    actor: RequestActor,
    filters: Filters,
    page: PageNumber = 1,
    per_page: PerPage = 20,
) -> RunPage:
    projects_service.get_project_for(session, actor, name, Action.READ)
    scoped = dataclasses.replace(filters, project=name)
    return runs_service.list_runs(session, actor, scoped, page=page, per_page=per_page)


@router.get("/runs", response_model=RunPage)
def list_runs(
    session: DbSession,
    actor: RequestActor,
    filters: Filters,
    page: PageNumber = 1,
    per_page: PerPage = 20,
) -> RunPage:
    return runs_service.list_runs(session, actor, filters, page=page, per_page=per_page)


@router.get("/runs/{run_id}", response_model=RunDetail)
def read_run(
    run_id: int, session: DbSession, actor: RequestActor, settings: AppSettings
) -> RunDetail:
    run, project = runs_service.get_run_for(session, actor, run_id, Action.READ)
    return runs_service.describe_run(session, run, project, settings=settings)


@router.post("/runs/{run_id}/cancel", response_model=RunDetail)
def cancel_run(run_id: int, request: Request, session: DbSession, actor: RequestActor) -> RunDetail:
    run = runs_service.cancel(session, actor, run_id)
    history.record_cancel(session, actor, run, remote_address=remote_address(request))
    _, project = runs_service.get_run_for(session, actor, run.id, Action.READ)
    return runs_service.describe_run(session, run, project)


@router.post("/runs/{run_id}/retry", response_model=RunDetail, status_code=status.HTTP_201_CREATED)
def retry_run(
    run_id: int,
    request: Request,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
) -> RunDetail:
    run = runs_service.retry(session, settings, actor, run_id)
    history.record_retry(session, actor, run_id, run, remote_address=remote_address(request))
    _, project = runs_service.get_run_for(session, actor, run.id, Action.READ)
    return runs_service.describe_run(session, run, project)


@router.get("/runs/{run_id}/events", response_model=list[RunEventRead])
def list_run_events(run_id: int, session: DbSession, actor: RequestActor) -> list[RunEventRead]:
    """Who did what to the run, and when, oldest first: triggered, started (per job and
    attempt), requeued (an agent was lost), cancelled, finished, retried. Readable by
    whoever may read the run."""
    return history.run_events(session, actor, run_id)


@router.get("/tasks", response_model=TasksView)
def list_tasks(session: DbSession, actor: RequestActor, filters: TaskFilters) -> TasksView:
    return runs_service.tasks(session, actor, filters)


@router.get("/tasks/active", response_model=list[TaskRead])
def list_active_tasks(
    session: DbSession, actor: RequestActor, filters: TaskFilters
) -> list[TaskRead]:
    return runs_service.tasks(session, actor, filters, include=(Status.RUNNING,)).active


@router.get("/tasks/queued", response_model=list[TaskRead])
def list_queued_tasks(
    session: DbSession, actor: RequestActor, filters: TaskFilters
) -> list[TaskRead]:
    return runs_service.tasks(session, actor, filters, include=(Status.QUEUED,)).queued
