"""Accepted deliveries whose run a stopped server never made, taken up at the next
start: real servers on 127.0.0.1, a real git repository, SQLite and PostgreSQL.

A delivery is left "as the crash would leave it" by running the request's half for
real (`service.receive`, committed) and never the half that follows the answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.db.base import utcnow
from conveyor.server.db.engine import create_database_engine, create_session_factory
from conveyor.server.models import Project, Run, WebhookDelivery
from conveyor.server.models.webhook_delivery import DeliveryResult
from conveyor.server.secrets.cipher import SecretCipher
from conveyor.server.webhooks import service, tasks
from tests.fixtures.gitrepos import Repo
from tests.fixtures.servers import serve
from tests.server.conftest import add_user
from tests.server.projects.factories import add_project
from tests.server.runs.factories import PIPELINE
from tests.server.webhooks import forges
from tests.server.webhooks.forges import SECRET, Delivery

LONG_AGO = timedelta(hours=1)


@pytest.fixture
def repo(make_repo: Callable[..., Repo]) -> Repo:
    repo = make_repo({".conveyor.yml": PIPELINE})
    repo.write("app.txt", "v2")
    repo.commit("second commit")
    return repo


@pytest.fixture
def project(db_session: Session, server_settings: Settings, repo: Repo) -> Project:
    project = add_project(db_session, "demo", repo.url)
    cipher = SecretCipher(server_settings.session_secret_key())
    project.webhook_secret_ciphertext = cipher.encrypt(SECRET)
    db_session.commit()
    return project


@pytest.fixture
def factories(server_settings: Settings) -> Iterator[tuple[sessionmaker[Session], ...]]:
    """Reader and writer session factories made the way the app makes its own."""
    engine = create_database_engine(server_settings.database_url or "")
    writer = engine.execution_options(**dialect.write_transaction_options(engine))
    yield create_session_factory(engine), create_session_factory(writer)
    engine.dispose()


def left_by_a_crash(
    session: Session, settings: Settings, delivery: Delivery, age: timedelta = LONG_AGO
) -> int:
    """Store `delivery` as the request stores it, commit, and make nothing after: the
    state of a server that stopped between its answer and the run. Returns its id."""
    inbound = service.Inbound(
        project_name="demo",
        provider_name=None,
        headers={name.lower(): value for name, value in delivery.signed_headers().items()},
        body=delivery.body,
    )
    reception = service.receive(session, settings, inbound)
    assert reception.status_code == 202, reception.answer
    assert reception.delivery_pk is not None
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == reception.delivery_pk)
        .values(received_at=utcnow() - age)
    )
    session.commit()
    return reception.delivery_pk


def runs(session: Session) -> list[Run]:
    session.commit()  # a new transaction sees what the servers committed
    session.expire_all()
    return list(session.scalars(select(Run).order_by(Run.id)))


def delivery_row(session: Session, delivery_pk: int) -> WebhookDelivery:
    session.commit()
    session.expire_all()
    found = session.get(WebhookDelivery, delivery_pk)
    assert found is not None
    return found


def wait_until_made(session: Session, delivery_pks: list[int], timeout: float = 20.0) -> None:
    """Until every delivery has its run, or its failure, recorded."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [delivery_row(session, pk) for pk in delivery_pks]
        if all(row.pending_event is None for row in rows):
            return
        if time.monotonic() > deadline:
            states = [(row.id, row.result, row.reason) for row in rows]
            raise AssertionError(f"the runs were not made in {timeout}s: {states}")
        time.sleep(0.05)


def push_of(repo: Repo, sha: str | None = None) -> Delivery:
    return forges.push("github", sha=sha or repo.head(), before=repo.git("rev-parse", "HEAD~1"))


@contextmanager
def servers_started_together(settings: Settings, count: int) -> Iterator[None]:
    """`count` servers on one database, started at the same moment (each is a new app,
    as after a restart), running until the block ends."""
    go, stop = threading.Barrier(count), threading.Event()
    ready = threading.Semaphore(0)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            app = create_app(settings)
            go.wait(timeout=30)
            with serve(app):
                ready.release()
                stop.wait(60)
        except BaseException as error:  # reported to the test below
            failures.append(error)
            ready.release()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert ready.acquire(timeout=60), "a server did not start"
    assert not failures, failures
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


class TestResumeAtServerStart:
    def test_run_of_a_delivery_left_by_a_crash_is_made_once_at_the_next_start(
        self, db_session: Session, server_settings: Settings, repo: Repo, project: Project
    ) -> None:
        delivery_pk = left_by_a_crash(db_session, server_settings, push_of(repo))
        assert runs(db_session) == []
        with serve(create_app(server_settings)):
            wait_until_made(db_session, [delivery_pk])
        (run,) = runs(db_session)
        row = delivery_row(db_session, delivery_pk)
        assert (row.result, row.run_id) == (DeliveryResult.ACCEPTED, run.id)
        assert (run.event, run.branch, run.commit_sha) == ("push", "main", repo.head())
        assert run.commit_message == "Fix the build"  # the payload's, kept with the event
        # A later start finds nothing left to do.
        with serve(create_app(server_settings)):
            time.sleep(0.5)
        assert [r.id for r in runs(db_session)] == [run.id]

    def test_two_servers_starting_together_make_each_run_exactly_once(
        self, db_session: Session, server_settings: Settings, repo: Repo, project: Project
    ) -> None:
        shas = [repo.head(), repo.git("rev-parse", "HEAD~1")]
        pks = [left_by_a_crash(db_session, server_settings, push_of(repo, sha)) for sha in shas]
        # A restart finds its users: on an empty database two first starts would both
        # create the first administrator, a race outside this test's concern.
        add_user(db_session, "ada", is_admin=True)
        with servers_started_together(server_settings, 2):
            wait_until_made(db_session, pks)
            time.sleep(0.5)  # a second run, were one made, would be committed by now
        made = runs(db_session)
        assert sorted(run.commit_sha for run in made) == sorted(shas)
        assert {delivery_row(db_session, pk).run_id for pk in pks} == {run.id for run in made}

    def test_fork_pull_request_taken_up_later_still_withholds_the_secrets(
        self, db_session: Session, server_settings: Settings, repo: Repo, project: Project
    ) -> None:
        repo.git("update-ref", "refs/pull/7/head", repo.head())
        delivery = forges.pull_request(
            "github", sha=repo.head(), base=repo.git("rev-parse", "HEAD~1"), fork=True
        )
        delivery_pk = left_by_a_crash(db_session, server_settings, delivery)
        with serve(create_app(server_settings)):
            wait_until_made(db_session, [delivery_pk])
        (run,) = runs(db_session)
        assert run.event == "pull_request" and run.secrets_withheld
        assert run.variables["CI_PULL_REQUEST"] == "7"

    def test_delivery_answered_and_run_made_normally_is_not_taken_up_again(
        self, db_session: Session, server_settings: Settings, repo: Repo, project: Project
    ) -> None:
        delivery = push_of(repo)
        with serve(create_app(server_settings)) as url:
            response = httpx.post(
                f"{url}/hooks/demo", content=delivery.body, headers=delivery.signed_headers()
            )
            assert response.status_code == 202, response.text
            delivery_pk = response.json()["delivery"]
            wait_until_made(db_session, [delivery_pk])
        assert delivery_row(db_session, delivery_pk).pending_event is None
        # Made long ago as far as the next start can tell: still not made twice.
        db_session.execute(update(WebhookDelivery).values(received_at=utcnow() - LONG_AGO))
        db_session.commit()
        with serve(create_app(server_settings)):
            time.sleep(0.5)
        assert len(runs(db_session)) == 1


class TestResumeUnmadeRuns:
    def test_callers_racing_on_the_same_deliveries_make_one_run_each(
        self,
        db_session: Session,
        server_settings: Settings,
        repo: Repo,
        project: Project,
        factories: tuple[sessionmaker[Session], sessionmaker[Session]],
    ) -> None:
        shas = [repo.head(), repo.git("rev-parse", "HEAD~1")]
        pks = [left_by_a_crash(db_session, server_settings, push_of(repo, sha)) for sha in shas]
        reader, writer = factories
        start = threading.Barrier(3)
        taken: list[int] = []

        def resume() -> None:
            start.wait(timeout=10)
            taken.append(
                tasks.resume_unmade_runs(reader, writer, server_settings, received_before=utcnow())
            )

        threads = [threading.Thread(target=resume) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        # Each caller saw both deliveries waiting; between them they made two runs.
        assert taken == [2, 2, 2]
        made = runs(db_session)
        assert len(made) == 2
        assert {delivery_row(db_session, pk).run_id for pk in pks} == {run.id for run in made}

    def test_delivery_younger_than_the_cutoff_is_left_alone(
        self,
        db_session: Session,
        server_settings: Settings,
        repo: Repo,
        project: Project,
        factories: tuple[sessionmaker[Session], sessionmaker[Session]],
    ) -> None:
        delivery_pk = left_by_a_crash(
            db_session, server_settings, push_of(repo), age=timedelta(seconds=0)
        )
        reader, writer = factories
        cutoff = utcnow() - timedelta(minutes=1)
        assert (
            tasks.resume_unmade_runs(reader, writer, server_settings, received_before=cutoff) == 0
        )
        assert runs(db_session) == []
        assert delivery_row(db_session, delivery_pk).pending_event is not None

    def test_unreadable_stored_event_becomes_an_error_saying_to_redeliver(
        self,
        db_session: Session,
        server_settings: Settings,
        repo: Repo,
        project: Project,
        factories: tuple[sessionmaker[Session], sessionmaker[Session]],
    ) -> None:
        delivery_pk = left_by_a_crash(db_session, server_settings, push_of(repo))
        db_session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_pk)
            .values(pending_event='{"kind": "no-such-kind"}')
        )
        db_session.commit()
        reader, writer = factories
        tasks.resume_unmade_runs(reader, writer, server_settings, received_before=utcnow())
        row = delivery_row(db_session, delivery_pk)
        assert row.result == DeliveryResult.ERROR
        assert "redeliver" in row.reason and row.pending_event is None
        assert runs(db_session) == []

    def test_unreachable_repository_is_recorded_as_the_deliverys_error_once(
        self,
        db_session: Session,
        server_settings: Settings,
        repo: Repo,
        project: Project,
        factories: tuple[sessionmaker[Session], sessionmaker[Session]],
    ) -> None:
        delivery_pk = left_by_a_crash(db_session, server_settings, push_of(repo))
        project.git_url = "file:///nonexistent/repository.git"
        db_session.commit()
        reader, writer = factories
        tasks.resume_unmade_runs(reader, writer, server_settings, received_before=utcnow())
        row = delivery_row(db_session, delivery_pk)
        assert row.result == DeliveryResult.ERROR and row.pending_event is None
        assert "the run could not be made" in row.reason
        # Not tried again at the next start.
        assert (
            tasks.resume_unmade_runs(reader, writer, server_settings, received_before=utcnow()) == 0
        )


class TestResumeAcceptedDeliveries:
    def test_delivery_within_the_grace_is_taken_up_once_the_grace_has_passed(
        self,
        db_session: Session,
        server_settings: Settings,
        repo: Repo,
        project: Project,
        factories: tuple[sessionmaker[Session], sessionmaker[Session]],
    ) -> None:
        delivery_pk = left_by_a_crash(
            db_session, server_settings, push_of(repo), age=timedelta(seconds=0)
        )
        reader, writer = factories
        grace = timedelta(seconds=1)
        started = utcnow()
        asyncio.run(tasks.resume_accepted_deliveries(reader, writer, server_settings, grace))
        (run,) = runs(db_session)
        assert delivery_row(db_session, delivery_pk).run_id == run.id
        assert run.created_at - started >= grace
