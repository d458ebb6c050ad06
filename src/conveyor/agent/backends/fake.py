"""A backend that runs nothing real, for tests of the code above the engine.

It reads each line of `step.commands` as a command of a tiny language:

    echo TEXT       prints TEXT (with $VAR and ${VAR} taken from the step's env)
    exit N          ends the step with exit code N
    sleep SECONDS   waits (asynchronously; `stop` ends it at once)
    fail            ends the step with exit code 1
    anything else   prints "fake: <command>" and goes on

Every call is recorded in `calls`, in order, for assertions. Steps do not share files
(there are none), which `shares_workspace` says to the contract suite.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from conveyor.agent.backends.base import (
    BackendError,
    JobContext,
    StepInvocation,
    StepPaths,
)
from conveyor.pipeline.plan import NetworkMode

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_STOPPED_EXIT_CODE = 128 + signal.SIGTERM


class FakeCallKind(StrEnum):
    PREPARE = "prepare"
    START = "start"
    STOP = "stop"
    CLEANUP = "cleanup"


@dataclass(frozen=True)
class FakeCall:
    kind: FakeCallKind
    job_key: str
    step: str | None = None
    """The step's name, for `start` and `stop`."""


def expand_variables(text: str, env: Mapping[str, str]) -> str:
    """Replace `$NAME` and `${NAME}` with their values; unknown names become empty, as in sh."""
    return _VARIABLE.sub(lambda match: env.get(match.group(1) or match.group(2), ""), text)


class FakeStepProcess:
    """A step interpreted in the event loop; its output goes through a queue."""

    def __init__(self, backend: FakeBackend, job_key: str, invocation: StepInvocation) -> None:
        self._backend = backend
        self._job_key = job_key
        self._invocation = invocation
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._exit_code: int | None = None
        self._task = asyncio.create_task(self._run())

    @property
    def finished(self) -> bool:
        return self._task.done()

    async def output(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def wait(self) -> int:
        return await self._settled_exit_code()

    async def stop(self, grace: float) -> None:
        self._backend.calls.append(
            FakeCall(FakeCallKind.STOP, self._job_key, self._invocation.step.name)
        )
        if self._task.done():
            return
        self._task.cancel()
        # The task ends at once: the fake honours SIGTERM without needing the grace.
        await self._settled_exit_code()

    async def _settled_exit_code(self) -> int:
        await asyncio.wait([self._task])
        if self._exit_code is None:
            # Cancelled before it ever ran, so `_run` could not record the stop itself.
            self._exit_code = _STOPPED_EXIT_CODE
            self._chunks.put_nowait(None)
        return self._exit_code

    async def _run(self) -> None:
        try:
            self._exit_code = await self._interpret()
        except asyncio.CancelledError:
            self._exit_code = _STOPPED_EXIT_CODE
        finally:
            self._chunks.put_nowait(None)

    async def _interpret(self) -> int:
        env = self._invocation.env
        for line in self._invocation.step.commands:
            command, _, argument = line.strip().partition(" ")
            argument = argument.strip()
            if command == "echo":
                self._chunks.put_nowait(expand_variables(argument, env).encode() + b"\n")
            elif command == "exit":
                try:
                    return int(argument or "0")
                except ValueError:
                    self._chunks.put_nowait(f"fake: exit: {argument}: not a number\n".encode())
                    return 2
            elif command == "fail":
                return 1
            elif command == "sleep":
                await asyncio.sleep(float(argument or "0"))
            else:
                self._chunks.put_nowait(f"fake: {line}\n".encode())
            # Lets readers see each line as it is "printed", like a real step's output.
            await asyncio.sleep(0)
        return 0


class FakeBackend:
    """Interprets steps instead of running them; records what it was asked to do."""

    name: ClassVar[str] = "fake"
    shares_workspace: ClassVar[bool] = False

    def __init__(self, prepare_error: str | None = None) -> None:
        """`prepare_error`: when given, `prepare` raises `BackendError` with this message,
        to test how the code above handles an infrastructure fault."""
        self.calls: list[FakeCall] = []
        self._prepare_error = prepare_error
        self._steps: dict[str, list[FakeStepProcess]] = {}

    def default_network(self) -> NetworkMode:
        return NetworkMode.JOB

    def paths(self, job: JobContext) -> StepPaths:
        return StepPaths(workspace=job.plan.workspace_path, output=job.plan.output_path)

    async def prepare(self, job: JobContext) -> None:
        self.calls.append(FakeCall(FakeCallKind.PREPARE, job.key))
        if self._prepare_error is not None:
            raise BackendError(self._prepare_error)

    async def start(self, job: JobContext, invocation: StepInvocation) -> FakeStepProcess:
        self.calls.append(FakeCall(FakeCallKind.START, job.key, invocation.step.name))
        step = FakeStepProcess(self, job.key, invocation)
        self._steps.setdefault(job.key, []).append(step)
        return step

    async def cleanup(self, job: JobContext) -> None:
        self.calls.append(FakeCall(FakeCallKind.CLEANUP, job.key))
        for step in self._steps.pop(job.key, []):
            if not step.finished:
                await step.stop(0)

    def running_steps(self, job_key: str) -> list[FakeStepProcess]:
        """Steps of the job that have not ended (none, after `cleanup`)."""
        return [step for step in self._steps.get(job_key, []) if not step.finished]
