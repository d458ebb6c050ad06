"""The UI's pages: sign-in, dashboard, projects, runs, agents and users.

Pages read through the same services as the JSON API, so they show exactly what the
API allows; every change is a POST form checked for its CSRF token (`posted_form`) and
answered with a redirect. Errors render as pages (`PageRoute`).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from conveyor.protocol.status import Status
from conveyor.server.agents import service as agents_service
from conveyor.server.artifacts import service as artifacts_service
from conveyor.server.audit import service as audit
from conveyor.server.db.base import utcnow
from conveyor.server.deps import (
    AppSettings,
    DbSession,
    RequestActor,
    Signer,
    WriterDbSession,
    remote_address,
)
from conveyor.server.errors import (
    InvalidInputError,
    NotAuthenticatedError,
    PermissionDeniedError,
)
from conveyor.server.models.membership import Role
from conveyor.server.models.notification_hook import HookKind, NotificationTrigger
from conveyor.server.models.project import Visibility
from conveyor.server.models.user import User
from conveyor.server.notifications import service as notifications_service
from conveyor.server.notifications.schemas import HookCreate
from conveyor.server.projects import service as projects_service
from conveyor.server.projects.repository import ProjectRepository
from conveyor.server.projects.schemas import ProjectCreate, ProjectUpdate
from conveyor.server.runs import history
from conveyor.server.runs import service as runs_service
from conveyor.server.runs.repository import RunFilter
from conveyor.server.runs.schemas import TriggerRequest
from conveyor.server.secrets import service as secrets_service
from conveyor.server.triggers import service as triggers_service
from conveyor.server.triggers.schemas import ScheduleCreate
from conveyor.server.users import passwords
from conveyor.server.users import service as users_service
from conveyor.server.users.authorization import Action, Actor, authorize, require_admin
from conveyor.server.users.repository import MembershipRepository
from conveyor.server.users.routes import start_session
from conveyor.server.users.sessions import SESSION_COOKIE_NAME
from conveyor.server.web.rendering import (
    PageRoute,
    field,
    posted_form,
    redirect,
    render,
    safe_next,
)
from conveyor.server.webhooks import service as webhooks_service
from conveyor.server.webhooks.schemas import WebhookSettingsUpdate

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Form = Annotated[dict[str, list[str]], Depends(posted_form)]
TRIGGER_EVENT_MANUAL = "manual"
RECENT_RUNS = 25
RUNS_PER_PAGE = 30
BRANCH_SCAN_RUNS = 100


def _page_actor(request: Request, actor: RequestActor, session: DbSession) -> Actor:
    # The header shows who is signed in on every page.
    request.state.ui_user = None if actor.user_id is None else session.get(User, actor.user_id)
    return actor


PageActor = Annotated[Actor, Depends(_page_actor)]


def _signed_in(actor: Actor) -> Actor:
    if actor.is_anonymous:
        raise NotAuthenticatedError("sign in to see this page")
    return actor


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _audit(
    session: DbSession, request: Request, actor: Actor, action: str, kind: str, target: Any
) -> None:
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=action,
        target_type=kind,
        target_id=target,
        remote_address=remote_address(request),
    )


def _validated(model: type[Any], **values: Any) -> Any:
    """`model(**values)`, with pydantic's complaints turned into a readable error."""
    try:
        return model(**values)
    except ValidationError as error:
        problems = "; ".join(
            "{}: {}".format(".".join(str(part) for part in problem["loc"]), problem["msg"])
            for problem in error.errors()
        )
        raise InvalidInputError(f"the form is not valid ({problems})") from error


# --- sign-in ---------------------------------------------------------------------------


@router.get("/ui/sign-in")
def sign_in_page(request: Request, actor: PageActor, next: str = "/") -> Response:
    return render(request, "sign_in.html", {"next": safe_next(next), "failed": False})


@router.post("/ui/sign-in")
def sign_in(
    request: Request, form: Form, session: DbSession, settings: AppSettings, signer: Signer
) -> Response:
    target = safe_next(field(form, "next", "/"))
    try:
        user = users_service.authenticate_password(
            session, field(form, "name"), (form.get("password") or [""])[0]
        )
    except NotAuthenticatedError:
        request.state.ui_user = None
        return render(
            request,
            "sign_in.html",
            {"next": target, "failed": True, "name": field(form, "name")},
            status_code=401,
        )
    response = redirect(request, target)
    start_session(request, response, session, settings, signer, user)
    return response


@router.post("/ui/sign-out")
def sign_out(request: Request, form: Form, settings: AppSettings) -> Response:
    response = redirect(request, "/ui/sign-in")
    response.delete_cookie(
        SESSION_COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=settings.secure_cookies
    )
    return response


# --- dashboard -------------------------------------------------------------------------


@router.get("/")
def dashboard(
    request: Request, actor: PageActor, session: DbSession, settings: AppSettings
) -> Response:
    _signed_in(actor)
    tasks = runs_service.tasks(session, actor, RunFilter())
    waiting = agents_service.explain_waiting_runs(
        session, settings, [task.run_id for task in tasks.queued]
    )
    recent = runs_service.list_runs(session, actor, RunFilter(), page=1, per_page=RECENT_RUNS)
    projects = projects_service.list_projects(session, actor)
    latest: dict[str, Any] = {}
    for run in recent.items:
        latest.setdefault(run.project, run)
    return render(
        request,
        "dashboard.html",
        {
            "title": "Dashboard",
            "active": tasks.active,
            "queued": tasks.queued,
            "waiting": waiting,
            "projects": projects,
            "latest": latest,
            "recent": recent.items,
            "live": True,
        },
    )


# --- projects --------------------------------------------------------------------------


@router.get("/ui/projects/new")
def new_project_page(request: Request, actor: PageActor) -> Response:
    _signed_in(actor)
    return render(request, "project_new.html", {"title": "New project"})


@router.post("/ui/projects")
def create_project(
    request: Request, form: Form, actor: PageActor, session: DbSession, settings: AppSettings
) -> Response:
    git_url = field(form, "git_url")
    name = field(form, "name") or _name_from_url(git_url)
    spec = _validated(
        ProjectCreate,
        name=name,
        git_url=git_url,
        default_branch=field(form, "default_branch", "main") or "main",
        pipeline_path=field(form, "pipeline_path", ".conveyor.yml") or ".conveyor.yml",
        build_command=field(form, "build_command") or None,
    )
    project = projects_service.create_project(session, settings, actor, spec)
    _audit(session, request, actor, "project.create", "project", project.name)
    if field(form, "build_now") == "on":
        trigger = TriggerRequest(event=TRIGGER_EVENT_MANUAL)
        run = runs_service.trigger(session, settings, actor, project, trigger)
        _audit(session, request, actor, "run.trigger", "run", run.id)
        return redirect(request, f"/ui/runs/{run.id}", "Project created and its first run queued")
    return redirect(request, _project_path(project.name), "Project created")


def _name_from_url(git_url: str) -> str:
    tail = git_url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.removesuffix(".git")


def _project_path(name: str, tail: str = "") -> str:
    return f"/ui/projects/{quote(name, safe='')}{tail}"


@router.get("/ui/projects/{name}")
def project_page(
    request: Request,
    name: str,
    actor: PageActor,
    session: DbSession,
    status: Annotated[str, Query(max_length=32)] = "",
    branch: Annotated[str, Query(max_length=255)] = "",
    event: Annotated[str, Query(max_length=32)] = "",
    created_by: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    project = projects_service.get_project_for(session, actor, name, Action.READ)
    if status and status not in {member.value for member in Status}:
        raise InvalidInputError(f"there is no status {status!r}")
    run_filter = RunFilter(
        project=project.name,
        status=Status(status) if status else None,
        branch=branch or None,
        event=event or None,
        created_by=created_by or None,
    )
    runs = runs_service.list_runs(session, actor, run_filter, page=page, per_page=RUNS_PER_PAGE)
    scan = runs_service.list_runs(
        session, actor, RunFilter(project=project.name), page=1, per_page=BRANCH_SCAN_RUNS
    )
    branches: dict[str, Any] = {}
    for run in scan.items:
        if run.branch:
            branches.setdefault(run.branch, run)
    return render(
        request,
        "project.html",
        {
            "title": project.name,
            "project": project,
            "runs": runs,
            "branches": branches,
            "filters": {
                "status": status,
                "branch": branch,
                "event": event,
                "created_by": created_by,
            },
            "statuses": [member.value for member in Status],
            "may_trigger": _may(actor, project, Action.TRIGGER),
            "may_manage": _may(actor, project, Action.MANAGE),
            "pages": (runs.total + RUNS_PER_PAGE - 1) // RUNS_PER_PAGE,
        },
    )


def _may(actor: Actor, project: Any, action: Action) -> bool:
    try:
        authorize(actor, project, action)
    except (NotAuthenticatedError, PermissionDeniedError):
        return False
    return True


@router.post("/ui/projects/{name}/runs")
def trigger_run(
    request: Request,
    name: str,
    form: Form,
    actor: PageActor,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    project = projects_service.get_project(session, name)
    variables: dict[str, str] = {}
    for line in field(form, "variables").splitlines():
        if not line.strip():
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise InvalidInputError(
                f"variable line {line!r} has no '=': write one NAME=value per line"
            )
        variables[key.strip()] = value
    trigger = _validated(
        TriggerRequest,
        branch=field(form, "branch") or None,
        variables=variables,
        event=TRIGGER_EVENT_MANUAL,
    )
    run = runs_service.trigger(session, settings, actor, project, trigger)
    _audit(session, request, actor, "run.trigger", "run", run.id)
    return redirect(request, f"/ui/runs/{run.id}", f"Run #{run.number} queued")


@router.get("/ui/projects/{name}/settings")
def project_settings_page(
    request: Request,
    name: str,
    actor: PageActor,
    session: WriterDbSession,
    settings: AppSettings,
) -> Response:
    # A writer session: showing the webhook settings makes the secret the first time.
    project = projects_service.get_project_for(session, actor, name, Action.MANAGE)
    webhook = webhooks_service.describe_settings(
        session, settings, actor, project.name, _base_url(request)
    )
    return render(
        request,
        "project_settings.html",
        {
            "title": f"{project.name} settings",
            "project": project,
            "described": projects_service.describe(session, project),
            "secrets": secrets_service.list_secrets(session, actor, project.name),
            "members": projects_service.list_members(session, actor, project.name),
            "roles": [role.value for role in Role],
            "webhook": webhook,
            "badge_url": f"{_base_url(request)}/badge/{quote(project.name, safe='')}.svg",
            "visibilities": [member.value for member in Visibility],
            "schedules": triggers_service.list_schedules(session, actor, project.name),
            "hooks": notifications_service.list_hooks(session, actor, project.name),
            "hook_kinds": [member.value for member in HookKind],
            "hook_triggers": [
                member.value for member in NotificationTrigger if member != NotificationTrigger.TEST
            ],
        },
    )


@router.post("/ui/projects/{name}/settings")
def update_project_settings(
    request: Request,
    name: str,
    form: Form,
    actor: PageActor,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    concurrency = field(form, "concurrency_limit")
    changes = _validated(
        ProjectUpdate,
        git_url=field(form, "git_url") or None,
        default_branch=field(form, "default_branch") or None,
        pipeline_path=field(form, "pipeline_path") or None,
        branch_filter=field(form, "branch_filter"),
        build_command=field(form, "build_command") or None,
        visibility=field(form, "visibility") or None,
        concurrency_limit=int(concurrency) if concurrency.isdigit() else None,
    )
    project = projects_service.update_project(session, actor, name, changes)
    actors = [entry for entry in field(form, "webhook_actors").replace(",", "\n").splitlines()]
    webhooks_service.update_settings(
        session,
        settings,
        actor,
        project.name,
        WebhookSettingsUpdate(actors=actors),
        _base_url(request),
    )
    _audit(session, request, actor, "project.update", "project", project.name)
    return redirect(request, _project_path(project.name, "/settings"), "Settings saved")


@router.post("/ui/projects/{name}/secrets")
def put_secret(
    request: Request,
    name: str,
    form: Form,
    actor: PageActor,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    secret_name = field(form, "name")
    value = (form.get("value") or [""])[0]
    if field(form, "delete") == "yes":
        secrets_service.delete_secret(session, actor, name, secret_name)
        notice = f"Secret {secret_name} deleted"
    else:
        secrets_service.put_secret(session, settings, actor, name, secret_name, value)
        notice = f"Secret {secret_name} saved"
    _audit(session, request, actor, "secret.put", "project", name)
    return redirect(request, _project_path(name, "/settings"), notice)


@router.post("/ui/projects/{name}/members")
def set_member(
    request: Request, name: str, form: Form, actor: PageActor, session: DbSession
) -> Response:
    user_name = field(form, "user")
    role = field(form, "role")
    if role == "remove":
        projects_service.remove_member(session, actor, name, user_name)
        notice = f"{user_name} removed"
    else:
        if role not in {member.value for member in Role}:
            raise InvalidInputError(
                f"there is no role {role!r}; choose viewer, developer or maintainer"
            )
        projects_service.set_member(session, actor, name, user_name, Role(role))
        notice = f"{user_name} is now {role}"
    _audit(session, request, actor, "member.set", "project", name)
    return redirect(request, _project_path(name, "/settings"), notice)


@router.post("/ui/projects/{name}/schedules")
def change_schedules(
    request: Request,
    name: str,
    form: Form,
    actor: PageActor,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    remove = field(form, "delete")
    if remove:
        if not remove.isdigit():
            raise InvalidInputError(f"schedule id {remove!r} is not a number")
        triggers_service.delete_schedule(session, actor, name, int(remove))
        notice = "Schedule deleted"
    else:
        body = _validated(
            ScheduleCreate, cron=field(form, "cron"), branch=field(form, "branch") or None
        )
        triggers_service.create_schedule(session, settings, actor, name, body, utcnow())
        notice = "Schedule added"
    _audit(session, request, actor, "schedule.change", "project", name)
    return redirect(request, _project_path(name, "/settings"), notice)


@router.post("/ui/projects/{name}/notifications")
def change_notifications(
    request: Request,
    name: str,
    form: Form,
    actor: PageActor,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    action = field(form, "action")
    hook = field(form, "hook")
    if action in ("delete", "test") and not hook.isdigit():
        raise InvalidInputError(f"notification id {hook!r} is not a number")
    if action == "delete":
        notifications_service.delete_hook(session, actor, name, int(hook))
        notice = "Notification deleted"
    elif action == "test":
        delivery = notifications_service.send_test(
            session, settings, actor, name, int(hook), utcnow()
        )
        notice = (
            f"Test sent: {delivery.status}"
            + (f" (HTTP {delivery.response_code})" if delivery.response_code else "")
            + (f": {delivery.error}" if delivery.error else "")
        )
    else:
        body = _validated(
            HookCreate,
            kind=field(form, "kind"),
            target=field(form, "target"),
            triggers=form.get("triggers") or [],
        )
        notifications_service.create_hook(session, settings, actor, name, body)
        notice = "Notification added"
    _audit(session, request, actor, f"notification.{action or 'create'}", "project", name)
    return redirect(request, _project_path(name, "/settings"), notice)


# --- runs ------------------------------------------------------------------------------


@router.get("/ui/runs/{run_id}")
def run_page(
    request: Request, run_id: int, actor: PageActor, session: DbSession, settings: AppSettings
) -> Response:
    run, project = runs_service.get_run_for(session, actor, run_id, Action.READ)
    detail = runs_service.describe_run(session, run, project, settings=settings)
    artifacts = artifacts_service.run_artifacts(session, actor, run_id)
    return render(
        request,
        "run.html",
        {
            "title": f"{project.name} #{run.number}",
            "run": detail,
            "project": project,
            "artifacts": artifacts,
            "history": history.history_of(session, run),
            "may_change": _may(actor, project, Action.CANCEL),
        },
    )


@router.post("/ui/runs/{run_id}/cancel")
def cancel_run(
    request: Request, run_id: int, form: Form, actor: PageActor, session: DbSession
) -> Response:
    run = runs_service.cancel(session, actor, run_id)
    history.record_cancel(session, actor, run, remote_address=remote_address(request))
    return redirect(request, f"/ui/runs/{run.id}", "Run cancelled")


@router.post("/ui/runs/{run_id}/retry")
def retry_run(
    request: Request,
    run_id: int,
    form: Form,
    actor: PageActor,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    run = runs_service.retry(session, settings, actor, run_id)
    history.record_retry(session, actor, run_id, run, remote_address=remote_address(request))
    return redirect(request, f"/ui/runs/{run.id}", f"Run #{run.number} queued as a retry")


# --- agents and users (administrators) -------------------------------------------------


def _agent_rows(session: DbSession, settings: AppSettings, actor: Actor) -> list[Any]:
    return agents_service.describe_agents(
        session, settings, agents_service.list_agents(session, actor)
    )


@router.get("/ui/agents")
def agents_page(
    request: Request, actor: PageActor, session: DbSession, settings: AppSettings
) -> Response:
    agents = _agent_rows(session, settings, _signed_in(actor))
    return render(request, "agents.html", {"title": "Agents", "agents": agents, "token": None})


@router.post("/ui/agents")
def create_agent(
    request: Request, form: Form, actor: PageActor, session: DbSession, settings: AppSettings
) -> Response:
    agent, token = agents_service.create_agent(session, actor, field(form, "name"))
    _audit(session, request, actor, "agent.create", "agent", agent.id)
    agents = _agent_rows(session, settings, actor)
    # The token is shown once, on this response, never stored in clear.
    return render(
        request,
        "agents.html",
        {"title": "Agents", "agents": agents, "token": token, "created": agent.name},
        status_code=201,
    )


def _agent_row(session: DbSession, settings: AppSettings, actor: Actor, agent_id: int) -> Any:
    (row,) = agents_service.describe_agents(
        session, settings, [agents_service.get_agent(session, actor, agent_id)]
    )
    return row


@router.get("/ui/agents/{agent_id}/delete")
def delete_agent_page(
    request: Request, agent_id: int, actor: PageActor, session: DbSession, settings: AppSettings
) -> Response:
    """The confirm step of a delete (a page, since the UI runs no inline script)."""
    agent = _agent_row(session, settings, _signed_in(actor), agent_id)
    return render(
        request,
        "agent_delete.html",
        {"title": f"Delete agent {agent.name}", "agent": agent, "busy": agent.running_jobs > 0},
    )


@router.post("/ui/agents/{agent_id}/delete")
def delete_agent(
    request: Request,
    agent_id: int,
    form: Form,
    actor: PageActor,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """Delete an agent; one that holds jobs only with `force=yes`, which puts its
    running jobs back in the queue."""
    force = field(form, "force") == "yes"
    try:
        agent, requeued = agents_service.delete_agent(session, actor, agent_id, force=force)
    except agents_service.AgentBusyError as error:
        # It took work since the confirm page was shown: ask again, now with force.
        row = _agent_row(session, settings, actor, agent_id)
        return render(
            request,
            "agent_delete.html",
            {
                "title": f"Delete agent {row.name}",
                "agent": row,
                "busy": True,
                "refused": error.message,
            },
            status_code=409,
        )
    audit.record(
        session,
        actor_id=actor.user_id,
        actor_name=actor.name,
        action="agent.delete",
        target_type="agent",
        target_id=agent_id,
        remote_address=remote_address(request),
        detail={"name": agent.name, "force": force, "requeued_jobs": requeued},
    )
    notice = f"Agent {agent.name} deleted"
    if requeued:
        notice += f"; {len(requeued)} job(s) back in the queue"
    return redirect(request, "/ui/agents", notice)


@router.post("/ui/agents/{agent_id}/{change}")
def change_agent(
    request: Request, agent_id: int, change: str, form: Form, actor: PageActor, session: DbSession
) -> Response:
    """Disable (it finishes what it runs and takes no more) or enable an agent."""
    if change not in ("disable", "enable"):
        raise InvalidInputError(f"unknown change {change!r}; use disable or enable")
    agent = agents_service.set_enabled(session, actor, agent_id, enabled=change == "enable")
    _audit(session, request, actor, f"agent.{change}", "agent", agent.id)
    return redirect(request, "/ui/agents", f"Agent {agent.name} {change}d")


@router.get("/ui/users")
def users_page(request: Request, actor: PageActor, session: DbSession) -> Response:
    require_admin(_signed_in(actor), writing=False)
    return _users_render(request, session, None)


def _users_render(
    request: Request, session: DbSession, shown_password: tuple[str, str] | None
) -> Response:
    projects = ProjectRepository(session)
    memberships = MembershipRepository(session)
    rows = []
    for user in users_service.list_users(session):
        roles = memberships.roles_of_user(user.id)
        names = []
        for project_id, role in sorted(roles.items()):
            project = projects.get(project_id)
            if project is not None:
                names.append((project.name, role.value))
        rows.append((user, names))
    return render(
        request,
        "users.html",
        {
            "title": "Users",
            "rows": rows,
            "shown_password": shown_password,
            "roles": [role.value for role in Role],
        },
    )


@router.post("/ui/users")
def create_user(request: Request, form: Form, actor: PageActor, session: DbSession) -> Response:
    require_admin(actor, writing=True)
    given = (form.get("password") or [""])[0]
    password = given or passwords.generate_password()
    user = users_service.create_user(
        session, field(form, "name"), password, is_admin=field(form, "is_admin") == "on"
    )
    _audit(session, request, actor, "user.create", "user", user.id)
    return _users_render(request, session, None if given else (user.name, password))


@router.post("/ui/users/{name}")
def update_user(
    request: Request, name: str, form: Form, actor: PageActor, session: DbSession
) -> Response:
    require_admin(actor, writing=True)
    user = users_service.get_user_by_name(session, name)
    change = field(form, "change")
    shown = None
    if change == "reset_password":
        password = passwords.generate_password()
        users_service.update_user(user, password=password)
        shown = (user.name, password)
    elif change == "admin":
        users_service.update_user(user, is_admin=field(form, "is_admin") == "on")
    elif change == "membership":
        role = field(form, "role")
        project_name = field(form, "project")
        if role == "remove":
            projects_service.remove_member(session, actor, project_name, user.name)
        elif role in {member.value for member in Role}:
            projects_service.set_member(session, actor, project_name, user.name, Role(role))
        else:
            raise InvalidInputError(f"there is no role {role!r}")
    else:
        raise InvalidInputError(f"unknown change {change!r}")
    _audit(session, request, actor, f"user.{change}", "user", user.id)
    if shown is not None:
        return _users_render(request, session, shown)
    return redirect(request, "/ui/users", f"{user.name} updated")


@router.get("/ui/{unknown:path}")
def unknown_page(request: Request, unknown: str, actor: PageActor) -> Response:
    """Any other address under /ui/: a page saying so, not the API's JSON."""
    return render(
        request,
        "error.html",
        {"title": "No such page", "message": "There is no page at this address."},
        status_code=404,
    )
