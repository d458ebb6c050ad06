"""Webhook deliveries over real HTTP to a real server, naming commits of a real git
repository, on SQLite and PostgreSQL. The forges themselves cannot be had here: their
deliveries are made from payload files shaped like their documented ones."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.models import Project, Role, Run, WebhookDelivery
from conveyor.server.secrets import service as secrets_service
from conveyor.server.secrets.cipher import SecretCipher
from conveyor.server.users.authorization import Actor
from tests.fixtures.gitrepos import Repo
from tests.fixtures.servers import serve
from tests.server.agents.queue import add_agent, claim
from tests.server.conftest import add_user
from tests.server.projects.factories import add_project, assert_error, bearer
from tests.server.runs.factories import PIPELINE
from tests.server.webhooks import forges
from tests.server.webhooks.forges import SECRET, ZERO, Delivery

FORGES = ["github", "gitlab", "gitea", "forgejo", "bitbucket", "generic"]


@pytest.fixture
def repo(make_repo: Callable[..., Repo]) -> Repo:
    repo = make_repo({".conveyor.yml": PIPELINE})
    repo.write("app.txt", "v2")
    repo.commit("second commit")
    return repo


@pytest.fixture
def project(db_session: Session, server_settings: Settings, repo: Repo) -> Project:
    project = add_project(db_session, "demo", repo.url, branch_filter="main,release/*")
    cipher = SecretCipher(server_settings.session_secret_key())
    project.webhook_secret_ciphertext = cipher.encrypt(SECRET)
    db_session.commit()
    return project


def post(
    http: httpx.Client,
    delivery: Delivery,
    *,
    path: str = "/hooks/demo",
    secret: str | None = SECRET,
) -> httpx.Response:
    return http.post(path, content=delivery.body, headers=delivery.signed_headers(secret))


def runs(session: Session) -> list[Run]:
    # Ending the transaction lets SQLite show what the server wrote since; expiring
    # makes the rows already loaded take the new values.
    session.commit()
    session.expire_all()
    return list(session.scalars(select(Run).order_by(Run.id)))


def deliveries(session: Session) -> list[WebhookDelivery]:
    session.commit()
    session.expire_all()
    return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def wait_for_runs(session: Session, count: int, timeout: float = 20.0) -> list[Run]:
    deadline = time.monotonic() + timeout
    while True:
        found = runs(session)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            problems = [(d.result, d.reason) for d in deliveries(session)]
            raise AssertionError(f"{len(found)} of {count} runs; deliveries: {problems}")
        time.sleep(0.05)


def parent(repo: Repo) -> str:
    return repo.git("rev-parse", "HEAD~1")


class TestPushDelivery:
    @pytest.mark.parametrize("forge", FORGES)
    def test_push_is_answered_202_and_runs_the_payloads_commit_on_its_branch(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project, forge: str
    ) -> None:
        # The payload names the older commit: the run must build exactly that one.
        sha = parent(repo)
        delivery = forges.push(forge, sha=sha, before=ZERO[:-1] + "1", message="Fix the build")
        started = time.monotonic()
        response = post(
            http, delivery, path=f"/hooks/{forge}/demo" if forge == "generic" else "/hooks/demo"
        )
        # Answered without waiting for the work (fetch, pipeline, store): a generous bound,
        # since the full suite on this 2-core VM once took 1.04 s for the first of these.
        assert time.monotonic() - started < 5.0
        assert response.status_code == 202, response.text
        assert response.json()["result"] == "accepted"
        (run,) = wait_for_runs(db_session, 1)
        assert (run.event, run.branch, run.tag, run.commit_sha) == ("push", "main", None, sha)
        assert run.commit_message == "Fix the build"
        assert run.actor_name == "octocat"
        assert run.status is Status.QUEUED and not run.secrets_withheld
        (stored,) = deliveries(db_session)
        assert (stored.provider, stored.result, stored.run_id) == (forge, "accepted", run.id)
        assert stored.delivery_id == delivery.delivery_id
        assert stored.body_size == len(delivery.body)
        assert all(
            value == "[redacted]"
            for name, value in stored.headers.items()
            if "signature" in name or "token" in name
        )
        assert SECRET not in str(stored.headers)

    @pytest.mark.parametrize("forge", ["github", "gitlab", "gitea", "bitbucket", "generic"])
    def test_tag_push_runs_the_tag(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project, forge: str
    ) -> None:
        repo.git("tag", "v1.2.0")
        response = post(
            http,
            forges.push(forge, sha=repo.head(), before=ZERO, tag="v1.2.0"),
            path=f"/hooks/{forge}/demo",
        )
        assert response.status_code == 202, response.text
        (run,) = wait_for_runs(db_session, 1)
        assert (run.event, run.tag, run.branch, run.commit_sha) == (
            "tag",
            "v1.2.0",
            None,
            repo.head(),
        )

    @pytest.mark.parametrize("forge", ["github", "gitlab", "gitea", "generic"])
    def test_deleted_branch_is_ignored_with_the_reason(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project, forge: str
    ) -> None:
        response = post(
            http, forges.push(forge, sha=ZERO, before=repo.head()), path=f"/hooks/{forge}/demo"
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "ignored"
        assert "deleted" in response.json()["reason"]
        time.sleep(0.2)
        assert runs(db_session) == []


class TestPullRequestDelivery:
    @pytest.mark.parametrize(
        "forge", ["github", "gitlab", "gitea", "forgejo", "bitbucket", "generic"]
    )
    def test_pull_request_runs_its_head_commit_for_the_target_branch(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project, forge: str
    ) -> None:
        base = parent(repo)
        repo.git("checkout", "-q", "-b", "feature")
        repo.write("feature.txt", "x")
        head = repo.commit("feature work")
        response = post(
            http, forges.pull_request(forge, sha=head, base=base), path=f"/hooks/{forge}/demo"
        )
        assert response.status_code == 202, response.text
        (run,) = wait_for_runs(db_session, 1)
        assert (run.event, run.branch, run.commit_sha) == ("pull_request", "main", head)
        assert run.variables["CI_PULL_REQUEST"] == "7"
        assert run.variables["CI_PULL_REQUEST_SOURCE_BRANCH"] == "feature"
        assert not run.secrets_withheld

    def test_closed_pull_request_starts_nothing(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        delivery = forges.pull_request(
            "github", sha=repo.head(), base=parent(repo), action="closed"
        )
        response = post(http, delivery)
        assert (response.status_code, response.json()["result"]) == (200, "ignored")

    @pytest.mark.parametrize("forge", ["github", "gitlab", "gitea", "bitbucket"])
    def test_fork_pull_request_runs_and_the_claimed_job_has_no_secrets(
        self,
        http: httpx.Client,
        db_session: Session,
        server_settings: Settings,
        repo: Repo,
        project: Project,
        forge: str,
    ) -> None:
        secrets_service.put_secret(
            db_session,
            server_settings,
            _admin(db_session),
            "demo",
            "DEPLOY_KEY",
            "hunter2hunter2",
        )
        db_session.commit()
        # The fork's commit is reachable as GitHub exposes it: refs/pull/7/head.
        repo.git("checkout", "-q", "-b", "fork-work")
        repo.write("fork.txt", "from outside")
        head = repo.commit("outside work")
        repo.git("update-ref", "refs/pull/7/head", head)
        repo.git("checkout", "-q", "main")
        repo.git("branch", "-D", "fork-work")
        response = post(
            http,
            forges.pull_request(forge, sha=head, base=repo.head(), fork=True),
            path=f"/hooks/{forge}/demo",
        )
        assert response.status_code == 202, response.text
        (run,) = wait_for_runs(db_session, 1)
        assert run.secrets_withheld and run.commit_sha == head
        _, token = add_agent(db_session, "builder")
        (spec,) = claim(http, token)["jobs"]  # type: ignore[misc]
        assert spec["run_id"] == run.id
        assert spec["secrets"] == {}

    def test_same_repository_pull_request_gets_the_secrets(
        self,
        http: httpx.Client,
        db_session: Session,
        server_settings: Settings,
        repo: Repo,
        project: Project,
    ) -> None:
        secrets_service.put_secret(
            db_session, server_settings, _admin(db_session), "demo", "DEPLOY_KEY", "hunter2hunter2"
        )
        db_session.commit()
        response = post(http, forges.pull_request("github", sha=repo.head(), base=parent(repo)))
        assert response.status_code == 202
        wait_for_runs(db_session, 1)
        _, token = add_agent(db_session, "builder")
        (spec,) = claim(http, token)["jobs"]  # type: ignore[misc]
        assert spec["secrets"] == {"DEPLOY_KEY": "hunter2hunter2"}


def _admin(session: Session) -> Actor:
    user = add_user(session, "root", is_admin=True)
    return Actor(user_id=user.id, name=user.name, is_admin=True)


class TestPing:
    @pytest.mark.parametrize("forge", ["github", "bitbucket", "generic"])
    def test_ping_answers_200_and_starts_nothing(
        self, http: httpx.Client, db_session: Session, project: Project, forge: str
    ) -> None:
        response = post(http, forges.ping(forge), path=f"/hooks/{forge}/demo")
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "ignored"
        assert "ping" in response.json()["reason"]
        time.sleep(0.2)
        assert runs(db_session) == []
        assert [d.result for d in deliveries(db_session)] == ["ignored"]


class TestSignature:
    @pytest.mark.parametrize("forge", FORGES)
    @pytest.mark.parametrize("secret", [None, "a-wrong-secret"])
    def test_missing_or_wrong_signature_is_401_and_recorded_refused(
        self,
        http: httpx.Client,
        db_session: Session,
        repo: Repo,
        project: Project,
        forge: str,
        secret: str | None,
    ) -> None:
        delivery = forges.push(forge, sha=repo.head(), before=parent(repo))
        response = post(http, delivery, path=f"/hooks/{forge}/demo", secret=secret)
        assert_error(response, 401, "webhook_signature_invalid")
        time.sleep(0.1)
        assert runs(db_session) == []
        (stored,) = deliveries(db_session)
        assert stored.result == "refused" and stored.delivery_id is None
        assert "signature" in stored.reason

    def test_body_changed_after_signing_is_401(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        delivery = forges.push("github", sha=repo.head(), before=parent(repo))
        headers = delivery.signed_headers()
        response = http.post(
            "/hooks/demo", content=delivery.body.replace(b"main", b"mainx"), headers=headers
        )
        assert_error(response, 401, "webhook_signature_invalid")

    def test_unknown_project_gets_the_same_401_as_a_wrong_signature(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        delivery = forges.push("github", sha=repo.head(), before=parent(repo))
        unknown = post(http, delivery, path="/hooks/no-such-project")
        wrong = post(http, delivery, secret="a-wrong-secret")
        assert unknown.status_code == wrong.status_code == 401
        assert unknown.json() == wrong.json()
        assert unknown.headers.get("www-authenticate") == wrong.headers.get("www-authenticate")


class TestDuplicates:
    def test_redelivery_starts_no_second_run(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        delivery = forges.push("github", sha=repo.head(), before=parent(repo))
        assert post(http, delivery).status_code == 202
        wait_for_runs(db_session, 1)
        again = post(http, delivery)
        assert again.status_code == 200
        assert again.json()["result"] == "duplicate"
        assert delivery.delivery_id in again.json()["reason"]
        time.sleep(0.3)
        assert len(runs(db_session)) == 1
        assert [d.result for d in deliveries(db_session)] == ["accepted", "duplicate"]

    def test_redelivery_after_a_restart_is_still_a_duplicate(
        self, db_session: Session, server_settings: Settings, repo: Repo, project: Project
    ) -> None:
        delivery = forges.push("gitlab", sha=repo.head(), before=parent(repo))
        for expected in (202, 200):
            app: FastAPI = create_app(server_settings)
            with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
                response = post(client, delivery)
                assert response.status_code == expected, response.text
                wait_for_runs(db_session, 1)
        assert len(runs(db_session)) == 1
        assert deliveries(db_session)[-1].result == "duplicate"


class TestRules:
    def test_push_by_an_unauthorized_actor_is_refused_with_the_reason(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        project.webhook_actors = ["alice", "build-bot"]
        db_session.commit()
        response = post(
            http, forges.push("github", sha=repo.head(), before=parent(repo), actor="mallory")
        )
        assert (response.status_code, response.json()["result"]) == (200, "refused")
        assert "mallory" in response.json()["reason"]
        allowed = post(
            http, forges.push("github", sha=repo.head(), before=parent(repo), actor="Alice")
        )
        assert allowed.status_code == 202
        assert [r.actor_name for r in wait_for_runs(db_session, 1)] == ["Alice"]

    def test_branch_outside_the_filter_is_refused_naming_the_filter(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        repo.git("branch", "experiment")
        response = post(
            http, forges.push("gitea", sha=repo.head(), before=parent(repo), branch="experiment")
        )
        assert (response.status_code, response.json()["result"]) == (200, "refused")
        assert "main,release/*" in response.json()["reason"]
        time.sleep(0.2)
        assert runs(db_session) == []

    def test_body_over_the_limit_is_413(
        self, http: httpx.Client, db_session: Session, server_settings: Settings, project: Project
    ) -> None:
        body = b"{" + b" " * (server_settings.webhook_max_body_bytes + 1) + b"}"
        delivery = Delivery("github", body, {"X-GitHub-Event": "push"})
        assert_error(post(http, delivery), 413, "webhook_body_too_large")

        # Sent in chunks, without a length: still refused.
        def chunks() -> object:
            for _ in range(6):
                yield b" " * (1024 * 1024)

        streamed = http.post("/hooks/demo", content=chunks(), headers=delivery.signed_headers())  # type: ignore[arg-type]
        assert_error(streamed, 413, "webhook_body_too_large")
        assert deliveries(db_session) == []

    def test_new_push_cancels_older_runs_of_the_branch_when_switched_on(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        project.cancel_superseded = True
        db_session.commit()
        first, second = parent(repo), repo.head()
        assert post(http, forges.push("github", sha=first, before=ZERO)).status_code == 202
        wait_for_runs(db_session, 1)
        assert post(http, forges.push("github", sha=second, before=first)).status_code == 202
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = runs(db_session)
            if len(found) == 2 and found[0].status is Status.CANCELLED:
                break
            time.sleep(0.05)
        older, newer = runs(db_session)
        assert (older.commit_sha, older.status) == (first, Status.CANCELLED)
        assert (newer.commit_sha, newer.status) == (second, Status.QUEUED)
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))
        history = http.get(f"/api/v1/runs/{older.id}/events", headers=admin)
        assert history.status_code == 200, history.text
        cancels = [event for event in history.json() if event["action"] == "cancelled"]
        assert [(event["actor"], event["details"]) for event in cancels] == [
            ("webhook", f"superseded by run #{newer.number} of the same branch")
        ]

    def test_older_runs_stay_when_the_switch_is_off(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        assert post(http, forges.push("github", sha=parent(repo), before=ZERO)).status_code == 202
        wait_for_runs(db_session, 1)
        assert (
            post(http, forges.push("github", sha=repo.head(), before=parent(repo))).status_code
            == 202
        )
        assert [r.status for r in wait_for_runs(db_session, 2)] == [Status.QUEUED, Status.QUEUED]


class TestMaintainerApi:
    def test_maintainer_reads_url_and_secret_and_rotates_it(
        self, http: httpx.Client, db_session: Session, repo: Repo
    ) -> None:
        mia, dev = add_user(db_session, "mia"), add_user(db_session, "dev")
        add_project(
            db_session, "demo", repo.url, members={mia: Role.MAINTAINER, dev: Role.DEVELOPER}
        )
        headers = bearer(db_session, mia)
        first = http.get("/api/v1/projects/demo/webhook", headers=headers)
        assert first.status_code == 200, first.text
        settings = first.json()
        assert settings["url"].endswith("/hooks/demo") and len(settings["secret"]) == 64
        assert {p["provider"] for p in settings["providers"]} == set(FORGES)
        assert (
            http.get("/api/v1/projects/demo/webhook", headers=headers).json()["secret"]
            == settings["secret"]
        )
        delivery = forges.ping("github")
        assert post(http, delivery, secret=settings["secret"]).status_code == 200
        rotated = http.post("/api/v1/projects/demo/webhook/rotate", headers=headers).json()
        assert rotated["secret"] != settings["secret"]
        assert post(http, forges.ping("github"), secret=settings["secret"]).status_code == 401
        assert post(http, forges.ping("github"), secret=rotated["secret"]).status_code == 200
        assert_error(
            http.get("/api/v1/projects/demo/webhook", headers=bearer(db_session, dev)), 403
        )
        assert_error(
            http.get("/api/v1/projects/demo/deliveries", headers=bearer(db_session, dev)), 403
        )

    def test_deliveries_are_listed_newest_first_with_result_and_reason(
        self, http: httpx.Client, db_session: Session, repo: Repo, project: Project
    ) -> None:
        mia = add_user(db_session, "mia")
        from conveyor.server.users import service as users_service

        users_service.set_membership(db_session, mia, project, Role.MAINTAINER)
        db_session.commit()
        headers = bearer(db_session, mia)
        changed = http.patch(
            "/api/v1/projects/demo/webhook",
            headers=headers,
            json={"actors": ["alice"], "cancel_superseded": True},
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["actors"], changed.json()["cancel_superseded"]) == (["alice"], True)
        post(http, forges.ping("github"))
        post(http, forges.push("github", sha=repo.head(), before=parent(repo), actor="bob"))
        page = http.get("/api/v1/projects/demo/deliveries?per_page=1", headers=headers).json()
        assert page["total"] == 2 and len(page["items"]) == 1
        newest = page["items"][0]
        assert (newest["result"], newest["actor"]) == ("refused", "bob")
        assert "bob" in newest["reason"]
        older = http.get(
            "/api/v1/projects/demo/deliveries?page=2&per_page=1", headers=headers
        ).json()
        assert older["items"][0]["result"] == "ignored"
