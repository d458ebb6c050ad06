"""JSON API of polling and cron schedules (read: viewers; change: maintainers)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from conveyor.server.db.base import utcnow
from conveyor.server.deps import AppSettings, DbSession, RequestActor
from conveyor.server.triggers import service
from conveyor.server.triggers.schemas import (
    PollingPut,
    PollingRead,
    ScheduleCreate,
    ScheduleRead,
    ScheduleUpdate,
)

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["triggers"])


@router.get("/polling", response_model=PollingRead)
def get_polling(project: str, session: DbSession, actor: RequestActor) -> PollingRead:
    return PollingRead.model_validate(service.get_polling(session, actor, project))


@router.put("/polling", response_model=PollingRead)
def put_polling(
    project: str, body: PollingPut, session: DbSession, actor: RequestActor
) -> PollingRead:
    poll = service.set_polling(session, actor, project, body, utcnow())
    return PollingRead.model_validate(poll)


@router.get("/schedules", response_model=list[ScheduleRead])
def list_schedules(project: str, session: DbSession, actor: RequestActor) -> list[ScheduleRead]:
    return [ScheduleRead.model_validate(s) for s in service.list_schedules(session, actor, project)]


@router.post("/schedules", response_model=ScheduleRead, status_code=status.HTTP_201_CREATED)
def create_schedule(
    project: str,
    body: ScheduleCreate,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
) -> ScheduleRead:
    schedule = service.create_schedule(session, settings, actor, project, body, utcnow())
    return ScheduleRead.model_validate(schedule)


@router.get("/schedules/{schedule_id}", response_model=ScheduleRead)
def get_schedule(
    project: str, schedule_id: int, session: DbSession, actor: RequestActor
) -> ScheduleRead:
    return ScheduleRead.model_validate(service.get_schedule(session, actor, project, schedule_id))


@router.patch("/schedules/{schedule_id}", response_model=ScheduleRead)
def update_schedule(
    project: str,
    schedule_id: int,
    body: ScheduleUpdate,
    session: DbSession,
    actor: RequestActor,
) -> ScheduleRead:
    schedule = service.update_schedule(session, actor, project, schedule_id, body, utcnow())
    return ScheduleRead.model_validate(schedule)


@router.delete("/schedules/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(
    project: str, schedule_id: int, session: DbSession, actor: RequestActor
) -> Response:
    service.delete_schedule(session, actor, project, schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
