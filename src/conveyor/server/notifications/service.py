"""Notification hooks, commit-status links, and the deliveries made for run events.

When a run changes status (`queue_for_run_status`), each enabled hook of its project
whose triggers match gets one delivery, and the project's forge link (if any) gets a
commit-status delivery. The most specific matching trigger names the delivery:

    running                         -> started
    success, warning                -> fixed (the branch's previous finished run had
                                       failed), else succeeded; and finished
    failure, error                  -> broken (the previous one succeeded), else failed;
                                       and finished
    cancelled, skipped              -> finished

`deliver_due` sends queued deliveries whose time has come; a delivery that fails is
retried after `notification_retry_seconds`, doubling each time, until
`notification_attempts` have been made, and then recorded as failed. Each delivery is
claimed with a conditional UPDATE first, so two server processes never send one twice.
The run's variables are captured when the delivery is queued (`context`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.protocol.status import Status
from conveyor.server import outbound
from conveyor.server.config import Settings
from conveyor.server.errors import ConveyorError, NotFoundError
from conveyor.server.events import Event, publish_after_commit
from conveyor.server.forges.reporters import REPORTERS, StatusReport
from conveyor.server.models.artifact import Artifact
from conveyor.server.models.forge_link import ForgeLink
from conveyor.server.models.job import Job
from conveyor.server.models.notification_delivery import (
    DeliveryChannel,
    DeliveryStatus,
    NotificationDelivery,
)
from conveyor.server.models.notification_hook import (
    NotificationHook,
    NotificationTrigger,
)
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.notifications import templates
from conveyor.server.notifications.repository import NotificationRepository
from conveyor.server.notifications.schemas import (
    ForgeLinkPut,
    HookCreate,
    HookRead,
    HookUpdate,
)
from conveyor.server.notifications.senders import (
    SENDERS,
    DeliveryFailedError,
    Outgoing,
    Transport,
)
from conveyor.server.projects import service as projects_service
from conveyor.server.secrets.cipher import SecretCipher
from conveyor.server.users.authorization import Action, Actor

if TYPE_CHECKING:
    import httpx

# httpx is imported where a call is made: it brings rich, click and pygments along
# (its command line), megabytes that a server which sends nothing need not hold.

logger = logging.getLogger("conveyor.server.notifications")

_ERROR_LIMIT = 2000
SUCCEEDED = frozenset({Status.SUCCESS, Status.WARNING})
FAILED = frozenset({Status.FAILURE, Status.ERROR})


class HookNotFoundError(NotFoundError):
    code = "notification_not_found"


class ForgeLinkNotFoundError(NotFoundError):
    code = "commit_status_not_configured"


def _cipher(settings: Settings) -> SecretCipher:
    return SecretCipher(settings.session_secret_key())


# --- hooks ---------------------------------------------------------------------------------


SETTINGS_TOPIC = "notification-settings"
"""Published (after commit) when a project's hooks or forge link change, so that the
run-event subscriber forgets which projects notify anybody (see `tasks`)."""


def _settings_changed(session: Session, project_id: int) -> None:
    publish_after_commit(
        session, Event(SETTINGS_TOPIC, "notifications.changed", {"project_id": project_id})
    )


def describe_hook(hook: NotificationHook) -> HookRead:
    return HookRead(
        id=hook.id,
        kind=hook.kind,
        target=hook.target,
        triggers=list(hook.triggers),
        template=hook.template,
        username=hook.username,
        has_secret=hook.secret_ciphertext is not None,
        enabled=hook.enabled,
        created_at=hook.created_at,
    )


def list_hooks(session: Session, actor: Actor, project_name: str) -> Sequence[NotificationHook]:
    # Hooks hold targets (webhook URLs carry tokens): maintainers only.
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    return NotificationRepository(session).hooks_of(project.id)


def _hook_of(session: Session, project: Project, hook_id: int) -> NotificationHook:
    hook = NotificationRepository(session).hook(project.id, hook_id)
    if hook is None:
        raise HookNotFoundError(
            f"project {project.name!r} has no notification {hook_id}; "
            f"GET /api/v1/projects/{project.name}/notifications lists them",
            detail={"project": project.name, "notification": hook_id},
        )
    return hook


def get_hook(session: Session, actor: Actor, project_name: str, hook_id: int) -> NotificationHook:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    return _hook_of(session, project, hook_id)


def create_hook(
    session: Session, settings: Settings, actor: Actor, project_name: str, body: HookCreate
) -> NotificationHook:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    if body.template is not None:
        templates.check_template(body.template)
    hook = NotificationHook(
        project_id=project.id,
        kind=body.kind,
        target=body.target,
        triggers=[str(t) for t in body.triggers],
        template=body.template,
        username=body.username,
        secret_ciphertext=_cipher(settings).encrypt(body.secret) if body.secret else None,
        enabled=body.enabled,
    )
    NotificationRepository(session).add(hook)
    _settings_changed(session, project.id)
    return hook


def update_hook(
    session: Session,
    settings: Settings,
    actor: Actor,
    project_name: str,
    hook_id: int,
    body: HookUpdate,
) -> NotificationHook:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    hook = _hook_of(session, project, hook_id)
    changes = body.model_dump(exclude_unset=True)
    if "template" in changes:
        if body.template is not None:
            templates.check_template(body.template)
        hook.template = body.template
    if body.target is not None:
        hook.target = body.target
    if body.triggers is not None:
        hook.triggers = [str(t) for t in body.triggers]
    if "username" in changes:
        hook.username = body.username
    if body.secret is not None:
        hook.secret_ciphertext = _cipher(settings).encrypt(body.secret)
    if body.enabled is not None:
        hook.enabled = body.enabled
    session.flush()
    _settings_changed(session, project.id)
    return hook


def delete_hook(session: Session, actor: Actor, project_name: str, hook_id: int) -> None:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    NotificationRepository(session).delete(_hook_of(session, project, hook_id))
    _settings_changed(session, project.id)


def list_deliveries(
    session: Session, actor: Actor, project_name: str, hook_id: int
) -> Sequence[NotificationDelivery]:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    hook = _hook_of(session, project, hook_id)
    return NotificationRepository(session).deliveries_of_hook(hook.id)


# --- forge link ----------------------------------------------------------------------------


def get_forge_link(session: Session, actor: Actor, project_name: str) -> ForgeLink:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    link = NotificationRepository(session).forge_link(project.id)
    if link is None:
        raise ForgeLinkNotFoundError(
            f"project {project.name!r} reports no commit statuses; set it up with "
            f"PUT /api/v1/projects/{project.name}/commit-status",
            detail={"project": project.name},
        )
    return link


def put_forge_link(
    session: Session, settings: Settings, actor: Actor, project_name: str, body: ForgeLinkPut
) -> ForgeLink:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    repository = NotificationRepository(session)
    link = repository.forge_link(project.id)
    ciphertext = _cipher(settings).encrypt(body.token)
    if link is None:
        link = ForgeLink(project_id=project.id, token_ciphertext=ciphertext)
        session.add(link)
    link.kind = body.kind
    link.api_base_url = body.api_base_url
    link.repository = body.repository
    link.context = body.context
    link.token_ciphertext = ciphertext
    session.flush()
    _settings_changed(session, project.id)
    return link


def delete_forge_link(session: Session, actor: Actor, project_name: str) -> None:
    link = get_forge_link(session, actor, project_name)
    NotificationRepository(session).delete(link)
    _settings_changed(session, link.project_id)


def list_commit_status_deliveries(
    session: Session, actor: Actor, project_name: str
) -> Sequence[NotificationDelivery]:
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    return NotificationRepository(session).commit_status_deliveries(project.id)


# --- run events -> deliveries --------------------------------------------------------------


def run_url(settings: Settings, run_id: int) -> str:
    return f"{settings.public_base_url.rstrip('/')}/runs/{run_id}"


def _duration_text(seconds: int | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {rest:02d}s"
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def run_context(
    session: Session, settings: Settings, project: Project, run: Run, status: str, trigger: str
) -> dict[str, Any]:
    """The template variables of `run` (plain values only: the sandbox sees nothing else)."""
    seconds: int | None = None
    if run.started_at is not None and run.finished_at is not None:
        seconds = int((run.finished_at - run.started_at).total_seconds())
    artifact_hash = session.scalar(
        select(Artifact.hash_value)
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.run_id == run.id)
        .order_by(Artifact.id)
        .limit(1)
    )
    return {
        "project": project.name,
        "run_number": run.number,
        "run_id": run.id,
        "status": status,
        "trigger": trigger,
        "event": run.event,
        "branch": run.branch or "",
        "tag": run.tag or "",
        "commit": run.commit_sha,
        "commit_short": run.commit_sha[:10],
        "commit_message": run.commit_message,
        "author": run.commit_author,
        "duration": _duration_text(seconds),
        "duration_seconds": seconds,
        "url": run_url(settings, run.id),
        "artifact_hash": artifact_hash or "",
    }


def triggers_for(status: Status, previous: Status | None) -> list[NotificationTrigger]:
    """The triggers a run's new status fires, most specific first."""
    if status is Status.RUNNING:
        return [NotificationTrigger.STARTED]
    if status in SUCCEEDED:
        fixed = [NotificationTrigger.FIXED] if previous in FAILED else []
        return [*fixed, NotificationTrigger.SUCCEEDED, NotificationTrigger.FINISHED]
    if status in FAILED:
        broken = [NotificationTrigger.BROKEN] if previous in SUCCEEDED else []
        return [*broken, NotificationTrigger.FAILED, NotificationTrigger.FINISHED]
    if status.finished:
        return [NotificationTrigger.FINISHED]
    return []


def queue_for_run_status(
    session: Session, settings: Settings, run_id: int, status: Status, now: datetime
) -> list[int]:
    """Queue the deliveries that `run_id` reaching `status` calls for; the ids of the
    new deliveries. Idempotent: a hook gets one delivery per run and trigger."""
    if status is not Status.RUNNING and not status.finished:
        return []  # queued, waiting: nothing to tell
    run = session.get(Run, run_id)
    project = session.get(Project, run.project_id) if run is not None else None
    if run is None or project is None:
        return []
    repository = NotificationRepository(session)
    hooks = repository.hooks_of(project.id, enabled_only=True)
    link = repository.forge_link(project.id)
    if not hooks and link is None:
        return []  # most projects: nothing to tell anyone, so no further queries
    fired = triggers_for(status, repository.previous_finished_status(run)) if hooks else []
    created: list[NotificationDelivery] = []
    for hook in hooks:
        chosen = next((t for t in fired if str(t) in hook.triggers), None)
        if chosen is None or repository.delivery_exists(
            DeliveryChannel.HOOK, hook.id, run.id, chosen
        ):
            continue
        created.append(
            NotificationDelivery(
                project_id=project.id,
                channel=DeliveryChannel.HOOK,
                hook_id=hook.id,
                run_id=run.id,
                trigger=str(chosen),
                context=run_context(session, settings, project, run, str(status), str(chosen)),
                next_attempt_at=now,
            )
        )
    commit_state = "pending" if status is Status.RUNNING else str(status)
    if (
        link is not None
        and (status is Status.RUNNING or status.finished)
        and not repository.delivery_exists(
            DeliveryChannel.COMMIT_STATUS, None, run.id, commit_state
        )
    ):
        created.append(
            NotificationDelivery(
                project_id=project.id,
                channel=DeliveryChannel.COMMIT_STATUS,
                hook_id=None,
                run_id=run.id,
                trigger=commit_state,
                context=run_context(session, settings, project, run, str(status), commit_state),
                next_attempt_at=now,
            )
        )
    for delivery in created:
        repository.add(delivery)
    return [delivery.id for delivery in created]


# --- sending -------------------------------------------------------------------------------

Send = Callable[["httpx.Client"], int | None]
"""One prepared attempt: everything read from the database already, so it runs with no
transaction open; returns the response code or raises DeliveryFailedError."""


def _prepare_hook(session: Session, settings: Settings, delivery: NotificationDelivery) -> Send:
    hook = session.get(NotificationHook, delivery.hook_id) if delivery.hook_id else None
    if hook is None:
        raise DeliveryFailedError("the notification was deleted")
    project = session.get(Project, hook.project_id)
    project_name = project.name if project else str(hook.project_id)
    secret = (
        _cipher(settings).decrypt(
            hook.secret_ciphertext, name="webhook secret", project=project_name
        )
        if hook.secret_ciphertext is not None
        else None
    )
    try:
        text = templates.render(hook.template, delivery.context)
    except templates.TemplateRenderError as error:
        # Includes the sandbox's SecurityError: the template tried to reach internals.
        raise DeliveryFailedError(f"the template cannot be rendered: {error}") from error
    outgoing = Outgoing(
        delivery_id=delivery.id,
        kind=hook.kind,
        target=hook.target,
        text=text,
        context=dict(delivery.context),
        username=hook.username,
        secret=secret,
    )
    sender = SENDERS[hook.kind]
    return lambda client: sender.send(outgoing, Transport(client, settings))


def _prepare_commit_status(
    session: Session, settings: Settings, delivery: NotificationDelivery
) -> Send:
    link = session.get(ForgeLink, delivery.project_id)
    if link is None:
        raise DeliveryFailedError("the project no longer reports commit statuses")
    project = session.get(Project, link.project_id)
    token = _cipher(settings).decrypt(
        link.token_ciphertext, name="forge token", project=project.name if project else "?"
    )
    context = delivery.context
    status = str(context.get("status", "pending"))
    description = {
        "running": "the run is in progress",
        "queued": "the run is waiting",
    }.get(status, f"the run ended: {status}")
    report = StatusReport(
        sha=str(context["commit"]),
        run_status=status,
        target_url=str(context.get("url", "")),
        description=f"Conveyor #{context.get('run_number')}: {description}",
        context=link.context,
        branch=str(context.get("branch") or "") or None,
        tag=str(context.get("tag") or "") or None,
    )
    request = REPORTERS[link.kind].request(link.api_base_url, link.repository, token, report)

    def send(client: httpx.Client) -> int | None:
        import httpx

        try:
            response = outbound.send(
                client,
                request.method,
                request.url,
                settings,
                json=request.body,
                headers=request.headers,
            )
        except httpx.HTTPError as error:
            raise DeliveryFailedError(f"{request.method} {request.url} failed: {error}") from error
        if not response.is_success:
            raise DeliveryFailedError(
                f"{request.method} {request.url} answered {response.status_code}: "
                f"{response.text[:300]}",
                response.status_code,
            )
        return response.status_code

    return send


def prepare(session: Session, settings: Settings, delivery: NotificationDelivery) -> Send:
    """Read what an attempt at `delivery` needs; raises DeliveryFailedError (or a
    ConveyorError such as an unreadable secret) when it cannot be made at all."""
    if delivery.channel is DeliveryChannel.HOOK:
        return _prepare_hook(session, settings, delivery)
    return _prepare_commit_status(session, settings, delivery)


def run_attempt(send: Send, client: httpx.Client) -> tuple[int | None, str | None]:
    """Make the attempt: (response code, None) on success, (code, error) otherwise."""
    try:
        return send(client), None
    except DeliveryFailedError as error:
        return error.response_code, str(error)
    except ConveyorError as error:  # outbound refusals
        return None, error.message


def record_attempt(
    settings: Settings,
    delivery: NotificationDelivery,
    response_code: int | None,
    error: str | None,
    now: datetime,
    *,
    attempts_allowed: int | None = None,
) -> None:
    """Write one attempt's outcome: sent, a retry time with back-off, or failed."""
    allowed = attempts_allowed or settings.notification_attempts
    delivery.attempts += 1
    delivery.response_code = response_code
    if error is None:
        delivery.status = DeliveryStatus.SENT
        delivery.error = None
        delivery.next_attempt_at = None
        delivery.finished_at = now
        return
    delivery.error = error[:_ERROR_LIMIT]
    if delivery.attempts >= allowed:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        delivery.finished_at = now
    else:
        wait = settings.notification_retry_seconds * 2 ** (delivery.attempts - 1)
        delivery.next_attempt_at = now + timedelta(seconds=wait)


def outbound_client(settings: Settings) -> httpx.Client:
    import httpx

    return httpx.Client(timeout=settings.outbound_timeout_seconds, follow_redirects=False)


def _prepare_or_fail(
    session: Session, settings: Settings, delivery: NotificationDelivery
) -> tuple[Send | None, str | None]:
    try:
        return prepare(session, settings, delivery), None
    except (DeliveryFailedError, ConveyorError) as error:
        return None, str(error)


def deliver_due(factory: sessionmaker[Session], settings: Settings, now: datetime) -> list[int]:
    """One pass: attempt every delivery due at `now`; the ids attempted. No transaction
    is open while a receiver answers (on SQLite it would hold the write lock)."""
    with factory() as session:
        due = [
            (d.id, d.next_attempt_at) for d in NotificationRepository(session).due_deliveries(now)
        ]
    # A claim outlives one attempt, so a process that dies mid-send is retried later.
    claim_until = now + timedelta(seconds=settings.outbound_timeout_seconds * 3 + 30)
    attempted: list[int] = []
    if not due:
        return attempted  # most ticks: no client made, nothing imported
    with outbound_client(settings) as client:
        for delivery_id, due_at in due:
            assert due_at is not None  # the query asks for it
            with factory() as session:
                repository = NotificationRepository(session)
                claimed = repository.claim_delivery(delivery_id, due_at, claim_until)
                delivery = session.get(NotificationDelivery, delivery_id) if claimed else None
                send, problem = (
                    _prepare_or_fail(session, settings, delivery) if delivery else (None, None)
                )
                session.commit()
            if not claimed:
                continue
            code, error = run_attempt(send, client) if send is not None else (None, problem)
            with factory() as session:
                delivery = session.get(NotificationDelivery, delivery_id)
                if delivery is not None:
                    record_attempt(settings, delivery, code, error, now)
                session.commit()
            attempted.append(delivery_id)
    return attempted


def send_test(
    session: Session,
    settings: Settings,
    actor: Actor,
    project_name: str,
    hook_id: int,
    now: datetime,
) -> NotificationDelivery:
    """Send a test message through the hook now (one attempt, no retry), recorded as a
    delivery with trigger `test`. Commits what the session holds first, so no
    transaction stays open while the receiver answers."""
    project = projects_service.get_project_for(session, actor, project_name, Action.MANAGE)
    hook = _hook_of(session, project, hook_id)
    delivery = NotificationDelivery(
        project_id=project.id,
        channel=DeliveryChannel.HOOK,
        hook_id=hook.id,
        run_id=None,
        trigger=str(NotificationTrigger.TEST),
        context={
            "project": project.name,
            "run_number": 0,
            "run_id": 0,
            "status": "success",
            "trigger": "test",
            "event": "test",
            "branch": project.default_branch,
            "tag": "",
            "commit": "0" * 40,
            "commit_short": "0" * 10,
            "commit_message": "A test message from Conveyor",
            "author": actor.name,
            "duration": "0s",
            "duration_seconds": 0,
            "url": run_url(settings, 0),
            "artifact_hash": "",
        },
        next_attempt_at=None,
    )
    NotificationRepository(session).add(delivery)
    send, problem = _prepare_or_fail(session, settings, delivery)
    session.commit()
    if send is not None:
        with outbound_client(settings) as client:
            code, error = run_attempt(send, client)
    else:
        code, error = None, problem
    # One attempt only: a test tells at once whether the target works.
    record_attempt(settings, delivery, code, error, now, attempts_allowed=1)
    session.flush()
    return delivery
