"""What the backend tests share: jobs in temporary folders and ways to look for leftovers."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.agent.backends.base import Backend, JobContext, StepInvocation, StepProcess
from conveyor.pipeline.plan import ContainerOptions, JobPlan, NetworkMode, ServicePlan, StepPlan


def new_job_key() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def make_job(
    root: Path,
    steps: list[StepPlan],
    *,
    image: str | None = None,
    network: NetworkMode = NetworkMode.JOB,
    services: list[ServicePlan] | None = None,
    container: ContainerOptions | None = None,
) -> JobContext:
    workspace = root / "workspace"
    output = root / "output"
    workspace.mkdir(parents=True, exist_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    plan = JobPlan(
        name="backend-test",
        image=image,
        steps=steps,
        services=services or [],
        container=container or ContainerOptions(),
    )
    return JobContext(
        key=new_job_key(), plan=plan, workspace=workspace, output=output, network=network
    )


def invocation(step: StepPlan, env: dict[str, str] | None = None) -> StepInvocation:
    """The step's commands as one script, as the engine would hand them over."""
    return StepInvocation(step=step, script="\n".join(step.commands), env=dict(env or {}))


async def collect(process: StepProcess) -> bytes:
    """All of a step's output; a step that never closes it fails the test after 30 s."""
    async with asyncio.timeout(30):
        return b"".join([chunk async for chunk in process.output()])


async def run_step(
    backend: Backend, job: JobContext, step: StepPlan, env: dict[str, str] | None = None
) -> tuple[int, bytes]:
    process = await backend.start(job, invocation(step, env))
    output = await collect(process)
    return await asyncio.wait_for(process.wait(), 30), output


def processes_with_marker(marker: str) -> list[str]:
    """Command lines of live processes on this host (containers included) naming `marker`."""
    found = []
    for cmdline_file in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = cmdline_file.read_bytes()
        except OSError:
            continue  # ended while we looked
        if marker.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace").strip())
    return found


def containers_of_job(job_key: str) -> list[str]:
    done = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=conveyor.job={job_key}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@dataclass
class BackendUnderTest:
    """One backend as the contract suite drives it."""

    backend: Backend
    root: Path
    image: str | None
    leftovers: Callable[[JobContext, str], list[str]]
    """What of the job is still alive on this host: processes naming the marker, and
    (docker) containers labelled with the job's key."""

    def job(self, steps: list[StepPlan]) -> JobContext:
        return make_job(self.root / uuid.uuid4().hex[:8], steps, image=self.image)
