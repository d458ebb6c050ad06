"""A project's files on disk, made by the real services: a run triggered through the
API (which clones the project's mirror), a step log appended by the log service, an
artifact uploaded and completed, an upload left half done, and the embedded agent's
mirror."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.agent.checkout import MirrorCache
from conveyor.protocol.agents import UploadStart
from conveyor.server.artifacts import service as artifacts_service
from conveyor.server.config import Settings
from conveyor.server.logs import service as logs_service
from conveyor.server.models import Job, Project, Step

AGENT = 5


@dataclass(frozen=True)
class StoredFiles:
    log_directory: Path
    """`<data>/logs/<run id>`"""
    step_log: Path
    artifact_directory: Path
    """`<artifacts>/<project>`"""
    artifact: Path
    upload_part: Path
    upload_meta: Path
    mirror: Path
    agent_mirror: Path
    """The embedded agent's mirror of the project's repository."""

    def paths(self) -> list[Path]:
        return [
            self.log_directory,
            self.step_log,
            self.artifact_directory,
            self.artifact,
            self.upload_part,
            self.upload_meta,
            self.mirror,
            self.agent_mirror,
        ]

    def existing(self) -> list[Path]:
        return [path for path in self.paths() if path.exists()]


def store_files(
    http: httpx.Client,
    session: Session,
    settings: Settings,
    project: Project,
    headers: dict[str, str],
) -> StoredFiles:
    """Give `project` (whose git URL is a real repository) one of each of its files."""
    response = http.post(f"/api/v1/projects/{project.name}/runs", headers=headers, json={})
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    session.commit()  # a new transaction sees the server's rows
    job = session.scalars(select(Job).where(Job.run_id == run_id).order_by(Job.id)).first()
    assert job is not None
    step = session.scalars(select(Step).where(Step.job_id == job.id).order_by(Step.index)).first()
    assert step is not None
    logs_service.append(session, settings, step, 0, b"building\ndone\n", {})
    session.commit()

    data = f"the artifact of {project.name}".encode()
    spec = UploadStart(name="dist/app.txt", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    upload = artifacts_service.start_upload(session, settings, job, AGENT, spec)
    artifacts_service.write_chunk(settings, upload.upload_id, AGENT, 0, data)
    artifact = artifacts_service.complete_upload(session, settings, upload.upload_id, AGENT)
    session.commit()

    partial = artifacts_service.start_upload(session, settings, job, AGENT, spec)
    artifacts_service.write_chunk(settings, partial.upload_id, AGENT, 0, data[:5])

    # The embedded agent's mirror, as its checkouts make it (`conveyor agent` in a
    # process of its own does the same; tests/e2e/test_server_process.py runs it).
    agent_mirror = MirrorCache(settings.embedded_agent_mirrors).update(project.git_url)

    uploads = settings.data_dir / artifacts_service.UPLOADS_DIRECTORY
    stored = StoredFiles(
        log_directory=settings.data_dir / "logs" / str(run_id),
        step_log=logs_service.log_file(settings, step),
        artifact_directory=settings.artifacts_path / project.name,
        artifact=artifacts_service.artifact_file(settings, artifact),
        upload_part=uploads / f"{partial.upload_id}.part",
        upload_meta=uploads / f"{partial.upload_id}.json",
        mirror=MirrorCache(settings.repos_path).mirror_path(project.git_url),
        agent_mirror=agent_mirror,
    )
    missing = [path for path in stored.paths() if not path.exists()]
    assert not missing, f"the services did not make {missing}"
    return stored
