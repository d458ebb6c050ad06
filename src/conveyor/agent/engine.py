"""Runs one job's plan with a backend: the same code for `conveyor exec` and for agents.

The engine owns the rules of DESIGN.md sections 4 and 5 that do not depend on where a
step runs: the `CI_*` variables, which secrets a step sees, masking, the step and job
timeouts, `allow_failure`, AMS-Build's `exit_line`, skipping after a failure,
cancellation, collecting artifacts and always cleaning up. What it sees and decides it
tells a `JobSink`; it never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from conveyor.agent.artifacts import Artifact, ArtifactPathError, collect, package
from conveyor.agent.backends.base import (
    Backend,
    BackendError,
    JobContext,
    StepInvocation,
    StepProcess,
)
from conveyor.agent.masking import Masker
from conveyor.pipeline.plan import ArtifactPlan, JobPlan, NetworkMode, StepKind, StepPlan
from conveyor.protocol.status import Status

DEFAULT_STOP_GRACE = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class RunFacts:
    """What the run is about; becomes the `CI_*` variables."""

    commit_sha: str
    branch: str | None = None
    tag: str | None = None
    commit_message: str = ""
    commit_author: str = ""
    repo_url: str = ""
    project: str = ""
    run_number: int = 1
    run_id: str = "1"
    job_id: str = "1"
    event: str = "push"
    variables: Mapping[str, str] = field(default_factory=dict)
    """Extra variables given at trigger time; they reach every step."""


@dataclass
class StepResult:
    index: int
    name: str
    status: Status
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    message: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass
class JobResult:
    status: Status
    steps: list[StepResult]
    artifacts: list[Artifact] = field(default_factory=list)
    message: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    notes: list[str] = field(default_factory=list)
    """Things the user should know that did not change the outcome (a secret too short
    to mask, an artifact path left out)."""


class JobSink(Protocol):
    """Receives what happens while a job runs, in order."""

    async def step_started(self, result: StepResult, step: StepPlan) -> None: ...

    async def step_output(self, result: StepResult, data: bytes) -> None:
        """Complete lines (an unterminated last line only at the very end), masked."""
        ...

    async def step_finished(self, result: StepResult) -> None: ...


class _Timeout(Exception):
    """The step or the job ran past its limit; the message says which and how long."""


class _Cancelled(Exception):
    pass


def format_duration(seconds: float) -> str:
    """`10m`, `1h30m`, `90s` -> the way pipeline files write durations."""
    whole = round(seconds)
    if whole < 60 or whole % 60:
        return f"{seconds:g}s" if whole < 60 else f"{whole}s"
    minutes = whole // 60
    if minutes < 60 or minutes % 60:
        return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60}m"
    return f"{minutes // 60}h"


def build_script(step: StepPlan) -> str:
    """The shell script of a step: each command echoed (bold green, like other CIs),
    then run; the first failing command ends the step with its exit code."""
    lines = ["set -e"]
    for command in step.commands:
        lines.append(f"printf '\\033[1;32m$ %s\\033[0m\\n' {shlex.quote(command)}")
        lines.append(command)
    return "\n".join(lines) + "\n"


class JobRunner:
    """Runs one `JobPlan`. Call `run()` once; `cancel()` from anywhere in the loop."""

    def __init__(
        self,
        *,
        backend: Backend,
        plan: JobPlan,
        key: str,
        workspace: Path,
        output: Path,
        facts: RunFacts,
        sink: JobSink,
        secrets: Mapping[str, str] | None = None,
        artifacts_dir: Path | None = None,
        network: NetworkMode = NetworkMode.JOB,
        stop_grace: float | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.plan = plan
        self.facts = facts
        self.sink = sink
        self.secrets = dict(secrets or {})
        self.artifacts_dir = artifacts_dir
        self.stop_grace = (
            stop_grace
            if stop_grace is not None
            else (plan.container.stop_timeout or DEFAULT_STOP_GRACE)
        )
        self.job = JobContext(
            key=key,
            plan=plan,
            workspace=workspace,
            output=output,
            network=network,
            labels=dict(labels or {}),
        )
        # Only the secrets the job's steps ask for are masked; masking every secret of a
        # project would also hide harmless words that happen to equal an unused secret.
        wanted = {name for step in plan.steps for name in step.secrets}
        self.masker = Masker({k: v for k, v in self.secrets.items() if k in wanted})
        self._cancel = asyncio.Event()
        self._cancelled_by: str | None = None

    def cancel(self, by: str | None = None) -> None:
        if not self._cancel.is_set():
            self._cancelled_by = by
            self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    async def run(self) -> JobResult:
        started = time.time()
        deadline = started + self.plan.timeout if self.plan.timeout else None
        results = [StepResult(i, s.name, Status.QUEUED) for i, s in enumerate(self.plan.steps)]
        job = JobResult(Status.RUNNING, results, started_at=started)
        job.notes.extend(
            f"secret {name} is shorter than 4 characters, so it is not masked in logs"
            for name in self.masker.unmaskable
        )
        self.job.output.mkdir(parents=True, exist_ok=True)
        try:
            await self._prepare(job)
            if job.status is Status.RUNNING:
                await self._run_steps(job, deadline)
            if job.status in (Status.SUCCESS, Status.WARNING):
                # Hashing and archiving take seconds on big files: off the event loop,
                # where the agent's heartbeats and log sending must go on meanwhile.
                await asyncio.to_thread(self._collect_artifacts, job)
        finally:
            with contextlib.suppress(BackendError):
                await asyncio.shield(self.backend.cleanup(self.job))
            job.finished_at = time.time()
        return job

    async def _prepare(self, job: JobResult) -> None:
        try:
            await self._until_cancelled(self.backend.prepare(self.job), None)
        except BackendError as exc:
            job.status = Status.ERROR
            job.message = str(exc)
        except _Cancelled:
            job.status = Status.CANCELLED
            job.message = self._cancel_message()
        if job.status is not Status.RUNNING:
            for result in job.steps:
                result.status = Status.SKIPPED
                await self.sink.step_finished(result)

    async def _run_steps(self, job: JobResult, deadline: float | None) -> None:
        outcome = Status.SUCCESS
        for step, result in zip(self.plan.steps, job.steps, strict=True):
            if self.cancelled and outcome not in (Status.FAILURE, Status.ERROR):
                outcome = Status.CANCELLED
                job.message = self._cancel_message()
            if outcome in (Status.FAILURE, Status.ERROR, Status.CANCELLED) or step.skip_reason:
                result.status = Status.SKIPPED
                result.message = step.skip_reason
                await self.sink.step_finished(result)
                continue
            await self._run_step(step, result, deadline)
            if result.status is Status.WARNING and outcome is Status.SUCCESS:
                outcome = Status.WARNING
            elif result.status in (Status.FAILURE, Status.ERROR, Status.CANCELLED):
                outcome = result.status
                job.message = result.message
        job.status = outcome

    async def _run_step(self, step: StepPlan, result: StepResult, deadline: float | None) -> None:
        result.status = Status.RUNNING
        result.started_at = time.time()
        await self.sink.step_started(result, step)
        try:
            invocation = self._invocation(step)
            limit = step.timeout
            why = f"timed out after {format_duration(limit or 0)}"
            if deadline is not None and (limit is None or deadline - time.time() < limit):
                limit = max(0.0, deadline - time.time())
                why = f"job timed out after {format_duration(self.plan.timeout or 0)}"
            code, last_line = await self._execute(invocation, limit, why, result)
        except BackendError as exc:
            await self._say(result, f"error: {exc}")
            self._finish(result, Status.ERROR, None, str(exc))
        except _Timeout as exc:
            await self._say(result, str(exc))
            status = Status.WARNING if step.allow_failure else Status.FAILURE
            self._finish(result, status, None, str(exc))
        except _Cancelled:
            reason = self._cancel_message()
            await self._say(result, reason)
            self._finish(result, Status.CANCELLED, None, reason)
        else:
            status, message = self._judge(step, code, last_line)
            if message:
                await self._say(result, message)
            self._finish(result, status, code, message)
        await self.sink.step_finished(result)

    def _judge(self, step: StepPlan, code: int, last_line: bytes) -> tuple[Status, str | None]:
        message: str | None = None
        if code != 0:
            message = f"step `{step.name}` exited with code {code}"
        elif step.exit_line is not None:
            found = last_line.rstrip(b"\r\n").decode("utf-8", "replace")
            if found != step.exit_line:
                message = (
                    f"step `{step.name}` did not end with its exit line "
                    f"{step.exit_line!r} (last line: {found!r})"
                )
        if message is None:
            return Status.SUCCESS, None
        if step.allow_failure:
            return Status.WARNING, message + " (allowed to fail)"
        return Status.FAILURE, message

    @staticmethod
    def _finish(result: StepResult, status: Status, code: int | None, message: str | None) -> None:
        result.status = status
        result.exit_code = code
        result.message = message
        result.finished_at = time.time()

    async def _say(self, result: StepResult, text: str) -> None:
        """A line from the engine itself in the step's log (dim, so it reads as ours)."""
        await self.sink.step_output(result, f"\x1b[2m{text}\x1b[0m\n".encode())

    def _cancel_message(self) -> str:
        return f"cancelled by {self._cancelled_by}" if self._cancelled_by else "cancelled"

    def _invocation(self, step: StepPlan) -> StepInvocation:
        missing = [name for name in step.secrets if name not in self.secrets]
        if missing:
            names = ", ".join(missing)
            raise BackendError(
                f"step `{step.name}` asks for secret(s) {names}, which are not set; "
                "add them to the project's secrets (or `conveyor exec --secret NAME=VALUE`)"
            )
        paths = self.backend.paths(self.job)
        env = {**self._ci_variables(step, paths.workspace, paths.output), **self.plan.env}
        env.update(self.facts.variables)
        env.update(step.env)
        env.update({name: self.secrets[name] for name in step.secrets})
        script = build_script(step) if step.kind is StepKind.SCRIPT else ""
        return StepInvocation(step=step, script=script, env=env)

    def _ci_variables(self, step: StepPlan, workspace: str, output: str) -> dict[str, str]:
        f = self.facts
        return {
            "CI": "true",
            "CONVEYOR": "true",
            "CI_COMMIT_SHA": f.commit_sha,
            "CI_COMMIT_SHORT_SHA": f.commit_sha[:8],
            "CI_COMMIT_BRANCH": f.branch or "",
            "CI_COMMIT_TAG": f.tag or "",
            "CI_COMMIT_MESSAGE": f.commit_message,
            "CI_COMMIT_AUTHOR": f.commit_author,
            "CI_REPO_URL": f.repo_url,
            "CI_PROJECT_NAME": f.project,
            "CI_RUN_NUMBER": str(f.run_number),
            "CI_RUN_ID": f.run_id,
            "CI_JOB_ID": f.job_id,
            "CI_JOB_NAME": self.plan.name,
            "CI_STEP_NAME": step.name,
            "CI_EVENT": f.event,
            "CI_WORKSPACE": workspace,
            "CI_OUTPUT_DIR": output,
        }

    async def _execute(
        self, invocation: StepInvocation, limit: float | None, why: str, result: StepResult
    ) -> tuple[int, bytes]:
        proc = await self.backend.start(self.job, invocation)
        last_line = b""

        async def pump() -> int:
            nonlocal last_line
            pending = b""
            async for chunk in proc.output():
                pending += chunk
                cut = pending.rfind(b"\n") + 1
                if cut:
                    complete, pending = pending[:cut], pending[cut:]
                    last_line = _last_line(complete) or last_line
                    await self.sink.step_output(result, self.masker.mask(complete))
            if pending:
                last_line = pending
                await self.sink.step_output(result, self.masker.mask(pending))
            return await proc.wait()

        try:
            return await self._until_cancelled(pump(), limit, why), last_line
        except (_Timeout, _Cancelled):
            await self._stop(proc)
            raise

    async def _stop(self, proc: StepProcess) -> None:
        with contextlib.suppress(BackendError):
            await asyncio.shield(proc.stop(self.stop_grace))

    async def _until_cancelled(
        self, work: Coroutine[Any, Any, T], limit: float | None, why: str = "timed out"
    ) -> T:
        """Await `work`, but stop waiting (and cancel it) on `cancel()` or after `limit`."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self._cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {task, waiter}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if waiter in done:
            raise _Cancelled
        raise _Timeout(why)

    def _collect_artifacts(self, job: JobResult) -> None:
        if self.artifacts_dir is None:
            return
        try:
            files = collect(
                self.job.workspace,
                self.job.output,
                self.plan.artifacts,
                on_skip=lambda skipped: job.notes.append(str(skipped)),
            )
            if files:
                plan = self.plan.artifacts or ArtifactPlan()
                job.artifacts = package(files, plan, self.artifacts_dir)
        except ArtifactPathError as exc:
            job.status = Status.FAILURE
            job.message = f"artifacts: {exc}"
        except OSError as exc:
            job.status = Status.ERROR
            job.message = f"artifacts could not be stored in {self.artifacts_dir}: {exc}"


def _last_line(complete: bytes) -> bytes:
    """The last line of a chunk of complete lines (without the final newline)."""
    body = complete[:-1]
    start = body.rfind(b"\n") + 1
    return body[start:]
