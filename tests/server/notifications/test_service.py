"""Notifications and commit statuses delivered to real receivers on 127.0.0.1 (they play
Discord, the webhook target and the forge API; the only thing faked) and to a real
SMTP server (aiosmtpd), on both databases."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.db.engine import create_session_factory
from conveyor.server.models import DeliveryStatus, NotificationDelivery, NotificationTrigger
from conveyor.server.models.project import Project
from conveyor.server.notifications import service
from conveyor.server.notifications.repository import NotificationRepository
from conveyor.server.notifications.schemas import ForgeLinkPut, HookCreate
from conveyor.server.notifications.tasks import RunChange, queue_for_changes
from conveyor.server.users.authorization import Actor
from tests.server.projects.factories import add_project
from tests.server.receivers import DISCORD_SAVED, FORGE_CREATED, SLACK_OK, Answer, receiver
from tests.server.runs.factories import add_run

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ADMIN = Actor(user_id=None, name="root", is_admin=True, is_service=True)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        agents=0,
        outbound_allow=["127.0.0.1"],
        public_base_url="https://ci.example.test",
        notification_retry_seconds=30,
        notification_attempts=2,
        secret_key="test-key-for-notifications",
    )


@pytest.fixture
def project(db_session: Session) -> Project:
    return add_project(db_session, "demo")


def _hook(db_session: Session, settings: Settings, **fields: object) -> int:
    hook = service.create_hook(db_session, settings, ADMIN, "demo", HookCreate(**fields))
    db_session.commit()
    return hook.id


def _queue(
    factory: sessionmaker[Session], settings: Settings, run_id: int, status: Status
) -> list[int]:
    with factory() as session:
        created = service.queue_for_run_status(session, settings, run_id, status, T0)
        session.commit()
        return created


def _delivery(factory: sessionmaker[Session], delivery_id: int) -> NotificationDelivery:
    with factory() as session:
        delivery = session.get(NotificationDelivery, delivery_id)
        assert delivery is not None
        session.expunge(delivery)
        return delivery


class TestTriggersFor:
    def test_success_after_failure_is_fixed_and_failure_after_success_is_broken(self) -> None:
        assert service.triggers_for(Status.SUCCESS, Status.FAILURE)[0] is NotificationTrigger.FIXED
        assert service.triggers_for(Status.FAILURE, Status.SUCCESS)[0] is NotificationTrigger.BROKEN
        assert service.triggers_for(Status.FAILURE, None)[0] is NotificationTrigger.FAILED
        assert service.triggers_for(Status.RUNNING, None) == [NotificationTrigger.STARTED]
        assert service.triggers_for(Status.CANCELLED, None) == [NotificationTrigger.FINISHED]


class TestWebhookDelivery:
    def test_signed_body_reaches_the_receiver_and_delivery_is_sent(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver() as target:
            _hook(
                db_session,
                settings,
                kind="webhook",
                target=target.url + "/in",
                secret="s3cret-value",
                triggers=["failed"],
            )
            run = add_run(db_session, project, 1, status=Status.FAILURE)
            (delivery_id,) = _queue(factory, settings, run.id, Status.FAILURE)
            assert _queue(factory, settings, run.id, Status.FAILURE) == []  # once per run
            assert service.deliver_due(factory, settings, T0) == [delivery_id]
            (request,) = target.requests
        assert request.path == "/in"
        expected = "sha256=" + hmac.new(b"s3cret-value", request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-conveyor-signature"] == expected
        assert request.headers["x-conveyor-event"] == "failed"
        body = json.loads(request.body)
        assert (body["project"], body["run_number"], body["status"]) == ("demo", 1, "failure")
        assert body["url"] == f"https://ci.example.test/runs/{run.id}"
        assert body["commit"] == f"{1:040x}"
        delivery = _delivery(factory, delivery_id)
        assert (delivery.status, delivery.response_code, delivery.attempts) == (
            DeliveryStatus.SENT,
            200,
            1,
        )

    def test_failing_receiver_is_retried_with_back_off_then_recorded_failed(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver(statuses=[500, 503]) as target:
            _hook(db_session, settings, kind="webhook", target=target.url, triggers=["finished"])
            run = add_run(db_session, project, 1, status=Status.SUCCESS)
            (delivery_id,) = _queue(factory, settings, run.id, Status.SUCCESS)
            service.deliver_due(factory, settings, T0)
            first = _delivery(factory, delivery_id)
            assert (first.status, first.attempts, first.response_code) == (
                DeliveryStatus.QUEUED,
                1,
                500,
            )
            assert first.next_attempt_at == T0 + timedelta(seconds=30)
            assert service.deliver_due(factory, settings, T0 + timedelta(seconds=10)) == []
            service.deliver_due(factory, settings, T0 + timedelta(seconds=30))
            assert len(target.requests) == 2
        last = _delivery(factory, delivery_id)
        assert (last.status, last.attempts, last.response_code) == (DeliveryStatus.FAILED, 2, 503)
        assert last.error and "503" in last.error

    def test_hook_to_loopback_without_allow_list_fails_without_sending(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        closed = settings.model_copy(update={"outbound_allow": [], "notification_attempts": 1})
        with receiver() as target:
            _hook(db_session, closed, kind="slack", target=target.url, triggers=["failed"])
            run = add_run(db_session, project, 1, status=Status.FAILURE)
            (delivery_id,) = _queue(factory, closed, run.id, Status.FAILURE)
            service.deliver_due(factory, closed, T0)
            assert target.requests == []
        delivery = _delivery(factory, delivery_id)
        assert delivery.status is DeliveryStatus.FAILED and "refused" in (delivery.error or "")


class TestDiscordDelivery:
    def test_execute_webhook_body_has_content_username_embeds_and_no_mentions(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver(answer=DISCORD_SAVED) as target:
            _hook(
                db_session,
                settings,
                kind="discord",
                target=target.url + "/api/webhooks/1/t0ken",
                triggers=["started"],
                username="Build Bot",
                template="{{ project }} #{{ run_number }} is {{ status }} on {{ branch }}",
            )
            run = add_run(db_session, project, 7, status=Status.RUNNING)
            (delivery_id,) = _queue(factory, settings, run.id, Status.RUNNING)
            service.deliver_due(factory, settings, T0)
            (request,) = target.requests
        assert (request.method, request.route) == ("POST", "/api/webhooks/1/t0ken")
        assert request.query == {"wait": ["true"]}
        assert request.headers["content-type"] == "application/json"
        assert "authorization" not in request.headers
        body = request.json()
        assert set(body) == {"content", "username", "embeds", "allowed_mentions"}
        assert body["content"] == "demo #7 is running on main"
        assert body["username"] == "Build Bot"
        assert body["allowed_mentions"] == {"parse": []}
        (embed,) = body["embeds"]
        assert set(embed) == {"title", "description", "url", "color", "fields"}
        assert embed["title"] == "demo #7"
        assert embed["url"] == f"https://ci.example.test/runs/{run.id}"
        assert isinstance(embed["color"], int)
        assert all(set(f) == {"name", "value", "inline"} for f in embed["fields"])
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert fields["Status"] == "running" and fields["Branch"] == "main"
        assert fields["Author"] == "Ada Tester <ada@example.test>"
        delivery = _delivery(factory, delivery_id)
        assert (delivery.status, delivery.response_code) == (DeliveryStatus.SENT, 200)

    def test_long_texts_are_cut_to_discord_limits(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver(answer=DISCORD_SAVED) as target:
            _hook(
                db_session,
                settings,
                kind="discord",
                target=target.url + "/api/webhooks/1/t?thread_id=9",
                triggers=["failed"],
                template="{{ 'x' * 5000 }}",
            )
            run = add_run(db_session, project, 1, status=Status.FAILURE)
            run.commit_message = "m" * 9000
            db_session.commit()
            _queue(factory, settings, run.id, Status.FAILURE)
            service.deliver_due(factory, settings, T0)
            (request,) = target.requests
        assert request.query == {"thread_id": ["9"], "wait": ["true"]}
        body = request.json()
        assert len(body["content"]) == 2000
        (embed,) = body["embeds"]
        total = len(embed["title"]) + len(embed["description"])
        total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
        assert len(embed["description"]) <= 4096 and total <= 6000


class TestSlackDelivery:
    def test_incoming_webhook_body_is_text_and_one_section_block(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver(answer=SLACK_OK) as target:
            _hook(
                db_session,
                settings,
                kind="slack",
                target=target.url + "/services/T0/B0/x",
                triggers=["failed"],
                template="*{{ project }}* #{{ run_number }} {{ status }}",
            )
            run = add_run(db_session, project, 4, status=Status.FAILURE)
            (delivery_id,) = _queue(factory, settings, run.id, Status.FAILURE)
            service.deliver_due(factory, settings, T0)
            (request,) = target.requests
        assert (request.method, request.path) == ("POST", "/services/T0/B0/x")
        assert request.headers["content-type"] == "application/json"
        body = request.json()
        assert body == {
            "text": "*demo* #4 failure",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*demo* #4 failure"}}
            ],
        }
        delivery = _delivery(factory, delivery_id)
        assert (delivery.status, delivery.response_code) == (DeliveryStatus.SENT, 200)

    def test_slack_refusal_reason_is_recorded(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        refusal = Answer(404, b"channel_not_found")
        once = settings.model_copy(update={"notification_attempts": 1})
        with receiver(answer=refusal) as target:
            _hook(db_session, once, kind="slack", target=target.url, triggers=["failed"])
            run = add_run(db_session, project, 1, status=Status.FAILURE)
            (delivery_id,) = _queue(factory, once, run.id, Status.FAILURE)
            service.deliver_due(factory, once, T0)
        delivery = _delivery(factory, delivery_id)
        assert (delivery.status, delivery.response_code) == (DeliveryStatus.FAILED, 404)
        assert "channel_not_found" in (delivery.error or "")


class TestTemplateSandbox:
    def test_template_reaching_python_internals_fails_the_delivery(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver() as target:
            _hook(
                db_session,
                settings,
                kind="slack",
                target=target.url,
                triggers=["failed"],
                template="{{ project.__class__.__mro__[1].__subclasses__() }}",
            )
            run = add_run(db_session, project, 1, status=Status.FAILURE)
            (delivery_id,) = _queue(factory, settings, run.id, Status.FAILURE)
            service.deliver_due(factory, settings, T0)
            assert target.requests == []
        delivery = _delivery(factory, delivery_id)
        assert delivery.error and "unsafe" in delivery.error


class RecordingHandler(Message):
    """aiosmtpd's message handler, keeping each message it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[EmailMessage] = []

    def handle_message(self, message: EmailMessage) -> None:  # type: ignore[override]
        self.received.append(message)


@pytest.fixture
def smtp_server() -> Iterator[Controller]:
    handler = RecordingHandler()
    with socket.socket() as probe:  # a free port: aiosmtpd's start() cannot use port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    controller.received = handler.received  # type: ignore[attr-defined]
    try:
        yield controller
    finally:
        controller.stop()


class TestEmailDelivery:
    def test_mail_reaches_the_smtp_server(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
        smtp_server: Controller,
    ) -> None:
        port = smtp_server.port
        mail = settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "ci@example.test"}
        )
        _hook(
            db_session,
            mail,
            kind="email",
            target="ada@example.test, bob@example.test",
            triggers=["failed"],
        )
        run = add_run(db_session, project, 3, status=Status.FAILURE)
        (delivery_id,) = _queue(factory, mail, run.id, Status.FAILURE)
        service.deliver_due(factory, mail, T0)
        (message,) = smtp_server.received  # type: ignore[attr-defined]
        assert message["Subject"] == "[demo] run #3 failure"
        assert message["From"] == "ci@example.test"
        assert "bob@example.test" in message["To"]
        assert "demo #3 failure" in message.get_payload()
        assert _delivery(factory, delivery_id).status is DeliveryStatus.SENT


@dataclass(frozen=True)
class ForgeApi:
    """What one forge's API reference asks of a commit-status call (see the sources in
    conveyor/server/forges/reporters.py); the receiver plays the forge."""

    route: str
    headers: dict[str, str]
    body_fields: set[str]
    running: str
    failed: str
    cancelled: str
    label_field: str
    link_field: str


SHA = f"{1:040x}"
FORGE_APIS = {
    "github": ForgeApi(
        route=f"/repos/acme/app/statuses/{SHA}",
        headers={
            "authorization": "Bearer tok",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        },
        body_fields={"state", "target_url", "description", "context"},
        running="pending",
        failed="failure",
        cancelled="error",
        label_field="context",
        link_field="target_url",
    ),
    "gitea": ForgeApi(
        route=f"/repos/acme/app/statuses/{SHA}",
        headers={"authorization": "token tok"},
        body_fields={"state", "target_url", "description", "context"},
        running="pending",
        failed="failure",
        cancelled="error",
        label_field="context",
        link_field="target_url",
    ),
    "gitlab": ForgeApi(
        route=f"/projects/acme%2Fapp/statuses/{SHA}",
        headers={"private-token": "tok"},
        body_fields={"state", "ref", "name", "target_url", "description"},
        running="running",
        failed="failed",
        cancelled="canceled",
        label_field="name",
        link_field="target_url",
    ),
    "bitbucket": ForgeApi(
        route=f"/2.0/repositories/acme/app/commit/{SHA}/statuses/build",
        headers={"authorization": "Bearer tok"},
        body_fields={"key", "state", "url", "name", "description", "refname"},
        running="INPROGRESS",
        failed="FAILED",
        cancelled="STOPPED",
        label_field="key",
        link_field="url",
    ),
}


class TestCommitStatus:
    def _link(
        self, db_session: Session, settings: Settings, kind: str, api: str, repository: str
    ) -> None:
        body = ForgeLinkPut(kind=kind, api_base_url=api, repository=repository, token="tok")
        service.put_forge_link(db_session, settings, ADMIN, "demo", body)
        db_session.commit()

    @pytest.mark.parametrize("kind", sorted(FORGE_APIS))
    def test_start_and_failure_are_posted_as_the_forge_api_documents(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
        kind: str,
    ) -> None:
        expected = FORGE_APIS[kind]
        with receiver(answer=FORGE_CREATED) as forge:
            self._link(db_session, settings, kind, forge.url, "acme/app")
            run = add_run(db_session, project, 1, status=Status.RUNNING)
            (started_id,) = _queue(factory, settings, run.id, Status.RUNNING)
            service.deliver_due(factory, settings, T0)
            (ended_id,) = _queue(factory, settings, run.id, Status.FAILURE)
            service.deliver_due(factory, settings, T0)
            started, ended = forge.requests
        for request in (started, ended):
            assert (request.method, request.path) == ("POST", expected.route)
            assert request.headers["content-type"] == "application/json"
            for name, value in expected.headers.items():
                assert request.headers[name] == value, name
            if kind == "gitlab":
                assert "authorization" not in request.headers
            body = request.json()
            assert set(body) == expected.body_fields
            assert body[expected.label_field] == "conveyor"
            assert body[expected.link_field] == f"https://ci.example.test/runs/{run.id}"
            assert body.get("ref", body.get("refname", "main")) == "main"
        assert (started.json()["state"], ended.json()["state"]) == (
            expected.running,
            expected.failed,
        )
        assert "#1" in started.json()["description"]
        for delivery_id in (started_id, ended_id):
            delivery = _delivery(factory, delivery_id)
            assert (delivery.status, delivery.response_code) == (DeliveryStatus.SENT, 201)

    @pytest.mark.parametrize("kind", sorted(FORGE_APIS))
    def test_cancelled_run_gets_the_forge_state_closest_to_cancelled(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
        kind: str,
    ) -> None:
        with receiver(answer=FORGE_CREATED) as forge:
            self._link(db_session, settings, kind, forge.url, "acme/app")
            run = add_run(db_session, project, 1, status=Status.CANCELLED)
            _queue(factory, settings, run.id, Status.CANCELLED)
            service.deliver_due(factory, settings, T0)
            (request,) = forge.requests
        assert request.json()["state"] == FORGE_APIS[kind].cancelled

    def test_gitlab_project_path_with_subgroups_is_one_encoded_segment(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver(answer=FORGE_CREATED) as forge:
            self._link(db_session, settings, "gitlab", forge.url + "/api/v4", "acme/tools/app")
            run = add_run(db_session, project, 1, status=Status.SUCCESS)
            _queue(factory, settings, run.id, Status.SUCCESS)
            service.deliver_due(factory, settings, T0)
            (request,) = forge.requests
        assert request.path == f"/api/v4/projects/acme%2Ftools%2Fapp/statuses/{SHA}"
        assert request.json()["state"] == "success"

    def test_forge_refusing_the_token_is_retried_then_recorded_failed(
        self,
        factory: sessionmaker[Session],
        db_session: Session,
        settings: Settings,
        project: Project,
    ) -> None:
        with receiver(statuses=[401, 401]) as forge:
            self._link(db_session, settings, "github", forge.url, "acme/app")
            run = add_run(db_session, project, 1, status=Status.SUCCESS)
            (delivery_id,) = _queue(factory, settings, run.id, Status.SUCCESS)
            service.deliver_due(factory, settings, T0)
            service.deliver_due(factory, settings, T0 + timedelta(seconds=30))
            assert len(forge.requests) == 2
        delivery = _delivery(factory, delivery_id)
        assert (delivery.status, delivery.response_code, delivery.attempts) == (
            DeliveryStatus.FAILED,
            401,
            2,
        )


class TestQueueForChanges:
    """The run-event subscriber's work for a burst of events (notifications.tasks)."""

    def test_only_runs_of_projects_that_notify_get_deliveries(
        self,
        db_session: Session,
        factory: sessionmaker[Session],
        migrated_engine: Engine,
        settings: Settings,
        project: Project,
    ) -> None:
        quiet = add_project(db_session, "quiet")
        _hook(
            db_session,
            settings,
            kind="webhook",
            target="http://127.0.0.1:9/hook",
            triggers=["started", "succeeded"],
        )
        noisy_run = add_run(db_session, project, 1, status=Status.SUCCESS)
        quiet_run = add_run(db_session, quiet, 1, status=Status.SUCCESS)
        db_session.commit()
        read_factory = create_session_factory(
            migrated_engine.execution_options(**dialect.read_transaction_options(migrated_engine))
        )
        with read_factory() as session:
            assert NotificationRepository(session).notifying([project.id, quiet.id]) == {project.id}
        changes = [
            RunChange(noisy_run.id, Status.RUNNING, project.id),
            RunChange(quiet_run.id, Status.RUNNING, quiet.id),
            RunChange(noisy_run.id, Status.SUCCESS, project.id),
            RunChange(quiet_run.id, Status.SUCCESS, quiet.id),
        ]

        asked = {project.id, quiet.id}
        created, notifying = queue_for_changes(
            factory, read_factory, settings, changes, lambda: T0, asked
        )

        assert notifying == {project.id}
        deliveries = [_delivery(factory, delivery_id) for delivery_id in created]
        assert sorted((d.run_id, d.trigger) for d in deliveries) == [
            (noisy_run.id, "started"),
            (noisy_run.id, "succeeded"),
        ]
        # Again, with the projects known: one delivery per run and trigger, whatever
        # the events repeat.
        again = queue_for_changes(factory, read_factory, settings, changes[::2], lambda: T0, set())
        assert again == ([], set())
