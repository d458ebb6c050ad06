"""JSON API of project secrets: set, list names, delete. Values are never returned."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from conveyor.server.audit import service as audit
from conveyor.server.deps import AppSettings, DbSession, RequestActor, remote_address
from conveyor.server.secrets import service as secrets_service
from conveyor.server.secrets.schemas import SecretPut, SecretRead

router = APIRouter(prefix="/api/v1/projects/{project}/secrets", tags=["secrets"])


@router.get("", response_model=list[SecretRead])
def list_secrets(project: str, session: DbSession, actor: RequestActor) -> list[SecretRead]:
    return [
        SecretRead.model_validate(secret)
        for secret in secrets_service.list_secrets(session, actor, project)
    ]


@router.put("/{name}", response_model=SecretRead)
def put_secret(
    project: str,
    name: str,
    body: SecretPut,
    request: Request,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
) -> SecretRead:
    secret = secrets_service.put_secret(session, settings, actor, project, name, body.value)
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action="secret.put",
        target_type="project",
        target_id=project,
        remote_address=remote_address(request),
        detail={"secret": name},
    )
    return SecretRead.model_validate(secret)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_secret(
    project: str, name: str, request: Request, session: DbSession, actor: RequestActor
) -> Response:
    secrets_service.delete_secret(session, actor, project, name)
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action="secret.delete",
        target_type="project",
        target_id=project,
        remote_address=remote_address(request),
        detail={"secret": name},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
