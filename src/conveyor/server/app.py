"""The FastAPI application: lifespan, error rendering, routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.server import events, health, metrics, web
from conveyor.server.agents import embedded as embedded_agents
from conveyor.server.agents import routes as agents_routes
from conveyor.server.artifacts import routes as artifacts_routes
from conveyor.server.artifacts import tasks as artifacts_tasks
from conveyor.server.badges import routes as badges_routes
from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.db.engine import create_database_engine, create_session_factory
from conveyor.server.db.migrate import upgrade_engine_in_subprocess
from conveyor.server.errors import ConveyorError
from conveyor.server.logs import routes as logs_routes
from conveyor.server.notifications import routes as notifications_routes
from conveyor.server.notifications import tasks as notifications_tasks
from conveyor.server.projects import routes as projects_routes
from conveyor.server.runs import routes as runs_routes
from conveyor.server.secrets import routes as secrets_routes
from conveyor.server.triggers import routes as triggers_routes
from conveyor.server.triggers import tasks as triggers_tasks
from conveyor.server.users import routes as users_routes
from conveyor.server.users import service as users_service
from conveyor.server.users.sessions import SessionSigner
from conveyor.server.webhooks import routes as webhooks_routes
from conveyor.server.webhooks import tasks as webhooks_tasks

logger = logging.getLogger("conveyor.server")

AUTH_DISABLED_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!!  AUTHENTICATION IS DISABLED (CONVEYOR_AUTH_DISABLED=1).\n"
    "!!  Every request acts as an administrator. Use this for local development only;\n"
    "!!  never expose this server to a network.\n" + "!" * 78
)

HTTP_ERROR_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    401: "not_authenticated",
    403: "permission_denied",
}


def _error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail}}


def _prepare_database(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    upgrade_engine_in_subprocess(app.state.engine)
    with app.state.session_factory.begin() as session:
        password = users_service.ensure_first_admin(session)
    if password is not None:
        # Printed, not only logged: it is shown this once and must reach the operator.
        print(
            f"Created the first user: name '{users_service.FIRST_ADMIN_NAME}', "
            f"password '{password}' (shown only now; change it after signing in)",
            flush=True,
        )
    if settings.auth_disabled:
        logger.warning(AUTH_DISABLED_WARNING)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    await run_in_threadpool(_prepare_database, app)
    app.state.event_bus.bind(asyncio.get_running_loop())
    sweeper = asyncio.create_task(artifacts_tasks.sweep_abandoned_uploads(app.state.settings))
    factory, settings, wake = app.state.session_factory, app.state.settings, asyncio.Event()
    duties = [
        asyncio.create_task(triggers_tasks.poll_repositories(factory, settings)),
        asyncio.create_task(triggers_tasks.run_schedules(factory, settings)),
        asyncio.create_task(
            notifications_tasks.queue_run_notifications(
                app.state.event_bus, factory, app.state.read_session_factory, settings, wake
            )
        ),
        asyncio.create_task(notifications_tasks.send_deliveries(factory, settings, wake)),
        asyncio.create_task(
            webhooks_tasks.resume_accepted_deliveries(
                app.state.read_session_factory, factory, settings
            )
        ),
    ]
    try:
        async with embedded_agents.running(app.state.session_factory, app.state.settings):
            yield
    finally:
        sweeper.cancel()
        for duty in duties:
            duty.cancel()
        app.state.engine.dispose()


async def _render_conveyor_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConveyorError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


async def _render_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "location": [str(part) for part in error.get("loc", ())],
            "message": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    where = ", ".join(
        "{}: {}".format(".".join(problem["location"]), problem["message"]) for problem in problems
    )
    return JSONResponse(
        _error_body("invalid_input", f"the request is not valid ({where})", problems),
        status_code=422,
    )


async def _render_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404:
        message = "no such endpoint; the API is described at /api/v1/openapi.json"
    return JSONResponse(
        _error_body(code, message), status_code=exc.status_code, headers=exc.headers
    )


async def _render_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log, never to the client.
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        _error_body(
            "internal_error",
            "the server failed on this request; the server log has the details",
        ),
        status_code=500,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The Conveyor server application. The database is upgraded when it starts."""
    settings = settings or Settings()
    app = FastAPI(
        title="Conveyor",
        version="0.1.0",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=_lifespan,
    )
    engine = create_database_engine(settings.database_url)
    app.state.settings = settings
    app.state.engine = engine
    # Sessions that may write start as writers (SQLite: BEGIN IMMEDIATE, waiting for the
    # lock instead of failing a read-then-write on a stale snapshot); sessions that only
    # read (GET requests, log streams) never wait, and on SQLite cannot write at all.
    write_engine = engine.execution_options(**dialect.write_transaction_options(engine))
    app.state.session_factory = create_session_factory(write_engine)
    app.state.read_session_factory = create_session_factory(
        engine.execution_options(**dialect.read_transaction_options(engine))
    )
    app.state.event_bus = events.EventBus()
    app.state.stopping = asyncio.Event()  # set when a stop begins (conveyor.server.serving)
    events.install(app.state.session_factory, app.state.event_bus)
    app.state.session_signer = SessionSigner(settings.session_secret_key())

    app.add_exception_handler(ConveyorError, _render_conveyor_error)
    app.add_exception_handler(RequestValidationError, _render_validation_error)
    app.add_exception_handler(StarletteHTTPException, _render_http_error)
    app.add_exception_handler(Exception, _render_unexpected_error)

    # Before every other route: see `logs_routes.websocket_routes`.
    app.router.routes[:0] = logs_routes.websocket_routes
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(users_routes.router)
    app.include_router(logs_routes.router)
    app.include_router(artifacts_routes.router)
    app.include_router(agents_routes.router)
    app.include_router(projects_routes.router)
    app.include_router(secrets_routes.router)
    app.include_router(runs_routes.router)
    app.include_router(triggers_routes.router)
    app.include_router(notifications_routes.router)
    app.include_router(badges_routes.router)
    app.include_router(webhooks_routes.hooks_router)
    app.include_router(webhooks_routes.api_router)
    web.install(app)
    return app
