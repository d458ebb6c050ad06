"""The web UI: server-rendered pages (Jinja2), plain static JS and CSS, and a live
WebSocket of run status changes. `install(app)` adds all of it to the application."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the UI's pages, live endpoint and static files to `app`."""
    from conveyor.server.web import live, logsearch, views

    # The static files first: the pages' catch-all answers every other /ui/ path.
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(live.router)
    app.include_router(logsearch.router)
    app.include_router(views.router)
