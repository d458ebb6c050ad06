"""Inbound webhooks: verify, record, apply the project's rules, then make the run.

A delivery goes through two phases, so the forge gets its answer within a second:

1. `receive` (in the request): the signature is checked over the raw body, the
   delivery is recorded with its result (accepted, refused, duplicate, ignored) and
   answered. Nothing here runs git.
2. `resolve_commit` then `record_run` (after the answer, see `tasks.py`): the commit
   named by the payload is resolved in the project's mirror and the run is recorded
   with the payload's branch or tag, message, author and actor.

An accepted delivery keeps its parsed event (`pending_event`) until its run, or the
failure to make it, is recorded, so a server that stopped between the two phases makes
the run at its next start (`tasks.resume_unmade_runs`). Whoever records the run first
clears it, under a lock on the delivery's row: one delivery never makes two runs.

An unknown project and a bad signature get the same 401 (and take about the same
time), so nobody can learn which projects exist. Deliveries of a known project are
recorded whatever their fate, but a delivery id is kept only for signed deliveries, so
an unsigned request cannot spoil a real delivery's id. Functions flush; the caller
commits.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.agent.checkout import CommitInfo
from conveyor.pipeline import branch_matches
from conveyor.server.config import Settings
from conveyor.server.errors import InvalidInputError, NotAuthenticatedError
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.models.webhook_delivery import DeliveryResult, WebhookDelivery
from conveyor.server.projects import service as projects_service
from conveyor.server.projects.repository import ProjectRepository
from conveyor.server.runs import history, state
from conveyor.server.runs import service as runs_service
from conveyor.server.runs.schemas import TriggerRequest
from conveyor.server.secrets.cipher import SecretCipher, SecretUnreadableError
from conveyor.server.users.authorization import Action, Actor
from conveyor.server.webhooks import registry_hints
from conveyor.server.webhooks.providers import registry
from conveyor.server.webhooks.providers.base import (
    EventKind,
    ForgeEvent,
    PayloadError,
    Provider,
)
from conveyor.server.webhooks.repository import DeliveryRepository, superseded_runs
from conveyor.server.webhooks.schemas import (
    DeliveryAnswer,
    DeliveryPage,
    DeliveryRead,
    WebhookSettings,
    WebhookSettingsUpdate,
)

MAX_PER_PAGE = 100
REDACTED = "[redacted]"
SECRET_BYTES = 32
_SECRET_NAME = "webhook secret"  # noqa: S105  (a label for error messages)
# Verifying against this when there is no project (or no secret) keeps the time of a
# 401 the same whether or not the project exists.
_STAND_IN_SECRET = secrets.token_hex(SECRET_BYTES)


class WebhookNotAuthenticatedError(NotAuthenticatedError):
    code = "webhook_signature_invalid"

    def __init__(self) -> None:
        super().__init__(
            "the delivery is not signed with this project's webhook secret (or no such "
            "project exists); copy the URL and secret from GET "
            "/api/v1/projects/{name}/webhook into the forge's webhook settings"
        )


class WebhookPayloadError(InvalidInputError):
    code = "webhook_payload_invalid"


_EVENT_RECORD = TypeAdapter(ForgeEvent)


def encode_event(event: ForgeEvent) -> str:
    """`event` as the JSON kept in `WebhookDelivery.pending_event`."""
    return _EVENT_RECORD.dump_json(event).decode("utf-8")


def decode_event(encoded: str) -> ForgeEvent:
    """The event `encode_event` kept. Raises pydantic's ValidationError when it is not one."""
    return _EVENT_RECORD.validate_json(encoded)


# --- settings -----------------------------------------------------------------------------


def _cipher(settings: Settings) -> SecretCipher:
    return SecretCipher(settings.session_secret_key())


def webhook_secret(session: Session, settings: Settings, project: Project) -> str:
    """The project's webhook secret, made (and flushed) the first time it is asked for."""
    if project.webhook_secret_ciphertext is None:
        return _store_new_secret(session, settings, project)
    return _cipher(settings).decrypt(
        project.webhook_secret_ciphertext, name=_SECRET_NAME, project=project.name
    )


def _store_new_secret(session: Session, settings: Settings, project: Project) -> str:
    secret = secrets.token_hex(SECRET_BYTES)
    project.webhook_secret_ciphertext = _cipher(settings).encrypt(secret)
    session.flush()
    return secret


def describe_settings(
    session: Session, settings: Settings, actor: Actor, name: str, base_url: str
) -> WebhookSettings:
    """The webhook URL, secret and rules of project `name` (maintainers)."""
    project = projects_service.get_project_for(session, actor, name, Action.MANAGE)
    try:
        secret = webhook_secret(session, settings, project)
    except SecretUnreadableError:
        # The server's key changed: the old secret is lost either way; make a new one.
        secret = _store_new_secret(session, settings, project)
    return _settings_view(project, secret, base_url)


def rotate_secret(
    session: Session, settings: Settings, actor: Actor, name: str, base_url: str
) -> WebhookSettings:
    """A new webhook secret for project `name` (maintainers); the old one stops working."""
    project = projects_service.get_project_for(session, actor, name, Action.MANAGE)
    return _settings_view(project, _store_new_secret(session, settings, project), base_url)


def update_settings(
    session: Session,
    settings: Settings,
    actor: Actor,
    name: str,
    changes: WebhookSettingsUpdate,
    base_url: str,
) -> WebhookSettings:
    project = projects_service.get_project_for(session, actor, name, Action.MANAGE)
    if changes.actors is not None:
        actors = [entry.strip() for entry in changes.actors if entry.strip()]
        if any(len(entry) > 200 for entry in actors):
            raise InvalidInputError("a forge user name has at most 200 characters")
        project.webhook_actors = list(dict.fromkeys(actors))
    if changes.cancel_superseded is not None:
        project.cancel_superseded = changes.cancel_superseded
    session.flush()
    return describe_settings(session, settings, actor, name, base_url)


def _settings_view(project: Project, secret: str, base_url: str) -> WebhookSettings:
    base = base_url.rstrip("/")
    return WebhookSettings(
        url=f"{base}/hooks/{project.name}",
        secret=secret,
        actors=list(project.webhook_actors or []),
        cancel_superseded=project.cancel_superseded,
        providers=registry_hints.hints(base, project.name),
    )


def list_deliveries(
    session: Session, actor: Actor, name: str, *, page: int, per_page: int
) -> DeliveryPage:
    """The deliveries of project `name`, newest first (maintainers)."""
    project = projects_service.get_project_for(session, actor, name, Action.MANAGE)
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInputError(
            f"page must be 1 or more and per_page 1 to {MAX_PER_PAGE} "
            f"(got page={page}, per_page={per_page})"
        )
    rows, total = DeliveryRepository(session).page(
        project.id, offset=(page - 1) * per_page, limit=per_page
    )
    return DeliveryPage(
        items=[DeliveryRead.model_validate(row, from_attributes=True) for row in rows],
        page=page,
        per_page=per_page,
        total=total,
    )


# --- receiving ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    project_name: str
    provider_name: str | None
    """From the URL (`/hooks/<provider>/<project>`), or None to detect it."""
    headers: Mapping[str, str]
    """Lowercase names."""
    body: bytes


@dataclass(frozen=True)
class Reception:
    status_code: int
    """202 accepted, 200 anything else that was signed, 401 not signed."""
    answer: DeliveryAnswer
    event: ForgeEvent | None = None
    """For accepted deliveries: what to build (see `resolve_commit`)."""
    delivery_pk: int | None = None


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: REDACTED if name in registry.SIGNATURE_HEADERS else value
        for name, value in sorted(headers.items())
    }


def _provider_for(inbound: Inbound) -> Provider | None:
    if inbound.provider_name is not None:
        return registry.by_name(inbound.provider_name)
    return registry.detect(inbound.headers)


def receive(session: Session, settings: Settings, inbound: Inbound) -> Reception:
    """Verify and record one delivery, and decide what becomes of it."""
    project = ProjectRepository(session).get_by_name(inbound.project_name)
    provider = _provider_for(inbound)
    secret: str | None = None
    if project is not None and project.webhook_secret_ciphertext is not None:
        try:
            secret = webhook_secret(session, settings, project)
        except SecretUnreadableError:
            secret = None
    verifier = provider or registry.BY_NAME["generic"]
    signed = verifier.verify(inbound.headers, inbound.body, secret or _STAND_IN_SECRET)
    if project is None:
        return _unauthenticated()
    event_name = provider.event_name(inbound.headers) if provider else ""
    delivery = WebhookDelivery(
        project_id=project.id,
        provider=provider.name.value if provider else (inbound.provider_name or "unknown"),
        event=event_name[:100],
        headers=redact(inbound.headers),
        body_size=len(inbound.body),
        reason="",
    )
    if provider is None or secret is None or not signed:
        why = (
            "no forge recognised from the headers (use /hooks/<provider>/<project>)"
            if provider is None
            else "the project has no webhook secret yet (read it first)"
            if secret is None
            else "the signature is missing or does not match the webhook secret"
        )
        _finish(session, delivery, DeliveryResult.REFUSED, why)
        return _unauthenticated()

    deliveries = DeliveryRepository(session)
    delivery_id = provider.delivery_id(inbound.headers)
    if delivery_id is not None:
        delivery_id = delivery_id[:200]
        earlier = deliveries.find(project.id, provider.name.value, delivery_id)
        if earlier is not None:
            return _duplicate(session, delivery, earlier, delivery_id)
    try:
        event = provider.parse(event_name, _json_object(inbound.body))
    except PayloadError as error:
        delivery.delivery_id = delivery_id
        _finish(session, delivery, DeliveryResult.ERROR, str(error))
        return Reception(400, _answer(delivery))

    delivery.ref = event.ref
    delivery.commit_sha = event.sha
    delivery.actor = event.actor or None
    result, reason = _judge(project, event)
    delivery.delivery_id = delivery_id
    if result is DeliveryResult.ACCEPTED:
        delivery.pending_event = encode_event(event)
    try:
        with session.begin_nested():
            _finish(session, delivery, result, reason)
    except IntegrityError:
        # The same delivery arrived twice at once: the other request recorded it first.
        assert delivery_id is not None  # NULL ids never conflict
        session.expunge(delivery)
        earlier = deliveries.find(project.id, provider.name.value, delivery_id)
        assert earlier is not None
        retry = WebhookDelivery(
            project_id=delivery.project_id,
            provider=delivery.provider,
            event=delivery.event,
            headers=delivery.headers,
            body_size=delivery.body_size,
            reason="",
        )
        return _duplicate(session, retry, earlier, delivery_id)
    if result is DeliveryResult.ACCEPTED:
        return Reception(202, _answer(delivery), event, delivery.id)
    return Reception(200, _answer(delivery))


def _unauthenticated() -> Reception:
    return Reception(
        401, DeliveryAnswer(result=DeliveryResult.REFUSED, reason="not signed", delivery=None)
    )


def _duplicate(
    session: Session, delivery: WebhookDelivery, earlier: WebhookDelivery, delivery_id: str
) -> Reception:
    run = f", run id {earlier.run_id}" if earlier.run_id is not None else ""
    _finish(
        session,
        delivery,
        DeliveryResult.DUPLICATE,
        f"delivery {delivery_id!r} was already received at "
        f"{earlier.received_at.isoformat()} (delivery {earlier.id}: {earlier.result}{run})",
    )
    return Reception(200, _answer(delivery))


def _finish(
    session: Session, delivery: WebhookDelivery, result: DeliveryResult, reason: str
) -> None:
    delivery.result = result
    delivery.reason = reason
    DeliveryRepository(session).add(delivery)


def _answer(delivery: WebhookDelivery) -> DeliveryAnswer:
    return DeliveryAnswer(result=delivery.result, reason=delivery.reason, delivery=delivery.id)


def _json_object(body: bytes) -> dict[str, Any]:
    import json

    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise PayloadError(
            f"the body is not JSON ({error}); set the webhook's content type to application/json"
        ) from error
    if not isinstance(document, dict):
        raise PayloadError("the body is JSON but not an object")
    return document


def _actor_allowed(project: Project, actor: str) -> bool:
    allowed = project.webhook_actors or []
    if not allowed:
        return True
    # Forge user names are case-insensitive on GitHub, GitLab, Gitea and Bitbucket.
    return any(fnmatchcase(actor.casefold(), entry.casefold()) for entry in allowed)


def _judge(project: Project, event: ForgeEvent) -> tuple[DeliveryResult, str]:
    """The result of a signed delivery under the project's rules, and why."""
    if event.kind is EventKind.PING:
        return DeliveryResult.IGNORED, f"ping ({event.reason}): nothing to build"
    if event.kind is EventKind.NOTHING:
        return DeliveryResult.IGNORED, event.reason
    if not _actor_allowed(project, event.actor):
        return DeliveryResult.REFUSED, (
            f"forge user {event.actor or '(unknown)'!r} is not among the project's "
            f"authorized webhook actors ({', '.join(project.webhook_actors)}); a maintainer "
            "can add them (PATCH /api/v1/projects/{name}/webhook with actors)"
        )
    patterns = projects_service.branch_patterns(project.branch_filter)
    if event.branch is not None and patterns and not branch_matches(event.branch, patterns):
        return DeliveryResult.REFUSED, (
            f"branch {event.branch!r} is outside the project's branch filter "
            f"({project.branch_filter!r})"
        )
    what = f"{event.kind} of {event.ref!r}" if event.ref else str(event.kind)
    return DeliveryResult.ACCEPTED, f"{what} at {event.sha}"


# --- making the run -----------------------------------------------------------------------


def resolve_commit(
    settings: Settings, project: Project, event: ForgeEvent
) -> runs_service.ResolvedCommit:
    """Git work, outside any transaction: the commit the payload names (a short hash
    is resolved to the full sha) and the pipeline at it. The result carries the
    payload's ref, message and author, which win over git's when the payload has them.

    Raises the trigger's `RepositoryUnreachableError` and `RefNotFoundError`."""
    assert event.sha is not None  # accepted events name their commit
    resolved = runs_service.resolve_ref(settings, project, event.sha.lower())
    commit = CommitInfo(
        sha=resolved.commit.sha,
        branch=event.branch,
        tag=event.tag,
        message=event.message or resolved.commit.message,
        author=event.author or resolved.commit.author,
        author_name=resolved.commit.author_name,
        author_email=resolved.commit.author_email,
        committed_at=resolved.commit.committed_at,
    )
    return runs_service.ResolvedCommit(commit, resolved.pipeline, resolved.problem)


def record_run(
    session: Session,
    settings: Settings,
    project: Project,
    delivery: WebhookDelivery,
    event: ForgeEvent,
    resolved: runs_service.ResolvedCommit,
) -> Run:
    """Record the run of an accepted delivery (its jobs queued), link it to the
    delivery, and cancel the runs it supersedes when the project asks for that."""
    request = TriggerRequest(
        sha=resolved.commit.sha,
        event=str(event.kind),
        variables=dict(event.variables),
    )
    actor = Actor(user_id=None, name=(event.actor or delivery.provider)[:200])
    run = runs_service.record_run(
        session, settings, actor, project, request, resolved, event.branch
    )
    run.secrets_withheld = event.from_fork
    delivery.run_id = run.id
    delivery.pending_event = None
    if project.cancel_superseded and event.kind is EventKind.PUSH and event.branch:
        for older in superseded_runs(session, run):
            state.cancel_run(session, older)
            history.record_superseded(session, older, run)
    session.flush()
    return run


def record_failure(delivery: WebhookDelivery, problem: str) -> None:
    delivery.result = DeliveryResult.ERROR
    delivery.reason = f"{delivery.reason}; the run could not be made: {problem}"
    delivery.pending_event = None


def run_still_to_make(session: Session, delivery_pk: int) -> WebhookDelivery | None:
    """The delivery, locked until the transaction ends, if its run is still to be made;
    None when it is gone or someone else recorded its run (or its failure) first."""
    delivery = DeliveryRepository(session).lock(delivery_pk)
    if delivery is None or delivery.pending_event is None or delivery.run_id is not None:
        return None
    return delivery
