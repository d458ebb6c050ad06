"""The contract every execution backend keeps.

A backend runs the steps of one job somewhere (containers, processes) on a workspace the
agent has already checked out on this host. The engine (`conveyor.agent.engine`) drives
it; a backend knows nothing of secrets, masking, statuses or artifacts.

Life of a job, as the engine calls it::

    await backend.prepare(job)          # once: images present, services up, namespaces made
    for each step:
        proc = await backend.start(job, invocation)
        async for chunk in proc.output(): ...   # raw bytes, stdout and stderr merged
        code = await proc.wait()
        # on cancel or timeout: await proc.stop(grace)
    await backend.cleanup(job)          # always, also after errors and cancellation

Errors: a fault of the infrastructure (engine unreachable, image missing, a service
that would not start) raises `BackendError` with a message that tells the user what to
do; the engine turns it into status `error`. A command that fails is not an error: it is
an exit code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from conveyor.pipeline.plan import JobPlan, NetworkMode, StepPlan


class BackendError(Exception):
    """The backend could not do its part; the message says what to do about it."""


@dataclass(frozen=True)
class JobContext:
    """One job as a backend sees it."""

    key: str
    """Unique among the jobs alive on this host; safe for names (letters, digits, `-`)."""
    plan: JobPlan
    workspace: Path
    """Host directory holding the checkout; steps run in it (or in its mount)."""
    output: Path
    """Host directory whose content is the build output (CI_OUTPUT_DIR)."""
    network: NetworkMode = NetworkMode.JOB
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels for whatever the backend creates (containers), to find leftovers."""


@dataclass(frozen=True)
class StepInvocation:
    """One step to start: what to run and with which environment."""

    step: StepPlan
    script: str
    """A POSIX shell script (the step's commands, echoed and joined by the engine)."""
    env: dict[str, str]
    """The complete environment of the step (CI_*, job, step and secret variables).
    Paths in it (CI_WORKSPACE, CI_OUTPUT_DIR) are already the backend's own, from
    `Backend.paths`."""


@dataclass(frozen=True)
class StepPaths:
    """Where a step sees the workspace and the output directory."""

    workspace: str
    output: str


class StepProcess(Protocol):
    """A started step."""

    def output(self) -> AsyncIterator[bytes]:
        """Raw output as it comes (stdout and stderr merged), in chunks of any size,
        ending when the step has closed its output. Call once."""
        ...

    async def wait(self) -> int:
        """The exit code, once the step has ended. 128+N when killed by signal N."""
        ...

    async def stop(self, grace: float) -> None:
        """Stop the step: SIGTERM (to the whole process group or container), then
        SIGKILL after `grace` seconds if it is still alive. Safe to call twice, or
        after the step ended by itself."""
        ...


class Backend(Protocol):
    name: ClassVar[str]
    shares_workspace: ClassVar[bool]
    """True when files a step writes in the workspace are there for the next step (real
    backends); a test double that runs nothing says False."""

    def paths(self, job: JobContext) -> StepPaths:
        """Where steps of this job see the workspace and the output directory."""
        ...

    def default_network(self) -> NetworkMode:
        """The network jobs get when nobody chose one: what works on this host."""
        ...

    async def prepare(self, job: JobContext) -> None:
        """Make ready everything the job's steps share (images, services, network)."""
        ...

    async def start(self, job: JobContext, invocation: StepInvocation) -> StepProcess:
        """Start one step; returns as soon as it runs."""
        ...

    async def cleanup(self, job: JobContext) -> None:
        """Remove everything `prepare` and `start` created for the job (containers,
        processes, namespaces). Never raises for things already gone. The workspace
        directory itself belongs to the caller."""
        ...
