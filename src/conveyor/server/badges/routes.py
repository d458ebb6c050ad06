"""`GET /badge/{project}.svg?branch=main`: the build status as an SVG image."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request, Response

from conveyor.server.badges import service
from conveyor.server.deps import DbSession, RequestActor

router = APIRouter(tags=["badges"])


@router.get("/badge/{project}.svg", response_class=Response)
def badge(
    project: str,
    request: Request,
    session: DbSession,
    actor: RequestActor,
    branch: str | None = None,
) -> Response:
    state = service.badge_state(session, actor, project, branch)
    body = service.render_svg(state)
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:20] + '"'
    # no-cache: caches (GitHub's camo included) must revalidate, and the ETag makes
    # that revalidation cheap.
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type="image/svg+xml", headers=headers)
