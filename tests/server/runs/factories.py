"""Runs, jobs and steps written straight to the database, for the query tests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.db.base import utcnow
from conveyor.server.models import Job, Project, Run, Step

PIPELINE = (
    'steps:\n  - name: build\n    commands: [echo hi]\n  - name: test\n    commands: ["true"]\n'
)


def add_run(
    session: Session,
    project: Project,
    number: int,
    *,
    status: Status = Status.QUEUED,
    branch: str | None = "main",
    actor_name: str = "ada",
    event: str = "api",
    created_at: datetime | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    jobs: int = 1,
) -> Run:
    """A committed run with `jobs` jobs of one step each, all in `status`."""
    run = Run(
        project_id=project.id,
        number=number,
        event=event,
        branch=branch,
        commit_sha=f"{number:040x}",
        commit_message=f"change {number}",
        commit_author="Ada Tester <ada@example.test>",
        actor_name=actor_name,
        status=status,
        created_at=created_at or utcnow(),
        started_at=started_at,
        finished_at=finished_at,
    )
    session.add(run)
    session.flush()
    for index in range(jobs):
        job = Job(
            run_id=run.id,
            name=f"job{index}",
            plan={"name": f"job{index}", "steps": [{"name": "build"}]},
            status=status,
        )
        session.add(job)
        session.flush()
        session.add(Step(job_id=job.id, index=0, name="build", status=status))
    session.commit()
    return run
