"""What a pipeline compiles to: the plan of one job, ready for an engine to run.

These models are the contract between the pipeline package (which produces them from
`.conveyor.yml`, AMS-Build `pipeline.json` or zero-config), the agent (which runs them)
and the server (which stores them in the job row and sends them over the wire inside a
`protocol.JobSpec`). They are plain data: no behaviour, no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class _Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepKind(StrEnum):
    SCRIPT = "script"
    """Run `commands` as one shell script."""
    IMAGE_BUILD = "image_build"
    """Build `dockerfile` (a path in the workspace) into the image `image_tag`."""


class ArchiveFormat(StrEnum):
    SEVEN_Z = "7z"
    ZIP = "zip"
    TAR_GZ = "tar.gz"
    NONE = "none"


class HashAlgorithm(StrEnum):
    """Hashes an artifact can be given; the names and digests match 7-Zip's `7z h -scrc*`."""

    CRC32 = "crc32"
    CRC64 = "crc64"
    SHA1 = "sha1"
    SHA256 = "sha256"
    BLAKE2 = "blake2"  # BLAKE2sp, as 7-Zip computes it
    NONE = "none"


class NetworkMode(StrEnum):
    NONE = "none"
    """No network at all; services are not reachable."""
    JOB = "job"
    """One network namespace per job, shared by services and steps, no outside access."""
    BRIDGE = "bridge"
    """The job's namespace on Docker's bridge network: services shared, outside reachable."""


class StepPlan(_Plan):
    name: str
    kind: StepKind = StepKind.SCRIPT
    image: str | None = None
    """Image of the step's container (docker backend); None means the job's image."""
    commands: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    """Names of project secrets this step sees as environment variables."""
    allow_failure: bool = False
    timeout: float | None = None
    """Seconds; None means only the job's timeout applies."""
    exit_line: str | None = None
    """AMS-Build: the step passes only if its last output line equals this (and it exits 0)."""
    skip_reason: str | None = None
    """Set when the step's `when` did not match this run; the step is reported `skipped`."""
    dockerfile: str | None = None
    image_tag: str | None = None


class ServicePlan(_Plan):
    name: str
    image: str
    env: dict[str, str] = Field(default_factory=dict)
    commands: list[str] = Field(default_factory=list)
    """Overrides the image's command when given."""


class ContainerOptions(_Plan):
    """The container settings a pipeline may ask for; only safe ones exist here."""

    memory: str | None = None
    cpus: float | None = None
    shm_size: str | None = None
    user: str | None = None
    pids_limit: int | None = None
    stop_timeout: float | None = None
    """Seconds between SIGTERM and SIGKILL when a step is stopped."""


class ArtifactPlan(_Plan):
    paths: list[str] = Field(default_factory=list)
    """Globs relative to the workspace (`**` allowed). Every file in the output
    directory (CI_OUTPUT_DIR) is collected as well, with or without globs."""
    archive: ArchiveFormat = ArchiveFormat.NONE
    hash: HashAlgorithm = HashAlgorithm.SHA256
    expire_in: float | None = None
    """Seconds; None means the server's default retention."""
    name: str = "artifacts"
    """File name (without extension) of the archive."""


class CleanupPlan(_Plan):
    remove_workspace: bool = True


class JobPlan(_Plan):
    name: str
    matrix: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    """Job-wide variables: the pipeline's `env` and the matrix values."""
    workspace_path: str = "/workspace"
    """Where the workspace is mounted inside containers."""
    output_path: str = "/output"
    """Where the output directory (CI_OUTPUT_DIR) is mounted inside containers."""
    services: list[ServicePlan] = Field(default_factory=list)
    steps: list[StepPlan]
    """In order; `prepare` commands come first as a step named `prepare`."""
    artifacts: ArtifactPlan | None = None
    cleanup: CleanupPlan = CleanupPlan()
    timeout: float | None = None
    labels: list[str] = Field(default_factory=list)
    container: ContainerOptions = ContainerOptions()
    source: str = ".conveyor.yml"
    """The file (or zero-config rule) this plan came from, for messages."""
