"""What a project's badge says.

`passing` / `failing` come from the last finished run on the branch (success or
warning passes; failure, error and cancelled fail); `running` when a run of that
branch is queued or running; `unknown` when there is no run, or when the caller may
not read the project. A private project (or one that does not exist) answers
`unknown` rather than 401/404: a badge is an image in a page, and the same answer for
"private" and "absent" tells an anonymous reader nothing about which projects exist.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.errors import ConveyorError
from conveyor.server.models.project import Project, Visibility
from conveyor.server.models.run import Run
from conveyor.server.projects.repository import ProjectRepository
from conveyor.server.users.authorization import Action, Actor, authorize


class BadgeState(StrEnum):
    PASSING = "passing"
    FAILING = "failing"
    RUNNING = "running"
    UNKNOWN = "unknown"


COLOURS = {
    BadgeState.PASSING: "#2ea043",
    BadgeState.FAILING: "#cf222e",
    BadgeState.RUNNING: "#0969da",
    BadgeState.UNKNOWN: "#9f9f9f",
}
PASSING = frozenset({Status.SUCCESS, Status.WARNING})
FAILING = frozenset({Status.FAILURE, Status.ERROR, Status.CANCELLED})


def _may_read(actor: Actor, project: Project) -> bool:
    if project.visibility is Visibility.PUBLIC:
        # Public projects show their badge to anyone: READMEs are read anonymously.
        return True
    try:
        authorize(actor, project, Action.READ)
    except ConveyorError:
        return False
    return True


def badge_state(
    session: Session, actor: Actor, project_name: str, branch: str | None
) -> BadgeState:
    project = ProjectRepository(session).get_by_name(project_name)
    if project is None or not _may_read(actor, project):
        return BadgeState.UNKNOWN
    branch = branch or project.default_branch
    active = session.scalar(
        select(Run.id)
        .where(
            Run.project_id == project.id,
            Run.branch == branch,
            Run.status.in_([Status.QUEUED, Status.RUNNING]),
        )
        .limit(1)
    )
    if active is not None:
        return BadgeState.RUNNING
    last = session.scalar(
        select(Run.status)
        .where(
            Run.project_id == project.id,
            Run.branch == branch,
            Run.status.in_(list(PASSING | FAILING)),
        )
        .order_by(Run.number.desc())
        .limit(1)
    )
    if last in PASSING:
        return BadgeState.PASSING
    if last in FAILING:
        return BadgeState.FAILING
    return BadgeState.UNKNOWN


def render_svg(state: BadgeState, label: str = "build") -> str:
    """A flat two-part badge (label | state), sized for its text (about 6.5 px a letter
    in 11 px Verdana)."""
    left = 10 + round(6.5 * len(label))
    right = 10 + round(6.5 * len(state.value))
    total = left + right
    colour = COLOURS[state]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{label}: {state.value}"><title>{label}: {state.value}</title>'
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,sans-serif" '
        'font-size="11">'
        f'<text x="{left / 2}" y="14">{label}</text>'
        f'<text x="{left + right / 2}" y="14">{state.value}</text></g></svg>'
    )
