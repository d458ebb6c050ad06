"""Artifacts: resumable uploads from agents, the stored files, and their rows.

An upload lives in `<data_dir>/uploads/` as `<id>.part` (the bytes so far) and
`<id>.json` (name, size, sha256, requested hash, archive, job, agent, created). The
agent asks for the offset (`upload_state`), sends chunks at exactly that offset
(`write_chunk`; any other offset is a 409 carrying the held one), and completes it
(`complete_upload`): the size and sha256 are verified (a mismatch removes the partial
file: 422), the file is moved to `<artifacts root>/<project>/<run number>/<job id>/<name>`
and only then is the `Artifact` row created, with its path relative to the root.

Completing is idempotent: the meta file remembers where the file went, so an agent
whose answer was lost may complete again and gets the same artifact (the row is made
then if the first request's transaction failed after the move). Meta files of
completed uploads, and abandoned partial uploads, are removed by
`remove_abandoned_uploads`, which the server schedules.

Names are relative paths (`reports/junit.xml`): no absolute paths, no `..`, no
backslashes, no control characters; `.` parts and repeated slashes are dropped.
Every path that is served or written is checked to stay inside its root.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from sqlalchemy.orm import Session

from conveyor.pipeline.plan import ArchiveFormat, HashAlgorithm, JobPlan
from conveyor.protocol.agents import UploadStart, UploadState
from conveyor.server.artifacts import repository
from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.errors import (
    ConflictError,
    ConveyorError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from conveyor.server.models.artifact import Artifact
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.runs.repository import RunRepository
from conveyor.server.users.authorization import Action, Actor, authorize

UPLOADS_DIRECTORY = "uploads"
MAX_NAME_LENGTH = 255
HASH_CHUNK_BYTES = 1 << 20
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class ArtifactNameError(InvalidInputError):
    code = "artifact_name_refused"


class UploadNotFoundError(NotFoundError):
    code = "upload_not_found"


class UploadOfAnotherAgentError(PermissionDeniedError):
    code = "upload_of_another_agent"


class UploadOffsetError(ConflictError):
    code = "upload_offset_mismatch"


class UploadLeaseEndedError(ConflictError):
    code = "upload_lease_ended"


class UploadIncompleteError(ConflictError):
    code = "upload_incomplete"


class UploadTooLargeError(InvalidInputError):
    code = "upload_too_large"


class UploadChecksumError(InvalidInputError):
    code = "upload_checksum_mismatch"


class StorageFullError(ConveyorError):
    status_code = 507
    code = "storage_full"


class ArtifactNotFoundError(NotFoundError):
    code = "artifact_not_found"


class ArtifactPathRefusedError(NotFoundError):
    code = "artifact_path_refused"


# --- names and paths -------------------------------------------------------------------


def normalize_name(name: str) -> str:
    """`name` as a clean relative POSIX path, or ArtifactNameError saying why not."""

    def refuse(why: str) -> ArtifactNameError:
        return ArtifactNameError(
            f"artifact name {name!r} is refused: {why}; use a relative path such as "
            "'dist/app.tar.gz'",
            detail={"name": name},
        )

    if not name or not name.strip():
        raise refuse("it is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise refuse(f"it is longer than {MAX_NAME_LENGTH} characters")
    if _CONTROL_CHARACTERS.search(name):
        raise refuse("it contains control characters")
    if "\\" in name:
        raise refuse("it contains a backslash")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise refuse("it is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise refuse("it contains '..'")
    if not parts:
        raise refuse("it names no file")
    return "/".join(parts)


def _inside(root: Path, candidate: Path) -> Path:
    """`candidate` resolved (symbolic links followed), if it stays inside `root`."""
    resolved_root = root.resolve()
    resolved = candidate.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise ArtifactPathRefusedError(
            f"the path {candidate} leaves the artifact root {resolved_root}; it is not served",
        )
    return resolved


def artifact_relative_path(project: Project, run: Run, job: Job, name: str) -> str:
    if not project.name or "/" in project.name or project.name in (".", ".."):
        raise ArtifactNameError(
            f"project name {project.name!r} cannot be an artifact directory",
            detail={"project": project.name},
        )
    return str(PurePosixPath(project.name, str(run.number), str(job.id), normalize_name(name)))


def artifact_file(settings: Settings, artifact: Artifact) -> Path:
    """The stored file of `artifact`, checked to lie inside the artifact root."""
    relative = PurePosixPath(artifact.relative_path)
    if relative.is_absolute() or ".." in relative.parts or "\\" in artifact.relative_path:
        raise ArtifactPathRefusedError(
            f"artifact {artifact.id} has the path {artifact.relative_path!r}, which leaves the "
            "artifact root; it is not served",
            detail={"artifact": artifact.id},
        )
    return _inside(settings.artifacts_path, settings.artifacts_path / relative)


# --- uploads ---------------------------------------------------------------------------


@dataclass
class UploadMeta:
    upload_id: str
    name: str
    size: int
    sha256: str
    hash_algorithm: str
    hash: str | None
    archive: str
    job_id: int
    agent_id: int
    created: float
    completed_path: str | None = None
    """Relative to the artifact root, once the file was moved there."""
    lease_id: str | None = None
    """The job's lease when the upload started: it completes only under that lease."""


def _uploads_dir(settings: Settings) -> Path:
    return settings.data_dir / UPLOADS_DIRECTORY


def _part_path(settings: Settings, upload_id: str) -> Path:
    return _uploads_dir(settings) / f"{upload_id}.part"


def _meta_path(settings: Settings, upload_id: str) -> Path:
    return _uploads_dir(settings) / f"{upload_id}.json"


def _write_meta(settings: Settings, meta: UploadMeta) -> None:
    # Written aside and renamed, so a crash never leaves half a meta file.
    target = _meta_path(settings, meta.upload_id)
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(asdict(meta)), encoding="utf-8")
    os.replace(temporary, target)


def _read_meta(settings: Settings, upload_id: str, agent_id: int) -> UploadMeta:
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise UploadNotFoundError(
            f"there is no upload {upload_id!r}; start one with POST "
            "/api/v1/agent/jobs/{job}/uploads",
            detail={"upload": upload_id},
        )
    try:
        meta = UploadMeta(**json.loads(_meta_path(settings, upload_id).read_text("utf-8")))
    except FileNotFoundError:
        raise UploadNotFoundError(
            f"there is no upload {upload_id!r} (it expired, failed, or never existed); "
            "start a new one with POST /api/v1/agent/jobs/{job}/uploads",
            detail={"upload": upload_id},
        ) from None
    if meta.agent_id != agent_id:
        raise UploadOfAnotherAgentError(
            f"upload {upload_id!r} belongs to another agent; an agent may only continue "
            "its own uploads",
            detail={"upload": upload_id},
        )
    return meta


def _held(settings: Settings, upload_id: str) -> int:
    try:
        return _part_path(settings, upload_id).stat().st_size
    except FileNotFoundError:
        return 0


def _discard(settings: Settings, upload_id: str) -> None:
    for path in (_part_path(settings, upload_id), _meta_path(settings, upload_id)):
        path.unlink(missing_ok=True)


def _storage_full(settings: Settings, upload_id: str, what: str) -> StorageFullError:
    _discard(settings, upload_id)
    return StorageFullError(
        f"the server's disk is full while {what} upload {upload_id!r}; the partial upload "
        "was removed: free space on the server (or remove old artifacts with `conveyor "
        "cleanup`) and upload again",
        detail={"upload": upload_id},
    )


_upload_locks: dict[str, threading.Lock] = {}
_upload_locks_guard = threading.Lock()


@contextmanager
def _upload_lock(upload_id: str) -> Iterator[None]:
    # Two requests on one upload (a retried chunk racing the original) serialise.
    with _upload_locks_guard:
        lock = _upload_locks.setdefault(upload_id, threading.Lock())
    with lock:
        yield


def _forget_lock(upload_id: str) -> None:
    with _upload_locks_guard:
        _upload_locks.pop(upload_id, None)


def start_upload(
    session: Session, settings: Settings, job: Job, agent_id: int, spec: UploadStart
) -> UploadState:
    """A new upload of `spec.name` for `job`, bound to the agent `agent_id`."""
    del session  # the job was checked by the caller; nothing is written until complete
    name = normalize_name(spec.name)
    upload_id = secrets.token_urlsafe(18)
    uploads = _uploads_dir(settings)
    meta = UploadMeta(
        upload_id=upload_id,
        name=name,
        size=spec.size,
        sha256=spec.sha256,
        hash_algorithm=str(spec.hash_algorithm),
        hash=spec.hash,
        archive=str(spec.archive),
        job_id=job.id,
        agent_id=agent_id,
        created=time.time(),
        lease_id=job.lease_id,
    )
    try:
        uploads.mkdir(parents=True, exist_ok=True)
        _part_path(settings, upload_id).touch()
        _write_meta(settings, meta)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _storage_full(settings, upload_id, "starting") from error
        raise
    return UploadState(upload_id=upload_id, offset=0, size=spec.size)


def upload_state(settings: Settings, upload_id: str, agent_id: int) -> UploadState:
    meta = _read_meta(settings, upload_id, agent_id)
    return UploadState(upload_id=upload_id, offset=_held(settings, upload_id), size=meta.size)


def write_chunk(
    settings: Settings, upload_id: str, agent_id: int, offset: int, data: bytes
) -> UploadState:
    """Append `data` at `offset`, which must be the number of bytes held."""
    with _upload_lock(upload_id):
        meta = _read_meta(settings, upload_id, agent_id)
        part = _part_path(settings, upload_id)
        held = _held(settings, upload_id)
        if offset != held:
            raise UploadOffsetError(
                f"upload {upload_id!r} holds {held} bytes; a chunk at byte {offset} does not "
                f"follow on: send from byte {held}",
                detail={"offset": held},
            )
        if held + len(data) > meta.size:
            raise UploadTooLargeError(
                f"upload {upload_id!r} of {meta.name!r} was declared as {meta.size} bytes; "
                f"this chunk would make it {held + len(data)}",
                detail={"offset": held, "size": meta.size},
            )
        try:
            with part.open("r+b") as handle:
                handle.seek(held)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except FileNotFoundError:
            raise UploadNotFoundError(
                f"upload {upload_id!r} was removed meanwhile; start a new one",
                detail={"upload": upload_id},
            ) from None
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise _storage_full(settings, upload_id, "writing") from error
            raise
        return UploadState(upload_id=upload_id, offset=held + len(data), size=meta.size)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _expiry(job: Job) -> datetime | None:
    artifacts = JobPlan.model_validate(job.plan).artifacts
    if artifacts is None or artifacts.expire_in is None:
        return None
    return utcnow() + timedelta(seconds=artifacts.expire_in)


def _record(session: Session, job: Job, meta: UploadMeta, relative: str) -> Artifact:
    artifact = repository.artifact_at(session, job.id, relative)
    if artifact is None:
        artifact = Artifact(job_id=job.id, relative_path=relative, name=meta.name)
        session.add(artifact)
    # A requeued job uploads again under the same name: the new file replaced the old
    # one, so its row takes the new figures.
    artifact.size_bytes = meta.size
    artifact.sha256 = meta.sha256
    artifact.hash_algorithm = HashAlgorithm(meta.hash_algorithm)
    artifact.hash_value = meta.hash
    artifact.archive_format = ArchiveFormat(meta.archive)
    artifact.created_at = utcnow()
    artifact.expires_at = _expiry(job)
    session.flush()
    return artifact


def complete_upload(
    session: Session, settings: Settings, upload_id: str, agent_id: int
) -> Artifact:
    """Verify the upload, move it into the artifact root, and record its row."""
    with _upload_lock(upload_id):
        meta = _read_meta(settings, upload_id, agent_id)
        found = RunRepository(session).job_with_owners(meta.job_id)
        if found is None:
            _discard(settings, upload_id)
            raise UploadNotFoundError(
                f"the job of upload {upload_id!r} (job {meta.job_id}) no longer exists",
                detail={"upload": upload_id, "job": meta.job_id},
            )
        job, run, project = found
        if meta.lease_id is not None and job.lease_id != meta.lease_id:
            # The job was requeued (or ended) since: a stale agent's file must not
            # become the artifact of the attempt that runs now.
            _discard(settings, upload_id)
            _forget_lock(upload_id)
            raise UploadLeaseEndedError(
                f"job {job.id} was requeued or ended after upload {upload_id!r} of "
                f"{meta.name!r} began (its lease is over): the upload was removed; stop "
                "the job and claim new work",
                detail={"upload": upload_id, "job": job.id},
            )
        if meta.completed_path is not None:
            return _record(session, job, meta, meta.completed_path)
        part = _part_path(settings, upload_id)
        held = _held(settings, upload_id)
        if held != meta.size:
            raise UploadIncompleteError(
                f"upload {upload_id!r} of {meta.name!r} holds {held} of {meta.size} bytes; "
                f"send the rest from byte {held} before completing it",
                detail={"offset": held, "size": meta.size},
            )
        actual = _sha256_of(part)
        if actual != meta.sha256:
            _discard(settings, upload_id)
            _forget_lock(upload_id)
            raise UploadChecksumError(
                f"upload {upload_id!r} of {meta.name!r} has sha256 {actual}, not the declared "
                f"{meta.sha256}: the bytes were damaged on the way; the partial upload was "
                "removed, upload it again",
                detail={"upload": upload_id, "expected": meta.sha256, "actual": actual},
            )
        relative = artifact_relative_path(project, run, job, meta.name)
        root = settings.artifacts_path
        destination = root / relative
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            _inside(root, destination.parent)
            # shutil.move renames when it can and copies across file systems (an
            # artifact root on another disk than the data directory).
            shutil.move(part, destination)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                destination.unlink(missing_ok=True)
                raise _storage_full(settings, upload_id, "storing") from error
            raise
        meta.completed_path = relative
        _write_meta(settings, meta)
        return _record(session, job, meta, relative)


def remove_abandoned_uploads(settings: Settings, older_than: timedelta) -> int:
    """Remove uploads (partial or completed) started more than `older_than` ago;
    returns how many. The server runs this now and then."""
    uploads = _uploads_dir(settings)
    if not uploads.is_dir():
        return 0
    cutoff = time.time() - older_than.total_seconds()
    removed = 0
    for meta_file in uploads.glob("*.json"):
        upload_id = meta_file.stem
        try:
            created = float(json.loads(meta_file.read_text("utf-8"))["created"])
        except (OSError, ValueError, KeyError, TypeError):
            created = meta_file.stat().st_mtime
        if created < cutoff:
            _discard(settings, upload_id)
            _forget_lock(upload_id)
            removed += 1
    for orphan in uploads.glob("*.part"):
        # A part without meta (a crash between the two writes).
        if not orphan.with_suffix(".json").exists() and orphan.stat().st_mtime < cutoff:
            orphan.unlink(missing_ok=True)
            removed += 1
    return removed


# --- reading ---------------------------------------------------------------------------


def run_artifacts(session: Session, actor: Actor, run_id: int) -> list[tuple[Artifact, Job]]:
    found = RunRepository(session).with_project(run_id)
    if found is None:
        raise NotFoundError(
            f"there is no run {run_id}; GET /api/v1/runs lists the runs you may read",
            code="run_not_found",
            detail={"run": run_id},
        )
    authorize(actor, found[1], Action.READ)
    return repository.artifacts_of_run(session, run_id)


@dataclass(frozen=True)
class Download:
    artifact: Artifact
    path: Path


def artifact_for_download(
    session: Session, settings: Settings, actor: Actor, artifact_id: int
) -> Download:
    found = repository.artifact_with_project(session, artifact_id)
    if found is None:
        raise ArtifactNotFoundError(
            f"there is no artifact {artifact_id}; GET /api/v1/runs/{{run id}}/artifacts lists "
            "a run's artifacts",
            detail={"artifact": artifact_id},
        )
    artifact, project = found
    authorize(actor, project, Action.READ)
    path = artifact_file(settings, artifact)
    if not path.is_file():
        raise ArtifactNotFoundError(
            f"the file of artifact {artifact_id} ({artifact.name!r}) is no longer stored "
            "(it expired or was removed)",
            detail={"artifact": artifact_id},
        )
    return Download(artifact=artifact, path=path)
