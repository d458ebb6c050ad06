"""Rendering pages: the Jinja2 environment, security headers, CSRF checks, form
bodies, and error pages for HTML routes.

CSRF uses a double-submit cookie: a random token in an HttpOnly, SameSite=Lax cookie,
repeated in a hidden field of every form the server renders. A cross-site page can
neither read the cookie nor guess the token, so it cannot forge the field.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor import __version__
from conveyor.server.errors import ConveyorError, NotAuthenticatedError, PermissionDeniedError
from conveyor.server.runs.history import spoken_duration

if TYPE_CHECKING:
    from jinja2 import Environment

TEMPLATES_DIR = Path(__file__).parent / "templates"
CSRF_COOKIE_NAME = "conveyor_csrf"
CSRF_FIELD_NAME = "csrf_token"
MAX_FORM_BYTES = 1024 * 1024
STARTED_AT = time.monotonic()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class CsrfTokenInvalidError(PermissionDeniedError):
    code = "csrf_token_invalid"


def _duration(seconds: float | None) -> str:
    # The same words as a run's history (and dashboard.js) use.
    return "" if seconds is None else spoken_duration(seconds)


def _moment(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _initials(author: str | None) -> str:
    name = (author or "").split("<", 1)[0].strip()
    parts = [part for part in name.replace(".", " ").split() if part]
    if not parts:
        return "?"
    return (parts[0][0] + (parts[-1][0] if len(parts) > 1 else "")).upper()


def _author_name(author: str | None) -> str:
    return (author or "").split("<", 1)[0].strip()


def _uptime() -> str:
    return _duration(time.monotonic() - STARTED_AT)


@cache
def environment() -> Environment:
    """The pages' Jinja2 environment, made at the first page: a server that serves
    only the API and agents never loads Jinja2 (about 2 MiB)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    made = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    made.filters["duration"] = _duration
    made.filters["moment"] = _moment
    made.filters["initials"] = _initials
    made.filters["author_name"] = _author_name
    made.globals["version"] = __version__
    made.globals["uptime"] = _uptime
    made.globals["year"] = lambda: datetime.now(UTC).year
    return made


def csrf_token(request: Request) -> str:
    """The request's CSRF token: the cookie's, or a new one that `render` will set."""
    token = getattr(request.state, "csrf_token", None)
    if token is None:
        token = request.cookies.get(CSRF_COOKIE_NAME) or secrets.token_urlsafe(32)
        request.state.csrf_token = token
    return str(token)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """The page `template` with the common context (user, CSRF token, flash message)."""
    values: dict[str, Any] = {
        "request": request,
        "csrf_token": csrf_token(request),
        "user": getattr(request.state, "ui_user", None),
        "notice": request.query_params.get("notice"),
    }
    values.update(context or {})
    body = environment().get_template(template).render(values)
    response = HTMLResponse(body, status_code=status_code)
    finish(request, response)
    return response


def finish(request: Request, response: Response) -> None:
    """Add the security headers and the CSRF cookie to a UI response."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    if request.cookies.get(CSRF_COOKIE_NAME) != csrf_token(request):
        settings = request.app.state.settings
        response.set_cookie(
            CSRF_COOKIE_NAME,
            csrf_token(request),
            path="/",
            httponly=True,
            samesite="lax",
            secure=bool(settings.secure_cookies),
        )


def redirect(request: Request, location: str, notice: str | None = None) -> RedirectResponse:
    """A 303 to `location` (after a POST), with an optional message shown there."""
    if notice:
        location += ("&" if "?" in location else "?") + "notice=" + quote(notice)
    response = RedirectResponse(location, status_code=303)
    finish(request, response)
    return response


async def posted_form(request: Request) -> dict[str, list[str]]:
    """The fields of a urlencoded form POST, after checking its CSRF token.

    Parsed here rather than with FastAPI's Form (which needs python-multipart): the UI's
    forms are all `application/x-www-form-urlencoded`."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ConveyorError("the form is larger than 1 MiB", status_code=413)
    fields: dict[str, list[str]] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    sent = (fields.get(CSRF_FIELD_NAME) or [""])[0]
    expected = request.cookies.get(CSRF_COOKIE_NAME, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise CsrfTokenInvalidError(
            "the form's security token is missing or out of date; reload the page and "
            "send the form again"
        )
    return fields


def field(form: Mapping[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0].strip() if values else default


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else the dashboard: never another origin
    (`//evil`, `/\\evil` and `https://...` are all refused)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(character) < 32 for character in target) or "\\" in target:
        return "/"
    return target


def sign_in_location(request: Request) -> str:
    asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/ui/sign-in?next=" + quote(asked, safe="")


def error_page(request: Request, error: Exception) -> Response:
    """An error as a page: sign-in for 401, the 403 page, a plain error page else."""
    if isinstance(error, NotAuthenticatedError):
        if request.method == "GET":
            response = RedirectResponse(sign_in_location(request), status_code=303)
            finish(request, response)
            return response
        return render(
            request,
            "error.html",
            {"title": "Sign in first", "message": error.message},
            status_code=401,
        )
    if isinstance(error, ConveyorError):
        title = "Permission denied" if error.status_code == 403 else "That did not work"
        template = "forbidden.html" if error.status_code == 403 else "error.html"
        return render(
            request,
            template,
            {"title": title, "message": error.message},
            status_code=error.status_code,
        )
    if isinstance(error, StarletteHTTPException):
        message = "There is no such page." if error.status_code == 404 else str(error.detail)
        return render(
            request,
            "error.html",
            {"title": f"Error {error.status_code}", "message": message},
            status_code=error.status_code,
        )
    if isinstance(error, RequestValidationError):
        return render(
            request,
            "error.html",
            {"title": "That did not work", "message": "The address or form is not valid."},
            status_code=422,
        )
    raise error


class PageRoute(APIRoute):
    """A route of the UI: errors become pages instead of JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (ConveyorError, StarletteHTTPException, RequestValidationError) as error:
                return error_page(request, error)

        return handle
