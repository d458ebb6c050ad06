"""The webhook endpoints (`/hooks/...`, for forges) and the maintainers' API.

The hook endpoints are async: the body is read in bounded chunks (a body over
`webhook_max_body_bytes` is refused with 413 before it is all read), the database work
runs in a worker thread, and the run is made after the answer is sent.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from conveyor.server.config import Settings
from conveyor.server.deps import (
    AppSettings,
    CurrentActor,
    DbSession,
    Signer,
    WriterDbSession,
    resolve_actor,
)
from conveyor.server.deps import require_signed_in as _require_signed_in
from conveyor.server.errors import ConveyorError, NotFoundError
from conveyor.server.users.authorization import Actor
from conveyor.server.webhooks import service, tasks
from conveyor.server.webhooks.providers import registry
from conveyor.server.webhooks.schemas import (
    DeliveryAnswer,
    DeliveryPage,
    WebhookSettings,
    WebhookSettingsUpdate,
)

hooks_router = APIRouter(tags=["webhooks"])
api_router = APIRouter(prefix="/api/v1", tags=["webhooks"])


class WebhookBodyTooLargeError(ConveyorError):
    status_code = 413
    code = "webhook_body_too_large"


class UnknownProviderError(NotFoundError):
    code = "unknown_webhook_provider"


async def _bounded_body(request: Request, limit: int) -> bytes:
    def too_large() -> WebhookBodyTooLargeError:
        return WebhookBodyTooLargeError(
            f"the delivery's body is larger than {limit} bytes, the most this server "
            "accepts (CONVEYOR_WEBHOOK_MAX_BODY_BYTES); send fewer commits per push",
            detail={"limit_bytes": limit},
        )

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _receive_and_commit(
    factory: sessionmaker[Session], settings: Settings, inbound: service.Inbound
) -> service.Reception:
    with factory() as session:
        reception = service.receive(session, settings, inbound)
        session.commit()
    return reception


async def _receive(request: Request, provider: str | None, project: str) -> JSONResponse:
    if provider is not None and registry.by_name(provider) is None:
        raise UnknownProviderError(
            f"there is no webhook provider {provider!r}; use one of "
            f"{', '.join(sorted(registry.BY_NAME))}, or /hooks/{{project}} to detect it",
        )
    state = request.app.state
    settings: Settings = state.settings
    body = await _bounded_body(request, settings.webhook_max_body_bytes)
    inbound = service.Inbound(
        project_name=project,
        provider_name=provider,
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
    )
    reception = await run_in_threadpool(
        _receive_and_commit, state.session_factory, settings, inbound
    )
    if reception.status_code == 401:
        raise service.WebhookNotAuthenticatedError()
    background = None
    if reception.event is not None and reception.delivery_pk is not None:
        background = BackgroundTask(
            tasks.make_run,
            state.read_session_factory,
            state.session_factory,
            settings,
            reception.delivery_pk,
            reception.event,
        )
    return JSONResponse(
        reception.answer.model_dump(mode="json"),
        status_code=reception.status_code,
        background=background,
    )


RESPONSES: dict[int | str, dict[str, object]] = {
    202: {"model": DeliveryAnswer, "description": "stored; the run is made after"},
    200: {"model": DeliveryAnswer, "description": "ping, duplicate, ignored or refused"},
}


@hooks_router.post("/hooks/{project}", status_code=202, responses=RESPONSES)
async def receive_detected(project: str, request: Request) -> JSONResponse:
    """A delivery from a forge recognised by its headers."""
    return await _receive(request, None, project)


@hooks_router.post("/hooks/{provider}/{project}", status_code=202, responses=RESPONSES)
async def receive_from(provider: str, project: str, request: Request) -> JSONResponse:
    """A delivery from the named forge."""
    return await _receive(request, provider, project)


# --- maintainers --------------------------------------------------------------------------


def writer_actor(
    request: Request, session: WriterDbSession, settings: AppSettings, signer: Signer
) -> Actor:
    return _require_signed_in(resolve_actor(request, session, settings, signer))


WriterActor = Annotated[Actor, Depends(writer_actor)]


def _base_url(request: Request, settings: Settings) -> str:
    return settings.public_base_url or str(request.base_url)


@api_router.get("/projects/{name}/webhook", response_model=WebhookSettings)
def read_webhook(
    name: str, request: Request, session: WriterDbSession, actor: WriterActor, settings: AppSettings
) -> WebhookSettings:
    """The webhook URL, secret and rules (maintainers); the secret is made on first read."""
    return service.describe_settings(session, settings, actor, name, _base_url(request, settings))


@api_router.patch("/projects/{name}/webhook", response_model=WebhookSettings)
def update_webhook(
    name: str,
    changes: WebhookSettingsUpdate,
    request: Request,
    session: DbSession,
    actor: CurrentActor,
    settings: AppSettings,
) -> WebhookSettings:
    """Set the authorized forge users and whether new pushes cancel older runs."""
    return service.update_settings(
        session, settings, actor, name, changes, _base_url(request, settings)
    )


@api_router.post("/projects/{name}/webhook/rotate", response_model=WebhookSettings)
def rotate_webhook_secret(
    name: str, request: Request, session: DbSession, actor: CurrentActor, settings: AppSettings
) -> WebhookSettings:
    """A new secret; deliveries signed with the old one are refused from now on."""
    return service.rotate_secret(session, settings, actor, name, _base_url(request, settings))


@api_router.get("/projects/{name}/deliveries", response_model=DeliveryPage)
def list_deliveries(
    name: str,
    session: DbSession,
    actor: CurrentActor,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=service.MAX_PER_PAGE)] = 20,
) -> DeliveryPage:
    """The project's webhook deliveries, newest first, with result and reason."""
    return service.list_deliveries(session, actor, name, page=page, per_page=per_page)
