"""Message text from a hook's template, rendered in Jinja2's sandbox.

A template is project-controlled text that the server renders, so it runs in
`SandboxedEnvironment`: attribute access to Python internals (`__class__`,
`__globals__`, ...) raises SecurityError instead of reaching the server's objects.
The variables are plain strings and numbers (see `RunContext`), never ORM objects.
Jinja2 is loaded at the first template checked or rendered, not with the server.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from conveyor.server.errors import InvalidInputError

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

DEFAULT_TEMPLATE = (
    "{{ project }} #{{ run_number }} {{ status }} on {{ branch or commit_short }} "
    "({{ commit_short }} by {{ author }}) in {{ duration }}: {{ url }}"
)
MAX_TEMPLATE_LENGTH = 4000
MAX_RENDERED_LENGTH = 4000

VARIABLES = (
    "project",
    "run_number",
    "run_id",
    "status",
    "trigger",
    "event",
    "branch",
    "tag",
    "commit",
    "commit_short",
    "commit_message",
    "author",
    "duration",
    "duration_seconds",
    "url",
    "artifact_hash",
)


@cache
def _environment() -> SandboxedEnvironment:
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class TemplateInvalidError(InvalidInputError):
    code = "template_invalid"


class TemplateRenderError(Exception):
    """A template that parses failed to render (the sandbox's SecurityError included)."""


def check_template(template: str) -> None:
    """Raise TemplateInvalidError when `template` does not parse."""
    from jinja2 import TemplateError

    try:
        _environment().parse(template)
    except TemplateError as error:
        raise TemplateInvalidError(
            f"the notification template does not parse: {error}; it is a Jinja2 template "
            f"with the variables {', '.join(VARIABLES)}",
            detail={"field": "template"},
        ) from error


def render(template: str | None, context: dict[str, Any]) -> str:
    """The message text; raises TemplateRenderError saying what failed."""
    from jinja2 import TemplateError

    try:
        text = _environment().from_string(template or DEFAULT_TEMPLATE).render(**context)
    except TemplateError as error:
        raise TemplateRenderError(str(error)) from error
    return text[:MAX_RENDERED_LENGTH]
