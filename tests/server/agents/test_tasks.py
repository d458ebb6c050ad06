"""The agents' background duty (lease reaper and timeout backstop) in a real server, and
the long-poll claim that must wake when a job's back-off ends; SQLite and PostgreSQL.

The server of this module runs its reaper every 0.2 s (heartbeat 0.2 s), lets a lost
agent's job wait 1 s before it is claimed again, and ends a job 0.3 s after its
timeout, so that each test takes about a second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from conveyor.protocol.status import Status
from conveyor.server.agents import repository
from conveyor.server.config import Settings
from conveyor.server.models import Job
from tests.server.agents.queue import add_agent, add_project, agent_headers, claim, queue_job
from tests.server.conftest import add_user, sign_in

BACKOFF_SECONDS = 1.0
GRACE_SECONDS = 0.3


@pytest.fixture(scope="module")
def server_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("data")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        agents=0,
        heartbeat_seconds=0.2,
        retry_backoff_seconds=BACKOFF_SECONDS,
        job_timeout_grace_seconds=GRACE_SECONDS,
    )


def _fresh(session: Session, job_id: int) -> Job:
    # A new transaction: SQLite would go on reading the snapshot of the last one.
    session.commit()
    session.expire_all()
    job = session.get(Job, job_id)
    assert job is not None
    return job


def _wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.02)


def _expire_lease(server_app: FastAPI, job_id: int) -> None:
    """The job's agent went silent: its lease ends now (written as the server writes)."""
    factory: sessionmaker[Session] = server_app.state.session_factory
    with repository.open_write_session(factory) as writer:
        job = writer.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        writer.commit()


def _claimed_by(http: httpx.Client, db_session: Session, name: str) -> tuple[Job, str, str]:
    """A queued job claimed over HTTP by a new agent: (job, its lease, agent token)."""
    project = add_project(db_session, "p")
    job = queue_job(db_session, project)
    _, token = add_agent(db_session, name)
    (spec,) = claim(http, token)["jobs"]  # type: ignore[misc]
    return job, str(spec["lease_id"]), token


class TestReaperOfLostAgents:
    def test_agent_whose_job_was_requeued_is_offline_until_it_heartbeats(
        self, http: httpx.Client, db_session: Session, server_app: FastAPI
    ) -> None:
        add_user(db_session, "root", is_admin=True)
        sign_in(http, "root")
        job, _, token = _claimed_by(http, db_session, "victim")
        _expire_lease(server_app, job.id)
        _wait_until(lambda: _fresh(db_session, job.id).status is Status.QUEUED, 5, "the requeue")
        (listed,) = http.get("/api/v1/agents").json()
        heard = datetime.fromisoformat(listed["last_heartbeat_at"])
        # Heard from well within the lease (60 s), yet offline: its job was taken.
        assert datetime.now(UTC) - heard < timedelta(seconds=30)
        assert listed["status"] == "offline"
        beat = http.post(
            "/api/v1/agent/heartbeat", json={"running": []}, headers=agent_headers(token)
        )
        assert beat.status_code == 200, beat.text
        (listed,) = http.get("/api/v1/agents").json()
        assert listed["status"] == "online"


class TestReaperTimeoutBackstop:
    def test_job_past_its_timeout_ends_in_error_and_its_agent_is_told_to_stop(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project, timeout_seconds=1.0)
        _, token = add_agent(db_session, "a")
        (spec,) = claim(http, token)["jobs"]  # type: ignore[misc]
        lease = str(spec["lease_id"])
        claimed_at = time.monotonic()
        _wait_until(lambda: _fresh(db_session, job.id).status is Status.ERROR, 6, "the timeout")
        ended_after = time.monotonic() - claimed_at
        assert ended_after >= 1.0 + GRACE_SECONDS - 0.1  # not before timeout and grace
        ended = _fresh(db_session, job.id)
        assert ended.error_message == "timed out on the server after 1s (the agent did not report)"
        assert ended.lease_id is None
        beat = http.post(
            "/api/v1/agent/heartbeat",
            json={"running": [{"job_id": job.id, "lease_id": lease}]},
            headers=agent_headers(token),
        )
        assert beat.status_code == 200 and beat.json()["cancel"] == [job.id], beat.text
        late = http.post(
            f"/api/v1/agent/jobs/{job.id}/finish",
            json={"status": "failure"},
            headers=agent_headers(token, lease),
        )
        assert late.status_code == 409 and late.json()["error"]["code"] == "stale_lease"
        assert _fresh(db_session, job.id).status is Status.ERROR


class TestClaimAfterBackoff:
    def _wait_for_claim(self, server_url: str, token: str, answer: dict[str, object]) -> None:
        with httpx.Client(base_url=server_url, timeout=30) as client:
            answer.update(claim(client, token, wait=10.0))

    def _check_taken_when_due(self, db_session: Session, job_id: int, due: datetime) -> None:
        taken = _fresh(db_session, job_id)
        assert taken.status is Status.RUNNING and taken.attempts == 2
        assert taken.started_at is not None
        late = (taken.started_at - due).total_seconds()
        print(f"claimed {late * 1000:.0f} ms after the back-off ended")
        assert 0 <= late < 1.0

    def test_claim_waiting_before_the_requeue_takes_the_job_when_its_backoff_ends(
        self, http: httpx.Client, db_session: Session, server_app: FastAPI, server_url: str
    ) -> None:
        job, _, _ = _claimed_by(http, db_session, "lost")
        _, other = add_agent(db_session, "other")
        answer: dict[str, object] = {}
        waiter = threading.Thread(target=self._wait_for_claim, args=(server_url, other, answer))
        waiter.start()
        time.sleep(0.3)  # the claim now waits on the server
        _expire_lease(server_app, job.id)
        _wait_until(lambda: _fresh(db_session, job.id).claimable_at is not None, 5, "the requeue")
        due = _fresh(db_session, job.id).claimable_at
        assert due is not None
        # The requeue's event woke the claim, which found the job not yet due.
        assert "jobs" not in answer
        waiter.join(timeout=15)
        assert [spec["job_id"] for spec in answer["jobs"]] == [job.id]  # type: ignore[attr-defined]
        self._check_taken_when_due(db_session, job.id, due)

    def test_claim_that_starts_during_the_backoff_takes_the_job_when_it_ends(
        self, http: httpx.Client, db_session: Session, server_app: FastAPI, server_url: str
    ) -> None:
        job, _, _ = _claimed_by(http, db_session, "lost")
        _, other = add_agent(db_session, "other")
        _expire_lease(server_app, job.id)
        _wait_until(lambda: _fresh(db_session, job.id).claimable_at is not None, 5, "the requeue")
        due = _fresh(db_session, job.id).claimable_at
        assert due is not None
        answer: dict[str, object] = {}
        self._wait_for_claim(server_url, other, answer)
        assert [spec["job_id"] for spec in answer["jobs"]] == [job.id]  # type: ignore[attr-defined]
        self._check_taken_when_due(db_session, job.id, due)
