"""Artifacts of runs: listing and downloading (agents upload through the agent API).

GET /api/v1/runs/{run}/artifacts           the run's artifacts, with sizes and hashes
GET /api/v1/artifacts/{artifact}/download  the file, with Content-Length and
    `Digest: sha-256=<base64>`, `X-Conveyor-Sha256: <hex>` and, when the pipeline
    asked for another hash, `X-Conveyor-Hash: <algorithm>:<value>`
"""

from __future__ import annotations

import base64
from pathlib import PurePosixPath

from fastapi import APIRouter
from fastapi.responses import FileResponse

from conveyor.pipeline.plan import HashAlgorithm
from conveyor.server.artifacts import service
from conveyor.server.artifacts.schemas import ArtifactRead
from conveyor.server.deps import AppSettings, DbSession, RequestActor

router = APIRouter(prefix="/api/v1", tags=["artifacts"])


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactRead])
def list_run_artifacts(run_id: int, session: DbSession, actor: RequestActor) -> list[ArtifactRead]:
    return [
        ArtifactRead(
            id=artifact.id,
            name=artifact.name,
            size=artifact.size_bytes,
            sha256=artifact.sha256,
            hash_algorithm=artifact.hash_algorithm,
            hash=artifact.hash_value,
            archive=artifact.archive_format,
            job_id=job.id,
            job_name=job.name,
            created_at=artifact.created_at,
            expires_at=artifact.expires_at,
            download_url=f"/api/v1/artifacts/{artifact.id}/download",
        )
        for artifact, job in service.run_artifacts(session, actor, run_id)
    ]


@router.get("/artifacts/{artifact_id}/download", response_class=FileResponse)
def download_artifact(
    artifact_id: int, session: DbSession, settings: AppSettings, actor: RequestActor
) -> FileResponse:
    download = service.artifact_for_download(session, settings, actor, artifact_id)
    artifact = download.artifact
    headers = {
        "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(artifact.sha256)).decode(),
        "X-Conveyor-Sha256": artifact.sha256,
    }
    if artifact.hash_algorithm is not HashAlgorithm.NONE and artifact.hash_value:
        headers["X-Conveyor-Hash"] = f"{artifact.hash_algorithm.value}:{artifact.hash_value}"
    return FileResponse(
        download.path,
        filename=PurePosixPath(artifact.name).name,
        headers=headers,
        media_type="application/octet-stream",
    )
