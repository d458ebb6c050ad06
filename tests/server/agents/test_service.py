"""Queue rules of the agents service, called directly on SQLite and PostgreSQL: back-off
after a lost agent, the server's timeout backstop, agent status after a lost lease,
and claims that read the queue in pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.agents import Heartbeat, RunningJob
from conveyor.protocol.status import Status
from conveyor.server.agents import repository, service
from conveyor.server.agents.schemas import AgentStatus
from conveyor.server.config import Settings
from conveyor.server.models import Agent, Job, Step
from tests.server.agents.queue import add_agent, add_project, minutes_ago, queue_job

BACKOFF = 10.0


@pytest.fixture
def settings() -> Settings:
    return Settings(
        retry_backoff_seconds=BACKOFF,
        retry_backoff_max_seconds=300.0,
        job_timeout_grace_seconds=60.0,
        lease_seconds=60.0,
    )


def _claim(
    session: Session,
    settings: Settings,
    agent: Agent,
    free_slots: int = 1,
    now: datetime | None = None,
) -> list[int]:
    response = service.claim(session, settings, agent.id, free_slots, now=now)
    session.commit()
    return [spec.job_id for spec in response.jobs]


def _fresh(session: Session, model: type[Job] | type[Agent], row_id: int) -> Job | Agent:
    session.expire_all()
    row = session.get(model, row_id)
    assert row is not None
    return row


def _fresh_job(session: Session, job_id: int) -> Job:
    job = _fresh(session, Job, job_id)
    assert isinstance(job, Job)
    return job


def _fresh_agent(session: Session, agent_id: int) -> Agent:
    agent = _fresh(session, Agent, agent_id)
    assert isinstance(agent, Agent)
    return agent


def _lose(session: Session, settings: Settings, job: Job) -> datetime:
    """Let the job's lease run out and the reaper pass; returns the reaper's time."""
    lease_ends = _fresh_job(session, job.id).lease_expires_at
    assert lease_ends is not None
    later = lease_ends + timedelta(seconds=1)
    assert service.release_expired_leases(session, settings, now=later) == [job.id]
    session.commit()
    return later


class TestRetryBackoff:
    def test_first_loss_waits_the_base_and_each_further_one_twice_as_long(
        self, settings: Settings
    ) -> None:
        waits = [service.retry_backoff(settings, attempt).total_seconds() for attempt in (1, 2, 3)]
        assert waits == [BACKOFF, 2 * BACKOFF, 4 * BACKOFF]

    def test_wait_is_capped_however_many_attempts_came_before(self, settings: Settings) -> None:
        assert service.retry_backoff(settings, 6).total_seconds() == 300.0
        assert service.retry_backoff(settings, 10_000).total_seconds() == 300.0

    def test_zero_base_means_no_wait(self) -> None:
        assert service.retry_backoff(Settings(retry_backoff_seconds=0), 3) == timedelta(0)


class TestReleaseExpiredLeases:
    def test_requeued_job_is_not_claimed_before_its_backoff_ends(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project)
        lost, _ = add_agent(db_session, "lost")
        other, _ = add_agent(db_session, "other")
        assert _claim(db_session, settings, lost) == [job.id]
        reaped_at = _lose(db_session, settings, job)
        stored = _fresh_job(db_session, job.id)
        assert stored.status is Status.QUEUED
        assert stored.claimable_at == reaped_at + timedelta(seconds=BACKOFF)
        almost = reaped_at + timedelta(seconds=BACKOFF - 0.5)
        assert _claim(db_session, settings, other, now=almost) == []
        due = reaped_at + timedelta(seconds=BACKOFF)
        assert _claim(db_session, settings, other, now=due) == [job.id]
        claimed = _fresh_job(db_session, job.id)
        assert (claimed.attempts, claimed.claimable_at) == (2, None)

    def test_second_loss_waits_twice_as_long(self, db_session: Session, settings: Settings) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project, max_attempts=3)
        agent, _ = add_agent(db_session, "a")
        _claim(db_session, settings, agent)
        first_loss = _lose(db_session, settings, job)
        retry_at = first_loss + timedelta(seconds=BACKOFF)
        assert _claim(db_session, settings, agent, now=retry_at) == [job.id]
        second_loss = _lose(db_session, settings, job)
        stored = _fresh_job(db_session, job.id)
        assert stored.claimable_at == second_loss + timedelta(seconds=2 * BACKOFF)
        assert stored.error_message == "agent a was lost"

    def test_agent_a_job_was_taken_from_shows_offline_until_heard_from_again(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project)
        agent, _ = add_agent(db_session, "a")
        _claim(db_session, settings, agent)
        reaped_at = _lose(db_session, settings, job)
        lost = _fresh_agent(db_session, agent.id)
        assert lost.lost_at == reaped_at
        # Heard from moments ago, yet offline: the reaper found it lost.
        assert lost.last_heartbeat_at is not None
        assert service.agent_status(settings, lost, lost.last_heartbeat_at) is AgentStatus.OFFLINE
        service.heartbeat(db_session, settings, lost, Heartbeat(running=[]))
        db_session.commit()
        back = _fresh_agent(db_session, agent.id)
        assert back.lost_at is None
        assert service.agent_status(settings, back, datetime.now(UTC)) is AgentStatus.ONLINE

    def test_a_claim_is_heard_from_too_and_brings_the_lost_agent_back_online(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project)
        agent, _ = add_agent(db_session, "a")
        _claim(db_session, settings, agent)
        _lose(db_session, settings, job)
        assert _claim(db_session, settings, agent) == []  # the job still waits out its back-off
        back = _fresh_agent(db_session, agent.id)
        assert back.lost_at is None
        assert service.agent_status(settings, back, datetime.now(UTC)) is AgentStatus.ONLINE

    def test_last_attempt_ends_in_error_and_still_marks_the_agent_lost(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project, max_attempts=1)
        agent, _ = add_agent(db_session, "a")
        _claim(db_session, settings, agent)
        _lose(db_session, settings, job)
        stored = _fresh_job(db_session, job.id)
        assert (stored.status, stored.claimable_at) == (Status.ERROR, None)
        assert _fresh_agent(db_session, agent.id).lost_at is not None


class TestExplainWaiting:
    def test_job_in_backoff_says_which_agent_was_lost_and_when_it_is_due(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project)
        agent, _ = add_agent(db_session, "builder-1")
        _claim(db_session, settings, agent)
        reaped_at = _lose(db_session, settings, job)
        stored = _fresh_job(db_session, job.id)
        two_seconds_on = reaped_at + timedelta(seconds=2)
        reasons = service.explain_waiting(db_session, settings, [stored], now=two_seconds_on)
        assert reasons == {job.id: "retrying after agent builder-1 was lost; due in 8 s"}

    def test_once_due_the_usual_reason_comes_back(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project)
        agent, _ = add_agent(db_session, "a")
        _claim(db_session, settings, agent)
        reaped_at = _lose(db_session, settings, job)
        stored = _fresh_job(db_session, job.id)
        due = reaped_at + timedelta(seconds=BACKOFF + 1)
        reasons = service.explain_waiting(db_session, settings, [stored], now=due)
        assert reasons == {job.id: "no agent is online"}

    def test_long_waits_read_in_minutes(self) -> None:
        assert [service.describe_wait(s) for s in (0.2, 7.1, 60, 125)] == [
            "1 s",
            "8 s",
            "1 min",
            "2 min 5 s",
        ]


class TestEndOverdueJobs:
    def _running(
        self, session: Session, settings: Settings, timeout: float | None
    ) -> tuple[Job, Agent, str]:
        project = add_project(session, "p")
        job = queue_job(session, project, timeout_seconds=timeout)
        agent, _ = add_agent(session, "a")
        response = service.claim(session, settings, agent.id, 1)
        session.commit()
        (spec,) = response.jobs
        return _fresh_job(session, job.id), agent, spec.lease_id

    def test_job_past_timeout_and_grace_ends_in_error_without_its_lease(
        self, db_session: Session, settings: Settings
    ) -> None:
        job, agent, _ = self._running(db_session, settings, timeout=600)
        assert job.started_at is not None
        after = job.started_at + timedelta(seconds=600 + 60 + 1)
        assert service.end_overdue_jobs(db_session, settings, now=after) == [job.id]
        db_session.commit()
        ended = _fresh_job(db_session, job.id)
        assert ended.status is Status.ERROR
        assert ended.error_message == "timed out on the server after 10m (the agent did not report)"
        assert (ended.lease_id, ended.lease_expires_at, ended.finished_at) == (None, None, after)
        steps = db_session.scalars(select(Step.status).where(Step.job_id == job.id)).all()
        assert list(steps) == [Status.SKIPPED]
        assert _fresh_agent(db_session, agent.id).running == 0

    def test_job_within_its_grace_is_left_running(
        self, db_session: Session, settings: Settings
    ) -> None:
        job, _, _ = self._running(db_session, settings, timeout=600)
        assert job.started_at is not None
        within = job.started_at + timedelta(seconds=600 + 59)
        assert service.end_overdue_jobs(db_session, settings, now=within) == []
        assert _fresh_job(db_session, job.id).status is Status.RUNNING

    def test_job_without_timeout_is_never_ended_by_the_server(
        self, db_session: Session, settings: Settings
    ) -> None:
        job, _, _ = self._running(db_session, settings, timeout=None)
        far = datetime.now(UTC) + timedelta(days=30)
        assert service.end_overdue_jobs(db_session, settings, now=far) == []
        assert _fresh_job(db_session, job.id).status is Status.RUNNING

    def test_agent_is_told_to_stop_at_its_next_heartbeat_and_its_report_is_refused(
        self, db_session: Session, settings: Settings
    ) -> None:
        job, agent, lease_id = self._running(db_session, settings, timeout=90)
        assert job.started_at is not None
        after = job.started_at + timedelta(seconds=90 + 61)
        service.end_overdue_jobs(db_session, settings, now=after)
        db_session.commit()
        beat = Heartbeat(running=[RunningJob(job_id=job.id, lease_id=lease_id)])
        response = service.heartbeat(db_session, settings, _fresh_agent(db_session, agent.id), beat)
        db_session.commit()
        assert response.cancel == [job.id]
        with pytest.raises(service.StaleLeaseError):
            service.check_lease(db_session, _fresh_agent(db_session, agent.id), job.id, lease_id)


class TestClaimReadsTheQueueInPages:
    def test_long_queue_of_a_project_at_its_limit_does_not_hide_later_jobs(
        self, db_session: Session, settings: Settings
    ) -> None:
        limited = add_project(db_session, "limited", limit=1)
        free = add_project(db_session, "free")
        head = [
            queue_job(db_session, limited, queued_at=minutes_ago(100 - n), commit=False)
            for n in range(3 * repository.CLAIM_PAGE_SIZE)
        ]
        db_session.commit()
        tail = queue_job(db_session, free, queued_at=minutes_ago(1))
        agent, _ = add_agent(db_session, "a", capacity=3)
        assert _claim(db_session, settings, agent, free_slots=3) == [head[0].id, tail.id]

    def test_jobs_with_labels_the_agent_lacks_do_not_hide_later_jobs(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        for n in range(3 * repository.CLAIM_PAGE_SIZE):
            queue_job(
                db_session, project, labels=["gpu"], queued_at=minutes_ago(100 - n), commit=False
            )
        db_session.commit()
        subset = queue_job(db_session, project, labels=["linux"], queued_at=minutes_ago(2))
        unlabelled = queue_job(db_session, project, queued_at=minutes_ago(1))
        agent, _ = add_agent(db_session, "a", labels=["linux", "docker"], capacity=5)
        assert _claim(db_session, settings, agent, free_slots=5) == [subset.id, unlabelled.id]

    def test_agent_without_labels_gets_only_jobs_without_labels(
        self, db_session: Session, settings: Settings
    ) -> None:
        project = add_project(db_session, "p")
        queue_job(db_session, project, labels=["linux"], queued_at=minutes_ago(2))
        plain = queue_job(db_session, project, queued_at=minutes_ago(1))
        agent, _ = add_agent(db_session, "a", capacity=2)
        assert _claim(db_session, settings, agent, free_slots=2) == [plain.id]


class TestDescribeDuration:
    def test_reads_as_pipeline_files_write_durations(self) -> None:
        seconds = (0.5, 45, 60, 90, 600, 3600, 5400)
        assert [service.describe_duration(s) for s in seconds] == [
            "0.5s",
            "45s",
            "1m",
            "90s",
            "10m",
            "1h",
            "1h30m",
        ]
