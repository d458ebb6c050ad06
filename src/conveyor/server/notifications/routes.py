"""JSON API of notification hooks, their deliveries, and the commit-status link
(maintainers: targets and tokens are the project's secrets)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from conveyor.server.db.base import utcnow
from conveyor.server.deps import AppSettings, DbSession, RequestActor
from conveyor.server.notifications import service
from conveyor.server.notifications.schemas import (
    DeliveryRead,
    ForgeLinkPut,
    ForgeLinkRead,
    HookCreate,
    HookRead,
    HookUpdate,
)

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["notifications"])


@router.get("/notifications", response_model=list[HookRead])
def list_hooks(project: str, session: DbSession, actor: RequestActor) -> list[HookRead]:
    return [service.describe_hook(h) for h in service.list_hooks(session, actor, project)]


@router.post("/notifications", response_model=HookRead, status_code=status.HTTP_201_CREATED)
def create_hook(
    project: str, body: HookCreate, session: DbSession, settings: AppSettings, actor: RequestActor
) -> HookRead:
    return service.describe_hook(service.create_hook(session, settings, actor, project, body))


@router.get("/notifications/{hook_id}", response_model=HookRead)
def get_hook(project: str, hook_id: int, session: DbSession, actor: RequestActor) -> HookRead:
    return service.describe_hook(service.get_hook(session, actor, project, hook_id))


@router.patch("/notifications/{hook_id}", response_model=HookRead)
def update_hook(
    project: str,
    hook_id: int,
    body: HookUpdate,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
) -> HookRead:
    hook = service.update_hook(session, settings, actor, project, hook_id, body)
    return service.describe_hook(hook)


@router.delete("/notifications/{hook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_hook(project: str, hook_id: int, session: DbSession, actor: RequestActor) -> Response:
    service.delete_hook(session, actor, project, hook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/notifications/{hook_id}/deliveries", response_model=list[DeliveryRead])
def list_deliveries(
    project: str, hook_id: int, session: DbSession, actor: RequestActor
) -> list[DeliveryRead]:
    return [
        DeliveryRead.model_validate(d)
        for d in service.list_deliveries(session, actor, project, hook_id)
    ]


@router.post("/notifications/{hook_id}/test", response_model=DeliveryRead)
def send_test(
    project: str, hook_id: int, session: DbSession, settings: AppSettings, actor: RequestActor
) -> DeliveryRead:
    delivery = service.send_test(session, settings, actor, project, hook_id, utcnow())
    return DeliveryRead.model_validate(delivery)


@router.get("/commit-status", response_model=ForgeLinkRead)
def get_forge_link(project: str, session: DbSession, actor: RequestActor) -> ForgeLinkRead:
    return ForgeLinkRead.model_validate(service.get_forge_link(session, actor, project))


@router.put("/commit-status", response_model=ForgeLinkRead)
def put_forge_link(
    project: str,
    body: ForgeLinkPut,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
) -> ForgeLinkRead:
    link = service.put_forge_link(session, settings, actor, project, body)
    return ForgeLinkRead.model_validate(link)


@router.delete("/commit-status", status_code=status.HTTP_204_NO_CONTENT)
def delete_forge_link(project: str, session: DbSession, actor: RequestActor) -> Response:
    service.delete_forge_link(session, actor, project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/commit-status/deliveries", response_model=list[DeliveryRead])
def list_commit_status_deliveries(
    project: str, session: DbSession, actor: RequestActor
) -> list[DeliveryRead]:
    return [
        DeliveryRead.model_validate(d)
        for d in service.list_commit_status_deliveries(session, actor, project)
    ]
