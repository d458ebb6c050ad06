"""The notifications and commit-status API through a real server, on both databases.
`POST .../test` sends to a real receiver on 127.0.0.1 (playing the webhook target,
the only thing faked); the server's outbound allow list names 127.0.0.1 and nothing
else, so a link-local target is refused without being contacted."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.config import Settings
from conveyor.server.models import NotificationDelivery, NotificationHook, Role
from conveyor.server.models.forge_link import ForgeLink
from conveyor.server.models.notification_hook import HookKind
from conveyor.server.models.project import Project
from conveyor.server.users import service as users_service
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer
from tests.server.receivers import Receiver, receiver

HOOKS = "/api/v1/projects/demo/notifications"
COMMIT_STATUS = "/api/v1/projects/demo/commit-status"
PUBLIC_BASE_URL = "https://ci.example.test"


@pytest.fixture(scope="module")
def server_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The module's server: receivers on 127.0.0.1 may be called, nothing else private."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        agents=0,
        outbound_allow=["127.0.0.1"],
        public_base_url=PUBLIC_BASE_URL,
        outbound_timeout_seconds=3,
    )


@pytest.fixture
def demo(db_session: Session) -> Project:
    return add_project(db_session, "demo")


@pytest.fixture
def maintainer(db_session: Session, demo: Project) -> dict[str, str]:
    mia = add_user(db_session, "mia")
    users_service.set_membership(db_session, mia, demo, Role.MAINTAINER)
    db_session.commit()
    return bearer(db_session, mia)


@pytest.fixture
def target() -> Iterator[Receiver]:
    with receiver() as started:
        yield started


def _create(http: httpx.Client, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = http.post(HOOKS, headers=headers, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def _problem_locations(response: httpx.Response) -> list[str]:
    detail = assert_error(response, 422, "invalid_input")["detail"]
    assert isinstance(detail, list)
    return [".".join(problem["location"]) for problem in detail]


class TestHookCrud:
    def test_create_read_update_delete(
        self, http: httpx.Client, db_session: Session, maintainer: dict[str, str]
    ) -> None:
        hook = _create(
            http,
            maintainer,
            kind="discord",
            target="https://discord.example/api/webhooks/1/t",
            triggers=["failed", "fixed", "failed"],
            username="Build Bot",
        )
        assert (hook["kind"], hook["triggers"], hook["has_secret"], hook["enabled"]) == (
            "discord",
            ["failed", "fixed"],
            False,
            True,
        )
        url = f"{HOOKS}/{hook['id']}"
        assert http.get(url, headers=maintainer).json() == hook
        assert [h["id"] for h in http.get(HOOKS, headers=maintainer).json()] == [hook["id"]]

        changed = http.patch(
            url,
            headers=maintainer,
            json={"triggers": ["finished"], "template": "{{ project }} {{ status }}"},
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["triggers"], changed.json()["template"]) == (
            ["finished"],
            "{{ project }} {{ status }}",
        )
        assert changed.json()["username"] == "Build Bot"  # untouched fields stay
        cleared = http.patch(url, headers=maintainer, json={"template": None, "enabled": False})
        assert (cleared.json()["template"], cleared.json()["enabled"]) == (None, False)

        assert http.delete(url, headers=maintainer).status_code == 204
        assert_error(http.get(url, headers=maintainer), 404, "notification_not_found")
        assert db_session.scalars(select(NotificationHook)).all() == []

    def test_webhook_secret_is_stored_encrypted_and_never_shown(
        self, http: httpx.Client, db_session: Session, maintainer: dict[str, str]
    ) -> None:
        created = http.post(
            HOOKS,
            headers=maintainer,
            json={
                "kind": "webhook",
                "target": "https://hooks.example/in",
                "secret": "s3cret-value",
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["has_secret"] is True
        assert "s3cret-value" not in created.text
        listed = http.get(HOOKS, headers=maintainer)
        assert "s3cret-value" not in listed.text
        stored = db_session.scalars(select(NotificationHook)).one()
        assert stored.secret_ciphertext is not None
        assert b"s3cret-value" not in stored.secret_ciphertext

    def test_hook_of_another_project_is_404(
        self, http: httpx.Client, db_session: Session, maintainer: dict[str, str]
    ) -> None:
        other_project = add_project(db_session, "other")
        db_session.add(
            NotificationHook(
                project_id=other_project.id,
                kind=HookKind.SLACK,
                target="https://hooks.example/x",
                triggers=["failed"],
            )
        )
        db_session.commit()
        other_id = db_session.scalars(select(NotificationHook.id)).one()
        assert_error(http.get(f"{HOOKS}/{other_id}", headers=maintainer), 404)
        assert_error(http.delete(f"{HOOKS}/{other_id}", headers=maintainer), 404)
        assert_error(http.post(f"{HOOKS}/{other_id}/test", headers=maintainer), 404)


class TestHookInput:
    @pytest.mark.parametrize(
        ("body", "location"),
        [
            ({"kind": "pager", "target": "https://x.example/"}, "body.kind"),
            ({"kind": "slack"}, "body.target"),
            ({"kind": "slack", "target": "ftp://x.example/"}, "body"),
            ({"kind": "email", "target": "not an address"}, "body"),
            ({"kind": "slack", "target": "https://x.example/", "triggers": ["sometimes"]}, "body"),
            ({"kind": "slack", "target": "https://x.example/", "triggers": ["test"]}, "body"),
            ({"kind": "discord", "target": "https://x.example/", "secret": "long-enough"}, "body"),
            ({"kind": "webhook", "target": "https://x.example/", "secret": "short"}, "body"),
            ({"kind": "slack", "target": "https://x.example/", "colour": "red"}, "body.colour"),
        ],
    )
    def test_bad_create_is_422_with_the_error_shape(
        self,
        http: httpx.Client,
        maintainer: dict[str, str],
        body: dict[str, object],
        location: str,
    ) -> None:
        locations = _problem_locations(http.post(HOOKS, headers=maintainer, json=body))
        assert any(found.startswith(location) for found in locations), locations

    def test_template_that_does_not_parse_is_422_naming_the_field(
        self, http: httpx.Client, maintainer: dict[str, str]
    ) -> None:
        response = http.post(
            HOOKS,
            headers=maintainer,
            json={"kind": "slack", "target": "https://x.example/", "template": "{% if %}"},
        )
        error = assert_error(response, 422, "template_invalid")
        assert error["detail"] == {"field": "template"}

    def test_bad_update_is_422_and_changes_nothing(
        self, http: httpx.Client, maintainer: dict[str, str]
    ) -> None:
        hook = _create(http, maintainer, kind="slack", target="https://x.example/")
        url = f"{HOOKS}/{hook['id']}"
        assert "body.triggers.0" in _problem_locations(
            http.patch(url, headers=maintainer, json={"triggers": ["never"]})
        )
        response = http.patch(url, headers=maintainer, json={"template": "{{ unclosed"})
        assert_error(response, 422, "template_invalid")
        assert http.get(url, headers=maintainer).json() == hook


class TestHookPermissions:
    def test_only_maintainers_see_and_change_hooks(
        self, http: httpx.Client, db_session: Session, demo: Project
    ) -> None:
        headers = actor_headers(db_session, demo)
        hook = _create(http, headers["admin"], kind="slack", target="https://x.example/")
        url = f"{HOOKS}/{hook['id']}"
        outcomes = {
            actor: (
                http.get(HOOKS, headers=h).status_code,
                http.get(url, headers=h).status_code,
                http.post(
                    HOOKS, headers=h, json={"kind": "slack", "target": "https://y.example/"}
                ).status_code,
                http.patch(url, headers=h, json={"enabled": False}).status_code,
                http.get(f"{url}/deliveries", headers=h).status_code,
            )
            for actor, h in headers.items()
        }
        # Targets carry tokens (Discord and Slack URLs are credentials): reading hooks
        # is a maintainer's right, not a viewer's.
        assert outcomes == {
            "anonymous": (401, 401, 401, 401, 401),
            "viewer": (403, 403, 403, 403, 403),
            "developer": (403, 403, 403, 403, 403),
            "maintainer": (200, 200, 201, 200, 200),
            "admin": (200, 200, 201, 200, 200),
            "outsider": (403, 403, 403, 403, 403),
        }
        deletes = {
            actor: http.delete(url, headers=h).status_code
            for actor, h in headers.items()
            if actor != "admin"
        }
        assert deletes == {
            "anonymous": 401,
            "viewer": 403,
            "developer": 403,
            "outsider": 403,
            "maintainer": 204,
        }


class TestSendTest:
    def test_test_message_reaches_the_receiver_signed_and_is_listed(
        self, http: httpx.Client, maintainer: dict[str, str], target: Receiver
    ) -> None:
        hook = _create(
            http,
            maintainer,
            kind="webhook",
            target=target.url + "/in",
            secret="s3cret-value",
            template="{{ project }}: {{ commit_message }}",
        )
        response = http.post(f"{HOOKS}/{hook['id']}/test", headers=maintainer)
        assert response.status_code == 200, response.text
        delivery = response.json()
        assert (delivery["trigger"], delivery["status"], delivery["attempts"]) == (
            "test",
            "sent",
            1,
        )
        assert (delivery["response_code"], delivery["hook_id"], delivery["run_id"]) == (
            200,
            hook["id"],
            None,
        )
        (request,) = target.requests
        assert (request.method, request.path) == ("POST", "/in")
        expected = "sha256=" + hmac.new(b"s3cret-value", request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-conveyor-signature"] == expected
        assert request.headers["x-conveyor-event"] == "test"
        assert request.headers["x-conveyor-delivery"] == str(delivery["id"])
        body = request.json()
        assert body["message"] == "demo: A test message from Conveyor"
        assert body["url"] == f"{PUBLIC_BASE_URL}/runs/0"

        listed = http.get(f"{HOOKS}/{hook['id']}/deliveries", headers=maintainer)
        assert listed.status_code == 200, listed.text
        assert [(d["id"], d["status"]) for d in listed.json()] == [(delivery["id"], "sent")]

    def test_failing_receiver_is_recorded_failed_after_one_attempt(
        self, http: httpx.Client, maintainer: dict[str, str]
    ) -> None:
        with receiver(statuses=[500]) as failing:
            hook = _create(http, maintainer, kind="slack", target=failing.url)
            delivery = http.post(f"{HOOKS}/{hook['id']}/test", headers=maintainer).json()
            assert len(failing.requests) == 1
        assert (delivery["status"], delivery["attempts"], delivery["response_code"]) == (
            "failed",
            1,
            500,
        )
        assert "500" in delivery["error"]

    def test_metadata_address_is_refused_without_being_contacted(
        self, http: httpx.Client, db_session: Session, maintainer: dict[str, str]
    ) -> None:
        hook = _create(
            http, maintainer, kind="webhook", target="http://169.254.169.254/latest/meta-data/"
        )
        response = http.post(f"{HOOKS}/{hook['id']}/test", headers=maintainer)
        assert response.status_code == 200, response.text
        delivery = response.json()
        assert (delivery["status"], delivery["response_code"]) == ("failed", None)
        assert "169.254.169.254" in delivery["error"] and "refused" in delivery["error"]

    def test_only_maintainers_send_tests(
        self, http: httpx.Client, db_session: Session, demo: Project, target: Receiver
    ) -> None:
        headers = actor_headers(db_session, demo)
        hook = _create(http, headers["admin"], kind="slack", target=target.url)
        statuses = {
            actor: http.post(f"{HOOKS}/{hook['id']}/test", headers=h).status_code
            for actor, h in headers.items()
        }
        assert statuses == {
            "anonymous": 401,
            "viewer": 403,
            "developer": 403,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }
        assert len(target.requests) == 2
        assert len(db_session.scalars(select(NotificationDelivery)).all()) == 2


class TestDeliveries:
    def test_newest_first_and_unknown_hook_is_404(
        self, http: httpx.Client, maintainer: dict[str, str], target: Receiver
    ) -> None:
        hook = _create(http, maintainer, kind="slack", target=target.url)
        first = http.post(f"{HOOKS}/{hook['id']}/test", headers=maintainer).json()
        second = http.post(f"{HOOKS}/{hook['id']}/test", headers=maintainer).json()
        listed = http.get(f"{HOOKS}/{hook['id']}/deliveries", headers=maintainer).json()
        assert [d["id"] for d in listed] == [second["id"], first["id"]]
        assert set(listed[0]) == {
            "id",
            "hook_id",
            "run_id",
            "trigger",
            "status",
            "attempts",
            "response_code",
            "error",
            "next_attempt_at",
            "created_at",
            "finished_at",
            "context",
        }
        assert_error(http.get(f"{HOOKS}/424242/deliveries", headers=maintainer), 404)


FORGE_LINK = {
    "kind": "gitea",
    "api_base_url": "https://gitea.example/api/v1",
    "repository": "acme/app",
    "token": "forge-token-123",
}


class TestCommitStatusSettings:
    def test_put_get_delete(
        self, http: httpx.Client, db_session: Session, maintainer: dict[str, str]
    ) -> None:
        missing = http.get(COMMIT_STATUS, headers=maintainer)
        assert_error(missing, 404, "commit_status_not_configured")
        response = http.put(COMMIT_STATUS, headers=maintainer, json=FORGE_LINK)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "kind": "gitea",
            "api_base_url": "https://gitea.example/api/v1",
            "repository": "acme/app",
            "context": "conveyor",
        }
        assert "forge-token-123" not in response.text
        stored = db_session.scalars(select(ForgeLink)).one()
        assert b"forge-token-123" not in stored.token_ciphertext

        replaced = http.put(
            COMMIT_STATUS,
            headers=maintainer,
            json={**FORGE_LINK, "kind": "gitlab", "repository": "acme/tools/app", "context": "ci"},
        )
        assert (replaced.json()["kind"], replaced.json()["context"]) == ("gitlab", "ci")
        assert http.get(COMMIT_STATUS, headers=maintainer).json() == replaced.json()
        assert http.get(f"{COMMIT_STATUS}/deliveries", headers=maintainer).json() == []

        assert http.delete(COMMIT_STATUS, headers=maintainer).status_code == 204
        assert_error(http.get(COMMIT_STATUS, headers=maintainer), 404)
        assert_error(http.delete(COMMIT_STATUS, headers=maintainer), 404)

    @pytest.mark.parametrize(
        ("change", "location"),
        [
            ({"kind": "sourceforge"}, "body.kind"),
            ({"api_base_url": "gitea.example"}, "body.api_base_url"),
            ({"repository": "no-slash"}, "body.repository"),
            ({"token": ""}, "body.token"),
            ({"context": ""}, "body.context"),
            ({"extra": 1}, "body.extra"),
        ],
    )
    def test_bad_put_is_422_naming_the_field(
        self,
        http: httpx.Client,
        maintainer: dict[str, str],
        change: dict[str, object],
        location: str,
    ) -> None:
        response = http.put(COMMIT_STATUS, headers=maintainer, json={**FORGE_LINK, **change})
        assert location in _problem_locations(response)
        assert_error(http.get(COMMIT_STATUS, headers=maintainer), 404)

    def test_only_maintainers_see_and_change_the_link(
        self, http: httpx.Client, db_session: Session, demo: Project
    ) -> None:
        headers = actor_headers(db_session, demo)
        outcomes = {
            actor: (
                http.put(COMMIT_STATUS, headers=h, json=FORGE_LINK).status_code,
                http.get(COMMIT_STATUS, headers=h).status_code,
                http.get(f"{COMMIT_STATUS}/deliveries", headers=h).status_code,
            )
            for actor, h in headers.items()
        }
        assert outcomes == {
            "anonymous": (401, 401, 401),
            "viewer": (403, 403, 403),
            "developer": (403, 403, 403),
            "maintainer": (200, 200, 200),
            "admin": (200, 200, 200),
            "outsider": (403, 403, 403),
        }
