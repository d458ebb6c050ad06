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
    POST  /jobs/{job}/steps/{i}/end       StepEnd           -> LogAppended     (409: LogGap)
    POST  /jobs/{job}/finish              JobReport         -> {}
    POST  /jobs/{job}/uploads             UploadStart       -> UploadState
    GET   /uploads/{id}                                     -> UploadState
    PUT   /uploads/{id}?offset=N          raw bytes         -> UploadState     (409: offset)
    POST  /uploads/{id}/complete                            -> ArtifactInfo

Logs are sent as raw bytes at a byte offset: a batch whose offset is below what the
server holds is a duplicate and ignored (the server answers with its size), one above
is a gap and refused with the size the server holds, from which the agent resends. So
the stored log is byte-identical to what the step printed, after masking.

A batch may carry the time of each line that starts in it (`LogChunk`, sent as
`LOG_CHUNK_MEDIA_TYPE`): the agent's clock when it read the line's first byte, as ms
after the step started, plus when the step started. The agent records them as it
reads, so a batch sent late (spooled through a server outage) or resent from a gap
keeps the times its lines had. A plain `application/octet-stream` body (an older
agent) is the bytes alone; the server then stamps the lines with their arrival.
"""

from __future__ import annotations

import base64
import binascii
import struct
import sys
from array import array
from dataclasses import dataclass, field
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


LOG_CHUNK_MEDIA_TYPE = "application/vnd.conveyor.log-chunk"
RAW_LOG_MEDIA_TYPE = "application/octet-stream"
_CHUNK_MAGIC = b"CVLC"
_CHUNK_HEADER = struct.Struct("<4sqI")
_OFFSET_SIZE = 4
_MAX_OFFSET_MS = 0xFFFF_FFFF


class InvalidLogChunkError(ValueError):
    """A log batch body that claims to be a `LogChunk` but is not a whole one."""


@dataclass(frozen=True)
class LogChunk:
    """A batch of a step's log bytes and the times of the lines that start in it.

    Body layout (little-endian): b"CVLC", int64 `step_started_at_ms` (ms since the
    epoch, the agent's clock), uint32 `n`, `n` x uint32 `line_offsets_ms` (ms after
    the step started, one per line that STARTS in `data`: at its first byte if the
    log so far ends with a newline, and after each newline that is not its last
    byte), then `data`. A server that stores only a tail of `data` (it holds the
    head) uses the last offsets, which belong to the lines of that tail."""

    data: bytes
    step_started_at_ms: int | None = None
    """None: the bytes alone (times unknown; the server stamps their arrival)."""
    line_offsets_ms: array[int] = field(default_factory=lambda: array("I"))

    def encode(self) -> tuple[str, bytes]:
        """The media type and body to send."""
        if self.step_started_at_ms is None:
            return RAW_LOG_MEDIA_TYPE, self.data
        offsets = self.line_offsets_ms
        if offsets.typecode != "I" or sys.byteorder == "big":
            # A copy in the wire's form; the agent's own (uint32) goes as it is.
            offsets = array("I", (min(max(ms, 0), _MAX_OFFSET_MS) for ms in offsets))
            if sys.byteorder == "big":
                offsets.byteswap()
        header = _CHUNK_HEADER.pack(_CHUNK_MAGIC, self.step_started_at_ms, len(offsets))
        return LOG_CHUNK_MEDIA_TYPE, header + offsets.tobytes() + self.data

    @classmethod
    def decode(cls, media_type: str | None, body: bytes) -> LogChunk:
        """The chunk in a request body of `media_type` (any other type than
        `LOG_CHUNK_MEDIA_TYPE`: raw bytes without times)."""
        if (media_type or "").split(";")[0].strip().lower() != LOG_CHUNK_MEDIA_TYPE:
            return cls(data=body)
        if len(body) < _CHUNK_HEADER.size:
            raise InvalidLogChunkError(
                f"a {LOG_CHUNK_MEDIA_TYPE} body starts with a {_CHUNK_HEADER.size}-byte "
                f"header, but this one has {len(body)} bytes"
            )
        magic, started_at_ms, count = _CHUNK_HEADER.unpack_from(body)
        offsets_end = _CHUNK_HEADER.size + count * _OFFSET_SIZE
        if magic != _CHUNK_MAGIC or offsets_end > len(body):
            raise InvalidLogChunkError(
                f"a {LOG_CHUNK_MEDIA_TYPE} body must start with {_CHUNK_MAGIC!r} and hold "
                f"its {count} line times ({offsets_end} bytes); this one starts with "
                f"{magic!r} and has {len(body)} bytes"
            )
        offsets = array("I")
        offsets.frombytes(body[_CHUNK_HEADER.size : offsets_end])
        if sys.byteorder == "big":
            offsets.byteswap()
        return cls(
            data=body[offsets_end:], step_started_at_ms=started_at_ms, line_offsets_ms=offsets
        )


class StepReport(_Wire):
    status: Status
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None


class StepEnd(_Wire):
    """A step's end report with the last of its log, in one request (`POST
    /agent/jobs/{job}/steps/{index}/end`): the log tail is appended at `log_offset`
    exactly as `PUT .../log` would (409 `log_gap` with the server's size, and then
    nothing of this request is applied), then the report is recorded. Saves a request
    per step; an agent falls back to the two calls when the server lacks this one."""

    report: StepReport
    log_offset: int = Field(default=0, ge=0)
    log_media_type: str = RAW_LOG_MEDIA_TYPE
    log: str = ""
    """The tail's body as `LogChunk.encode()` makes it, in base64 (empty: no log)."""

    @classmethod
    def of(cls, report: StepReport, offset: int, chunk: LogChunk | None) -> StepEnd:
        if chunk is None or not chunk.data:
            return cls(report=report, log_offset=offset)
        media_type, body = chunk.encode()
        return cls(
            report=report,
            log_offset=offset,
            log_media_type=media_type,
            log=base64.b64encode(body).decode("ascii"),
        )

    def log_body(self) -> bytes:
        """The tail's body; `InvalidLogChunkError` when `log` is no base64."""
        try:
            return base64.b64decode(self.log, validate=True)
        except binascii.Error as error:
            raise InvalidLogChunkError(f"the log of a step end is not base64: {error}") from error


class FinalStepEnd(StepEnd):
    """The end of a job's last step, carried by the job's finish report."""

    index: int = Field(ge=0)

    @classmethod
    def of_step(cls, index: int, end: StepEnd) -> FinalStepEnd:
        return cls(index=index, **dict(end))


class JobReport(_Wire):
    status: Status
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    step_end: FinalStepEnd | None = None
    """The end of the job's last step when the agent had not sent it yet: applied as
    `POST .../steps/{index}/end` would apply it, in the finish's transaction (409
    `log_gap` and nothing applied when its log has a gap). Saves a request per job; a
    server before this field answers 422 naming it, and the agent then sends the step's
    end apart."""


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
