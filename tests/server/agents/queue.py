"""Rows for agent tests, made directly with the models: projects, queued jobs, agents."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.orm import Session

from conveyor.pipeline.plan import JobPlan, StepPlan
from conveyor.protocol.agents import LEASE_HEADER
from conveyor.server.agents.service import hash_agent_token, new_agent_token
from conveyor.server.models import Agent, Job, Project, Run, Step

_numbers = itertools.count(1)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def add_project(
    session: Session, name: str, *, git_url: str = "file:///nowhere", limit: int | None = None
) -> Project:
    project = Project(name=name, git_url=git_url, concurrency_limit=limit)
    session.add(project)
    session.commit()
    return project


def one_step_plan(command: str = "true", name: str = "build") -> JobPlan:
    return JobPlan(name=name, steps=[StepPlan(name="step", commands=[command])])


def queue_job(
    session: Session,
    project: Project,
    *,
    priority: int = 0,
    labels: list[str] | None = None,
    queued_at: datetime | None = None,
    plan: JobPlan | None = None,
    commit_sha: str = "0" * 40,
    max_attempts: int = 3,
    timeout_seconds: float | None = None,
    commit: bool = True,
) -> Job:
    plan = plan or one_step_plan()
    run = Run(
        project_id=project.id,
        number=next(_numbers),
        event="api",
        branch="main",
        commit_sha=commit_sha,
        variables={"GREETING": "hello"},
    )
    session.add(run)
    session.flush()
    job = Job(
        run_id=run.id,
        name=plan.name,
        plan=plan.model_dump(mode="json"),
        labels=labels or [],
        priority=priority,
        queued_at=queued_at or datetime.now(UTC),
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
    )
    session.add(job)
    session.flush()
    for index, step in enumerate(plan.steps):
        session.add(Step(job_id=job.id, index=index, name=step.name))
    if commit:
        session.commit()
    return job


def add_agent(
    session: Session,
    name: str,
    *,
    labels: list[str] | None = None,
    capacity: int = 1,
    last_heartbeat_at: datetime | None = None,
    enabled: bool = True,
) -> tuple[Agent, str]:
    token = new_agent_token()
    agent = Agent(
        name=name,
        labels=labels or [],
        capacity=capacity,
        token_hash=hash_agent_token(token),
        last_heartbeat_at=last_heartbeat_at,
        enabled=enabled,
    )
    session.add(agent)
    session.commit()
    return agent, token


def agent_headers(token: str, lease_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if lease_id is not None:
        headers[LEASE_HEADER] = lease_id
    return headers


def claim(
    client: httpx.Client, token: str, free_slots: int = 1, wait: float = 0.0
) -> dict[str, object]:
    response = client.post(
        "/api/v1/agent/claim",
        json={"free_slots": free_slots, "wait": wait},
        headers=agent_headers(token),
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def minutes_ago(minutes: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)
