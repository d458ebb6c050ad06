"""The agent API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.agents import FinalStepEnd, JobReport, LogChunk, StepEnd, StepReport
from conveyor.protocol.status import Status
from conveyor.server.agents import service
from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.models import Agent, Job, Run, Step
from conveyor.server.runs import state
from tests.server.agents.queue import (
    add_agent,
    add_project,
    agent_headers,
    claim,
    minutes_ago,
    queue_job,
)
from tests.server.conftest import add_user, sign_in
from tests.server.projects.factories import bearer


def _job_ids(body: dict[str, object]) -> list[int]:
    jobs = body["jobs"]
    assert isinstance(jobs, list)
    return [int(job["job_id"]) for job in jobs]


def _fresh(session: Session, job_id: int) -> Job:
    session.expire_all()
    job = session.get(Job, job_id)
    assert job is not None
    return job


class TestAgentAdministration:
    def test_admin_creates_agent_and_its_token_authenticates(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "root", is_admin=True)
        sign_in(http, "root")
        created = http.post("/api/v1/agents", json={"name": "builder-1"})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        stored = db_session.scalars(select(Agent).where(Agent.name == "builder-1")).one()
        assert stored.token_hash != token and stored.token_hash == service.hash_agent_token(token)
        registered = http.post(
            "/api/v1/agent/register",
            json={"name": "builder-1", "labels": ["linux"], "capacity": 3},
            headers=agent_headers(token),
        )
        assert registered.status_code == 200, registered.text
        listed = http.get("/api/v1/agents").json()
        assert [(a["name"], a["labels"], a["capacity"]) for a in listed] == [
            ("builder-1", ["linux"], 3)
        ]
        assert "token" not in listed[0]
        assert http.get(f"/api/v1/agents/{stored.id}").json()["name"] == "builder-1"

    def test_non_admin_may_not_create_or_list_agents(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        add_user(db_session, "dev")
        sign_in(http, "dev")
        assert http.post("/api/v1/agents", json={"name": "x"}).status_code == 403
        assert http.get("/api/v1/agents").status_code == 403

    def test_anonymous_gets_401_with_error_shape(self, http: httpx.Client) -> None:
        response = http.get("/api/v1/agents")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"

    def test_unknown_agent_token_is_refused(self, http: httpx.Client) -> None:
        response = http.post(
            "/api/v1/agent/claim", json={"free_slots": 1, "wait": 0}, headers=agent_headers("x")
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "agent_token_invalid"


class TestClaim:
    def test_labels_filter_jobs(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "p")
        gpu = queue_job(db_session, project, labels=["gpu"])
        plain = queue_job(db_session, project, labels=["linux"])
        _, token = add_agent(db_session, "a", labels=["linux"], capacity=5)
        assert _job_ids(claim(http, token, free_slots=5)) == [plain.id]
        assert _fresh(db_session, gpu.id).status is Status.QUEUED

    def test_capacity_bounds_the_jobs_given(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "p")
        for _ in range(4):
            queue_job(db_session, project)
        _, token = add_agent(db_session, "a", capacity=2)
        assert len(_job_ids(claim(http, token, free_slots=5))) == 2
        assert _job_ids(claim(http, token, free_slots=5)) == []

    def test_priority_first_then_oldest(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "p")
        newer_low = queue_job(db_session, project, priority=0, queued_at=minutes_ago(1))
        older_low = queue_job(db_session, project, priority=0, queued_at=minutes_ago(5))
        high = queue_job(db_session, project, priority=10, queued_at=minutes_ago(0))
        _, token = add_agent(db_session, "a", capacity=3)
        assert _job_ids(claim(http, token, free_slots=3)) == [high.id, older_low.id, newer_low.id]

    def test_project_concurrency_limit_is_respected(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        limited = add_project(db_session, "limited", limit=1)
        free = add_project(db_session, "free")
        first = queue_job(db_session, limited, queued_at=minutes_ago(3))
        queue_job(db_session, limited, queued_at=minutes_ago(2))
        other = queue_job(db_session, free, queued_at=minutes_ago(1))
        _, token = add_agent(db_session, "a", capacity=3)
        assert _job_ids(claim(http, token, free_slots=3)) == [first.id, other.id]

    def test_a_claimed_job_makes_its_run_running_while_the_others_wait(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "p")
        first = queue_job(db_session, project, commit=False)
        second = Job(
            run_id=first.run_id,
            name="second",
            plan=first.plan,
            labels=["elsewhere"],
            queued_at=first.queued_at,
        )
        db_session.add(second)
        db_session.commit()
        _, token = add_agent(db_session, "a", capacity=2)

        assert _job_ids(claim(http, token, free_slots=2)) == [first.id]

        db_session.expire_all()
        run = db_session.get(Run, first.run_id)
        assert run is not None
        assert run.status is Status.RUNNING
        assert run.started_at is not None and run.finished_at is None
        assert _fresh(db_session, second.id).status is Status.QUEUED

    def test_spec_carries_plan_commit_variables_and_lease(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "p", git_url="file:///srv/repo.git")
        job = queue_job(db_session, project, commit_sha="a" * 40)
        agent, token = add_agent(db_session, "a")
        (spec,) = claim(http, token)["jobs"]  # type: ignore[misc]
        assert spec["repo_url"] == "file:///srv/repo.git"
        assert spec["commit"]["sha"] == "a" * 40
        assert spec["variables"] == {"GREETING": "hello"}
        assert spec["plan"]["steps"][0]["commands"] == ["true"]
        stored = _fresh(db_session, job.id)
        assert stored.status is Status.RUNNING and stored.agent_id == agent.id
        assert stored.lease_id == spec["lease_id"] and stored.attempts == 1

    def test_disabled_agent_gets_no_jobs(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "p")
        queue_job(db_session, project)
        agent, token = add_agent(db_session, "a")
        agent.enabled = False
        db_session.commit()
        assert _job_ids(claim(http, token)) == []

    def test_fifty_concurrent_claimers_never_share_a_job(
        self, http: httpx.Client, db_session: Session, server_url: str
    ) -> None:
        project = add_project(db_session, "p")
        for number in range(200):
            queue_job(db_session, project, commit=False, queued_at=minutes_ago(200 - number))
        db_session.commit()
        agents = [add_agent(db_session, f"agent-{n}", capacity=8) for n in range(50)]
        claimed: dict[int, list[int]] = {}
        errors: list[str] = []
        start = threading.Barrier(len(agents))

        def claimer(agent_id: int, token: str) -> None:
            mine: list[int] = []
            with httpx.Client(base_url=server_url, timeout=60) as client:
                start.wait()
                while True:
                    response = client.post(
                        "/api/v1/agent/claim",
                        json={"free_slots": 2, "wait": 0},
                        headers=agent_headers(token),
                    )
                    if response.status_code != 200:
                        errors.append(response.text)
                        return
                    got = _job_ids(response.json())
                    if not got:
                        break
                    mine.extend(got)
            claimed[agent_id] = mine

        threads = [
            threading.Thread(target=claimer, args=(agent.id, token)) for agent, token in agents
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        every = [job_id for jobs in claimed.values() for job_id in jobs]
        assert len(every) == 200 and len(set(every)) == 200
        db_session.expire_all()
        owners = {row[0]: row[1] for row in db_session.execute(select(Job.id, Job.agent_id))}
        for agent_id, jobs in claimed.items():
            assert all(owners[job_id] == agent_id for job_id in jobs)

    def test_long_poll_wakes_when_a_job_is_queued(
        self, http: httpx.Client, db_session: Session, server_url: str, server_app: FastAPI
    ) -> None:
        project = add_project(db_session, "p")
        _, token = add_agent(db_session, "a")
        answer: dict[str, object] = {}

        def wait_for_job() -> None:
            with httpx.Client(base_url=server_url, timeout=30) as client:
                answer.update(claim(client, token, wait=10.0))
                answer["at"] = time.monotonic()

        waiter = threading.Thread(target=wait_for_job)
        waiter.start()
        time.sleep(0.5)  # the claim is now waiting on the server
        assert "at" not in answer
        # A session of the server's own factory: its events reach the server's bus.
        with server_app.state.session_factory() as writer:
            job = queue_job(writer, writer.merge(project), commit=False)
            state.announce_queued(writer, job)
            writer.commit()
        queued = time.monotonic()
        waiter.join(timeout=15)
        assert _job_ids(answer) == [job.id]
        latency = float(answer["at"]) - queued  # type: ignore[arg-type]
        print(f"long-poll pickup latency: {latency * 1000:.1f} ms")
        assert latency < 2.0

    def test_long_poll_wakes_when_a_limited_project_frees_a_slot(
        self, http: httpx.Client, db_session: Session, server_url: str, server_app: FastAPI
    ) -> None:
        project = add_project(db_session, "p", limit=1)
        first = queue_job(db_session, project)
        second = queue_job(db_session, project)
        _, token = add_agent(db_session, "a")
        (spec,) = claim(http, token, free_slots=2)["jobs"]  # type: ignore[misc]
        assert spec["job_id"] == first.id  # the limit holds the second back
        answer: dict[str, object] = {}

        def wait_for_job() -> None:
            with httpx.Client(base_url=server_url, timeout=30) as client:
                answer.update(claim(client, token, wait=10.0))
                answer["at"] = time.monotonic()

        waiter = threading.Thread(target=wait_for_job)
        waiter.start()
        time.sleep(0.5)  # the claim is now waiting on the server
        assert "at" not in answer
        finished = http.post(
            f"/api/v1/agent/jobs/{first.id}/finish",
            json={"status": "success"},
            headers=agent_headers(token, str(spec["lease_id"])),
        )
        assert finished.status_code == 200, finished.text
        freed = time.monotonic()
        waiter.join(timeout=15)
        assert _job_ids(answer) == [second.id]
        latency = float(answer["at"]) - freed  # type: ignore[arg-type]
        print(f"pickup after a freed slot: {latency * 1000:.1f} ms")
        assert latency < 2.0


def _claimed(http: httpx.Client, db_session: Session) -> tuple[Job, str, str, Agent]:
    """One job claimed by a fresh agent: (job, lease id, agent token, agent)."""
    project = add_project(db_session, "p")
    job = queue_job(db_session, project)
    agent, token = add_agent(db_session, "a")
    (spec,) = claim(http, token)["jobs"]  # type: ignore[misc]
    return job, str(spec["lease_id"]), token, agent


class TestLeaseChecks:
    def test_report_on_foreign_agents_job_is_403_and_changes_nothing(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, _, _ = _claimed(http, db_session)
        _, intruder = add_agent(db_session, "intruder")
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/finish",
            json={"status": "success"},
            headers=agent_headers(intruder, lease),
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "job_of_another_agent"
        assert _fresh(db_session, job.id).status is Status.RUNNING

    def test_report_with_stale_lease_is_409_and_changes_nothing(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, _, token, _ = _claimed(http, db_session)
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/steps/0",
            json={"status": "running"},
            headers=agent_headers(token, "not-the-lease"),
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "stale_lease"
        db_session.expire_all()
        step = db_session.scalars(select(Step).where(Step.job_id == job.id)).one()
        assert step.status is Status.QUEUED

    def test_report_after_lease_expired_is_409(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        stored = _fresh(_as_writer(db_session), job.id)
        stored.lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        db_session.commit()
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/finish",
            json={"status": "success"},
            headers=agent_headers(token, lease),
        )
        assert response.status_code == 409
        # The report changed nothing; the server's own lease reaper may meanwhile have
        # put the job back in the queue, which is what an expired lease calls for.
        assert _fresh(db_session, job.id).status in (Status.RUNNING, Status.QUEUED)

    def test_unknown_job_is_404(self, http: httpx.Client, db_session: Session) -> None:
        _, token = add_agent(db_session, "a")
        response = http.post(
            "/api/v1/agent/jobs/999999/finish",
            json={"status": "success"},
            headers=agent_headers(token, "x"),
        )
        assert response.status_code == 404


class TestReports:
    def test_step_and_job_reports_finish_the_job(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        headers = agent_headers(token, lease)
        base = f"/api/v1/agent/jobs/{job.id}"
        assert http.post(f"{base}/steps/0", json={"status": "running"}, headers=headers).is_success
        # A repeated report (a retried request) changes nothing and is not an error.
        assert http.post(f"{base}/steps/0", json={"status": "running"}, headers=headers).is_success
        finished = {"status": "success", "exit_code": 0}
        assert http.post(f"{base}/steps/0", json=finished, headers=headers).is_success
        assert http.post(f"{base}/finish", json={"status": "success"}, headers=headers).is_success
        stored = _fresh(db_session, job.id)
        assert stored.status is Status.SUCCESS and stored.lease_id is None
        step = db_session.scalars(select(Step).where(Step.job_id == job.id)).one()
        assert (step.status, step.exit_code) == (Status.SUCCESS, 0)

    def test_finish_with_non_final_status_is_422(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/finish",
            json={"status": "running"},
            headers=agent_headers(token, lease),
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_report"


class TestStepEnd:
    def test_the_log_tail_and_the_end_report_land_together(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        headers = agent_headers(token, lease)
        base = f"/api/v1/agent/jobs/{job.id}"
        first = http.put(f"{base}/steps/0/log?offset=0", content=b"one\n", headers=headers)
        assert first.status_code == 200, first.text
        end = StepEnd.of(
            StepReport(status=Status.FAILURE, exit_code=3), 4, LogChunk(b"two\nthree\n")
        )
        response = http.post(
            f"{base}/steps/0/end", json=end.model_dump(mode="json"), headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"size": 14, "lines": 3}
        step = db_session.scalars(select(Step).where(Step.job_id == job.id)).one()
        db_session.refresh(step)
        assert (step.status, step.exit_code) == (Status.FAILURE, 3)
        stored = http.get(f"/api/v1/steps/{step.id}/log", headers=_admin(db_session))
        assert stored.json()["lines"] == ["one", "two", "three"]

    def test_a_tail_past_the_held_log_is_409_and_nothing_is_applied(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        # Far past anything held (ids can repeat on SQLite, and with them log files).
        end = StepEnd.of(
            StepReport(status=Status.SUCCESS, exit_code=0), 10_000, LogChunk(b"late\n")
        )
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/steps/0/end",
            json=end.model_dump(mode="json"),
            headers=agent_headers(token, lease),
        )
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "log_gap"
        held = response.json()["error"]["detail"]["size"]
        assert held < 10_000
        step = db_session.scalars(select(Step).where(Step.job_id == job.id)).one()
        db_session.refresh(step)
        assert step.status is Status.QUEUED  # the report was not applied either

    def test_a_log_that_is_no_base64_is_422(self, http: httpx.Client, db_session: Session) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/steps/0/end",
            json={"report": {"status": "success"}, "log": "not base64!"},
            headers=agent_headers(token, lease),
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_log_chunk"


class TestFinishWithStepEnd:
    def test_the_last_step_end_and_the_job_status_land_together(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        # Ids repeat on SQLite once the database is emptied, and with them log files:
        # a gap names what the server holds of this step's log, and the tail goes there.
        probe = StepEnd.of(StepReport(status=Status.SUCCESS), 10_000, LogChunk(b"x\n"))
        held = http.post(
            f"/api/v1/agent/jobs/{job.id}/steps/0/end",
            json=probe.model_dump(mode="json"),
            headers=agent_headers(token, lease),
        ).json()["error"]["detail"]["size"]
        end = StepEnd.of(StepReport(status=Status.SUCCESS, exit_code=0), held, LogChunk(b"done\n"))
        report = JobReport(status=Status.SUCCESS, step_end=FinalStepEnd.of_step(0, end))
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/finish",
            json=report.model_dump(mode="json"),
            headers=agent_headers(token, lease),
        )
        assert response.status_code == 200, response.text
        stored = _fresh(db_session, job.id)
        assert stored.status is Status.SUCCESS and stored.lease_id is None
        step = db_session.scalars(select(Step).where(Step.job_id == job.id)).one()
        assert (step.status, step.exit_code) == (Status.SUCCESS, 0)
        logged = http.get(f"/api/v1/steps/{step.id}/log", headers=_admin(db_session))
        assert logged.json()["lines"][-1] == "done"

    def test_a_gap_in_the_carried_log_is_409_and_the_job_still_runs(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        end = StepEnd.of(StepReport(status=Status.SUCCESS, exit_code=0), 10_000, LogChunk(b"x\n"))
        report = JobReport(status=Status.SUCCESS, step_end=FinalStepEnd.of_step(0, end))
        response = http.post(
            f"/api/v1/agent/jobs/{job.id}/finish",
            json=report.model_dump(mode="json"),
            headers=agent_headers(token, lease),
        )
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "log_gap"
        stored = _fresh(db_session, job.id)
        assert stored.status is Status.RUNNING and stored.lease_id == lease
        step = db_session.scalars(select(Step).where(Step.job_id == job.id)).one()
        assert step.status is Status.QUEUED


def _admin(session: Session) -> dict[str, str]:
    return bearer(session, add_user(session, "root", is_admin=True))


class TestHeartbeatAndCancel:
    def test_heartbeat_extends_the_lease(self, http: httpx.Client, db_session: Session) -> None:
        job, lease, token, agent = _claimed(http, db_session)
        stored = _fresh(_as_writer(db_session), job.id)
        stored.lease_expires_at = datetime.now(UTC) + timedelta(seconds=5)
        db_session.commit()
        response = http.post(
            "/api/v1/agent/heartbeat",
            json={"running": [{"job_id": job.id, "lease_id": lease}]},
            headers=agent_headers(token),
        )
        assert response.status_code == 200 and response.json()["cancel"] == []
        stored = _fresh(db_session, job.id)
        assert stored.lease_expires_at is not None
        assert stored.lease_expires_at > datetime.now(UTC) + timedelta(seconds=30)
        refreshed = db_session.get(Agent, agent.id)
        assert refreshed is not None and refreshed.last_heartbeat_at is not None

    def test_cancel_travels_by_heartbeat_and_claim_then_finish_releases(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, lease, token, _ = _claimed(http, db_session)
        state.cancel_job(db_session, _fresh(_as_writer(db_session), job.id))
        db_session.commit()
        beat = http.post(
            "/api/v1/agent/heartbeat",
            json={"running": [{"job_id": job.id, "lease_id": lease}]},
            headers=agent_headers(token),
        )
        assert beat.json()["cancel"] == [job.id]
        assert claim(http, token, free_slots=0)["cancel"] == [job.id]
        finished = http.post(
            f"/api/v1/agent/jobs/{job.id}/finish",
            json={"status": "cancelled"},
            headers=agent_headers(token, lease),
        )
        assert finished.status_code == 200
        stored = _fresh(db_session, job.id)
        assert stored.status is Status.CANCELLED and stored.lease_id is None

    def test_heartbeat_names_jobs_whose_lease_is_no_longer_theirs(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, _, token, _ = _claimed(http, db_session)
        beat = http.post(
            "/api/v1/agent/heartbeat",
            json={"running": [{"job_id": job.id, "lease_id": "old-lease"}]},
            headers=agent_headers(token),
        )
        assert beat.json()["cancel"] == [job.id]


def _as_writer(session: Session) -> Session:
    """End the session's read snapshot and start a writer transaction, as the server's
    own reaper does: on SQLite a read-then-write racing the server's writes would fail."""
    session.commit()
    bind = session.get_bind()
    session.connection(execution_options=dialect.write_transaction_options(bind.engine))
    return session


class TestExpiredLeases:
    def test_expired_lease_requeues_while_attempts_remain(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        job, _, _, _ = _claimed(http, db_session)
        later = datetime.now(UTC) + timedelta(minutes=5)
        writer = _as_writer(db_session)
        assert service.release_expired_leases(writer, Settings(), now=later) == [job.id]
        db_session.commit()
        stored = _fresh(db_session, job.id)
        assert stored.status is Status.QUEUED and stored.lease_id is None
        assert stored.error_message == "agent a was lost"

    def test_expired_lease_on_last_attempt_ends_in_error(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project, max_attempts=1)
        _, token = add_agent(db_session, "a")
        claim(http, token)
        later = datetime.now(UTC) + timedelta(minutes=5)
        service.release_expired_leases(_as_writer(db_session), Settings(), now=later)
        db_session.commit()
        stored = _fresh(db_session, job.id)
        assert stored.status is Status.ERROR and stored.error_message == "agent a was lost"

    def test_live_lease_is_left_alone(self, http: httpx.Client, db_session: Session) -> None:
        job, _, _, _ = _claimed(http, db_session)
        assert service.release_expired_leases(db_session, Settings()) == []
        assert _fresh(db_session, job.id).status is Status.RUNNING


def _as_admin(http: httpx.Client, db_session: Session) -> None:
    add_user(db_session, "root", is_admin=True)
    sign_in(http, "root")


def _finish(http: httpx.Client, token: str, job_id: int, lease: str) -> httpx.Response:
    return http.post(
        f"/api/v1/agent/jobs/{job_id}/finish",
        json={"status": "success"},
        headers=agent_headers(token, lease),
    )


class TestDisableAndEnable:
    def test_disabled_agent_finishes_its_running_job_and_claims_no_more(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        project = add_project(db_session, "p")
        first = queue_job(db_session, project, queued_at=minutes_ago(2))
        second = queue_job(db_session, project, queued_at=minutes_ago(1))
        agent, token = add_agent(db_session, "a", capacity=2)
        (spec,) = claim(http, token, free_slots=1)["jobs"]  # type: ignore[misc]
        disabled = http.post(f"/api/v1/agents/{agent.id}/disable")
        assert disabled.status_code == 200, disabled.text
        assert (disabled.json()["enabled"], disabled.json()["status"]) == (False, "disabled")
        assert disabled.json()["running_jobs"] == 1
        assert _job_ids(claim(http, token, free_slots=1)) == []
        assert _finish(http, token, first.id, str(spec["lease_id"])).status_code == 200
        assert _fresh(db_session, first.id).status is Status.SUCCESS
        assert _fresh(db_session, second.id).status is Status.QUEUED

    def test_enabled_again_it_claims_the_waiting_job(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        project = add_project(db_session, "p")
        job = queue_job(db_session, project)
        agent, token = add_agent(db_session, "a", enabled=False)
        assert _job_ids(claim(http, token)) == []
        enabled = http.post(f"/api/v1/agents/{agent.id}/enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["enabled"] is True
        assert _job_ids(claim(http, token)) == [job.id]
        assert http.get(f"/api/v1/agents/{agent.id}").json()["status"] == "online"

    def test_only_admins_may_disable_and_unknown_agent_is_404(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        agent, _ = add_agent(db_session, "a")
        add_user(db_session, "dev")
        sign_in(http, "dev")
        refused = http.post(f"/api/v1/agents/{agent.id}/disable")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "permission_denied"
        _as_admin(http, db_session)
        missing = http.post("/api/v1/agents/999999/enable")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "agent_not_found"
        db_session.expire_all()
        stored = db_session.get(Agent, agent.id)
        assert stored is not None and stored.enabled is True


class TestDeleteAgent:
    def test_idle_agent_is_deleted_and_its_token_stops_working(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        agent, token = add_agent(db_session, "a")
        claim(http, token)  # the server now knows the token (see `_known_agents`)
        deleted = http.delete(f"/api/v1/agents/{agent.id}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"id": agent.id, "name": "a", "requeued_jobs": []}
        assert http.get(f"/api/v1/agents/{agent.id}").status_code == 404
        refused = http.post(
            "/api/v1/agent/claim", json={"free_slots": 1, "wait": 0}, headers=agent_headers(token)
        )
        assert refused.status_code == 401

    def test_agent_running_a_job_is_not_deleted_without_force(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        job, _, _, agent = _claimed(http, db_session)
        refused = http.delete(f"/api/v1/agents/{agent.id}")
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "agent_busy" and error["detail"]["job_ids"] == [job.id]
        assert "force=true" in error["message"]
        assert http.get(f"/api/v1/agents/{agent.id}").status_code == 200
        assert _fresh(db_session, job.id).status is Status.RUNNING

    def test_forced_delete_requeues_its_jobs_for_another_agent(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        job, _, _, agent = _claimed(http, db_session)
        deleted = http.delete(f"/api/v1/agents/{agent.id}", params={"force": "true"})
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["requeued_jobs"] == [job.id]
        stored = _fresh(db_session, job.id)
        assert (stored.status, stored.agent_id, stored.lease_id) == (Status.QUEUED, None, None)
        assert stored.error_message == "agent a deleted"
        _, other = add_agent(db_session, "b")
        assert _job_ids(claim(http, other)) == [job.id]
        assert _fresh(db_session, job.id).attempts == 2


class TestAgentStatus:
    def test_status_online_offline_disabled_and_running_jobs(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        project = add_project(db_session, "p")
        queue_job(db_session, project)
        _, busy = add_agent(db_session, "busy")
        claim(http, busy)
        add_agent(db_session, "never-seen")
        add_agent(db_session, "gone", last_heartbeat_at=minutes_ago(5))
        add_agent(db_session, "off", last_heartbeat_at=datetime.now(UTC), enabled=False)
        add_agent(db_session, "beating", last_heartbeat_at=datetime.now(UTC))
        listed = {agent["name"]: agent for agent in http.get("/api/v1/agents").json()}
        assert {name: agent["status"] for name, agent in listed.items()} == {
            "busy": "online",
            "never-seen": "offline",
            "gone": "offline",
            "off": "disabled",
            "beating": "online",
        }
        assert listed["busy"]["running_jobs"] == 1 and listed["beating"]["running_jobs"] == 0
        assert listed["busy"]["last_heartbeat_at"] is not None
        assert listed["never-seen"]["last_heartbeat_at"] is None


def _waiting(http: httpx.Client, job_id: int) -> str | None:
    response = http.get(f"/api/v1/jobs/{job_id}/waiting")
    assert response.status_code == 200, response.text
    reason: str | None = response.json()["reason"]
    return reason


class TestJobWaiting:
    def test_no_online_agent_has_the_labels(self, http: httpx.Client, db_session: Session) -> None:
        _as_admin(http, db_session)
        project = add_project(db_session, "p")
        job = queue_job(db_session, project, labels=["linux", "gpu"])
        add_agent(db_session, "cpu", labels=["linux"], last_heartbeat_at=datetime.now(UTC))
        add_agent(db_session, "lost-gpu", labels=["gpu", "linux"], last_heartbeat_at=minutes_ago(9))
        assert _waiting(http, job.id) == "no online agent has labels gpu, linux"

    def test_all_matching_agents_are_full(self, http: httpx.Client, db_session: Session) -> None:
        _as_admin(http, db_session)
        project = add_project(db_session, "p")
        queue_job(db_session, project, queued_at=minutes_ago(2))
        waiting = queue_job(db_session, project, queued_at=minutes_ago(1))
        _, token = add_agent(db_session, "a", capacity=1)
        claim(http, token)
        assert _waiting(http, waiting.id) == "all matching agents are full (1 running of 1)"

    def test_project_concurrency_limit_reached(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        project = add_project(db_session, "p", limit=1)
        queue_job(db_session, project, queued_at=minutes_ago(2))
        waiting = queue_job(db_session, project, queued_at=minutes_ago(1))
        _, token = add_agent(db_session, "a", capacity=3)
        assert len(_job_ids(claim(http, token, free_slots=3))) == 1
        assert _waiting(http, waiting.id) == "project concurrency limit reached (1 of 1 running)"

    def test_free_matching_agent_means_it_waits_for_a_claim(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        project = add_project(db_session, "p")
        job = queue_job(db_session, project, labels=["linux"])
        add_agent(db_session, "a", labels=["linux", "docker"], last_heartbeat_at=datetime.now(UTC))
        assert _waiting(http, job.id) == "waiting for an agent to claim it"
        run = http.get(f"/api/v1/runs/{job.run_id}").json()
        assert run["jobs"][0]["waiting_reason"] == "waiting for an agent to claim it"

    def test_job_that_left_the_queue_has_no_reason(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        _as_admin(http, db_session)
        job, _, _, _ = _claimed(http, db_session)
        answer = http.get(f"/api/v1/jobs/{job.id}/waiting").json()
        assert (answer["status"], answer["reason"]) == ("running", None)
        assert http.get(f"/api/v1/runs/{job.run_id}").json()["jobs"][0]["waiting_reason"] is None

    def test_reading_needs_read_permission_on_the_project(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "private")
        job = queue_job(db_session, project)
        assert http.get(f"/api/v1/jobs/{job.id}/waiting").status_code == 401
        add_user(db_session, "stranger")
        sign_in(http, "stranger")
        refused = http.get(f"/api/v1/jobs/{job.id}/waiting")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "permission_denied"
        missing = http.get("/api/v1/jobs/999999/waiting")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
