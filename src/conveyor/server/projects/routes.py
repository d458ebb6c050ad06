"""JSON API of projects and their members."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from conveyor.server.audit import service as audit
from conveyor.server.deps import AppSettings, DbSession, RequestActor, remote_address
from conveyor.server.projects import service as projects_service
from conveyor.server.projects.schemas import (
    MemberPut,
    MemberRead,
    ProjectCreate,
    ProjectRead,
    ProjectUpdate,
)
from conveyor.server.users.authorization import Action, Actor

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


def _audit(
    session: Session, request: Request, actor: Actor, action: str, project: str, **detail: str
) -> None:
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=action,
        target_type="project",
        target_id=project,
        remote_address=remote_address(request),
        detail=dict(detail),
    )


@router.get("", response_model=list[ProjectRead])
def list_projects(session: DbSession, actor: RequestActor) -> list[ProjectRead]:
    return [
        projects_service.describe(session, project)
        for project in projects_service.list_projects(session, actor)
    ]


@router.post("", response_model=ProjectRead, status_code=status.HTTP_201_CREATED)
def create_project(
    body: ProjectCreate,
    request: Request,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
) -> ProjectRead:
    project = projects_service.create_project(session, settings, actor, body)
    _audit(session, request, actor, "project.create", project.name)
    return projects_service.describe(session, project)


@router.get("/{name}", response_model=ProjectRead)
def read_project(name: str, session: DbSession, actor: RequestActor) -> ProjectRead:
    project = projects_service.get_project_for(session, actor, name, Action.READ)
    return projects_service.describe(session, project)


@router.patch("/{name}", response_model=ProjectRead)
def update_project(
    name: str, body: ProjectUpdate, request: Request, session: DbSession, actor: RequestActor
) -> ProjectRead:
    project = projects_service.update_project(session, actor, name, body)
    _audit(session, request, actor, "project.update", project.name)
    return projects_service.describe(session, project)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(
    name: str, request: Request, session: DbSession, settings: AppSettings, actor: RequestActor
) -> Response:
    """Delete the project; its files on disk go once the deletion has committed."""
    projects_service.delete_project(session, settings, actor, name)
    _audit(session, request, actor, "project.delete", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/members", response_model=list[MemberRead])
def list_members(name: str, session: DbSession, actor: RequestActor) -> list[MemberRead]:
    return [
        MemberRead(user=user_name, role=membership.role, created_at=membership.created_at)
        for membership, user_name in projects_service.list_members(session, actor, name)
    ]


@router.put("/{name}/members/{user}", response_model=MemberRead)
def set_member(
    name: str,
    user: str,
    body: MemberPut,
    request: Request,
    session: DbSession,
    actor: RequestActor,
) -> MemberRead:
    membership = projects_service.set_member(session, actor, name, user, body.role)
    _audit(session, request, actor, "member.set", name, user=user, role=body.role.value)
    return MemberRead(user=user, role=membership.role, created_at=membership.created_at)


@router.delete("/{name}/members/{user}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(
    name: str, user: str, request: Request, session: DbSession, actor: RequestActor
) -> Response:
    projects_service.remove_member(session, actor, name, user)
    _audit(session, request, actor, "member.remove", name, user=user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
