"""Agent <-> server wire models (DESIGN.md section 5).

Every agent call carries the agent's bearer token; calls about a job also carry the
job's lease id (header `X-Conveyor-Lease`), which the server checks against the job's
current lease, so a report from a stale or foreign lease changes nothing (409).

The calls, all under `/api/v1/agent`:

    POST  /register                       AgentInfo         -> AgentRegistered
    POST  /claim                          ClaimRequest      -> ClaimResponse   (long-poll)
    POST  /heartbeat                      Heartbeat         -> HeartbeatResponse
    PUT   /jobs/{job}/steps/{i}/log?offset=N   raw bytes    -> LogAppended     (409: LogGap)
    POST  /jobs/{job}/steps/{i}           StepReport        -> {}
    POST  /jobs/{job}/finish              JobReport         -> {}
    POST  /jobs/{job}/uploads             UploadStart       -> UploadState
    GET   /uploads/{id}                                     -> UploadState
    PUT   /uploads/{id}?offset=N          raw bytes         -> UploadState     (409: offset)
    POST  /uploads/{id}/complete                            -> ArtifactInfo

Logs are sent as raw bytes at a byte offset: a batch whose offset is below what the
server holds is a duplicate and ignored (the server answers with its size), one above
is a gap and refused with the size the server holds, from which the agent resends. So
the stored log is byte-identical to what the step printed, after masking.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from conveyor.pipeline.plan import ArchiveFormat, HashAlgorithm, JobPlan
from conveyor.protocol.status import Status

LEASE_HEADER = "X-Conveyor-Lease"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentInfo(_Wire):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    labels: list[str] = Field(default_factory=list)
    capacity: int = Field(default=1, ge=1, le=256)
    version: str = ""
    platform: str = ""
    backend: str = ""


class AgentRegistered(_Wire):
    agent_id: int
    heartbeat_interval: float
    """Seconds between heartbeats the server expects."""
    lease_duration: float
    """Seconds a lease lives without a heartbeat."""


class ClaimRequest(_Wire):
    free_slots: int = Field(ge=0)
    wait: float = Field(default=30.0, ge=0.0, le=30.0)
    """Seconds to hold the request open when no job is waiting (long-poll)."""


class CommitFacts(_Wire):
    sha: str
    branch: str | None = None
    tag: str | None = None
    message: str = ""
    author: str = ""


class JobSpec(_Wire):
    """Everything an agent needs to run one job; the plan is the compiled pipeline."""

    job_id: int
    run_id: int
    run_number: int
    project: str
    attempt: int
    lease_id: str
    lease_expires_in: float
    repo_url: str
    commit: CommitFacts
    event: str
    variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    plan: JobPlan


class ClaimResponse(_Wire):
    jobs: list[JobSpec] = Field(default_factory=list)
    cancel: list[int] = Field(default_factory=list)
    """Jobs this agent runs that it must stop (cancelled by a user, or lease lost)."""


class RunningJob(_Wire):
    job_id: int
    lease_id: str


class Heartbeat(_Wire):
    running: list[RunningJob] = Field(default_factory=list)


class HeartbeatResponse(_Wire):
    cancel: list[int] = Field(default_factory=list)
    lease_expires_in: float


class LogAppended(_Wire):
    size: int
    """Bytes of this step's log the server holds."""
    lines: int


class StepReport(_Wire):
    status: Status
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None


class JobReport(_Wire):
    status: Status
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class UploadStart(_Wire):
    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash_algorithm: HashAlgorithm = HashAlgorithm.SHA256
    hash: str | None = None
    archive: ArchiveFormat = ArchiveFormat.NONE


class UploadState(_Wire):
    upload_id: str
    offset: int
    size: int


class ArtifactInfo(_Wire):
    id: int
    name: str
    size: int
    sha256: str
    hash_algorithm: HashAlgorithm
    hash: str | None
    archive: ArchiveFormat
