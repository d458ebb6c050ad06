"""The local backend: each step is a shell process in the workspace on this host.

For trusted projects and hosts without Docker. A step is `sh -c <script>` in a process
group of its own, so that stopping it (or its end) reaches everything it started in the
background. Output of stdout and stderr goes through one pipe that is read in large
chunks; the backend never looks at lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from conveyor.agent.backends.base import (
    BackendError,
    JobContext,
    StepInvocation,
    StepPaths,
)
from conveyor.pipeline.plan import NetworkMode, StepKind

READ_CHUNK_SIZE = 64 * 1024
"""Bytes asked of the pipe per read: large, so that a chatty step costs few wakeups."""

_STREAM_BUFFER_LIMIT = 1024 * 1024
"""How much output may wait in memory before the pipe is no longer read (back-pressure)."""

_INHERITED_VARIABLES = ("PATH", "HOME", "LANG")
"""Variables a step gets from the agent's own environment when its invocation lacks them:
without PATH not even `sh` finds its commands."""

_ORPHAN_PIPE_QUIET_SECONDS = 2.0
"""After a step's shell ended and its group was killed, a pipe that still gets no end of
file and no data for this long is held by a process that left the group (a daemon); it is
closed so that the step's output can end."""

_GROUP_POLL_SECONDS = 0.05


def _signal_exit_code(returncode: int) -> int:
    """asyncio reports death by signal N as -N; the contract (and shells) say 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def _group_has_live_members(group_id: int) -> bool:
    """Whether a process of the group is still running (zombies do not count).

    A signal 0 to the group also succeeds for zombies, which stay until their parent
    reaps them; the orphans of a step are reaped by the host's init, which may be slow
    (or never do it), so the process table is read instead where there is one.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return _signal_group(group_id, 0)
    for stat_file in proc.glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue  # ended while we looked
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and fields[2] == str(group_id) and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(group_id: int, signum: int) -> bool:
    """Send `signum` to a process group; False when no process of the group is left."""
    try:
        os.killpg(group_id, signum)
    except ProcessLookupError:
        return False
    return True


class _TimestampedStreamProtocol(asyncio.StreamReaderProtocol):
    """Remembers when data last came, to tell an orphaned pipe from a quiet one, and
    tells when the pipe is closed."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self.last_data_at = time.monotonic()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.last_data_at = time.monotonic()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        super().connection_lost(exc)


class LocalStepProcess:
    """A step running as a process group on this host."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        transport: asyncio.ReadTransport,
        protocol: _TimestampedStreamProtocol,
    ) -> None:
        self._process = process
        # start_new_session makes the shell the leader of a group whose id is its pid.
        self._group_id = process.pid
        self._reader = reader
        self._transport = transport
        self._protocol = protocol
        self._group_gone = False
        self._stop_lock = asyncio.Lock()
        self._reaper = asyncio.create_task(self._reap_when_shell_ends())

    @property
    def pid(self) -> int:
        return self._process.pid

    async def output(self) -> AsyncIterator[bytes]:
        while chunk := await self._reader.read(READ_CHUNK_SIZE):
            yield chunk

    async def wait(self) -> int:
        return _signal_exit_code(await self._process.wait())

    async def stop(self, grace: float) -> None:
        async with self._stop_lock:
            if self._group_gone or not self._signal(signal.SIGTERM):
                return
            deadline = time.monotonic() + max(grace, 0.0)
            # The group, not just the shell, gets its grace: a server the step started
            # may still be shutting down cleanly after the shell itself has died.
            while time.monotonic() < deadline:
                await asyncio.sleep(_GROUP_POLL_SECONDS)
                if not _group_has_live_members(self._group_id):
                    break
            self._kill_group()
        await self._process.wait()

    async def kill(self) -> None:
        """End the group at once (cleanup): SIGKILL, no grace."""
        self._kill_group()
        await self._process.wait()
        # Nobody reads the output any more; its end must not wait for a reader.
        self._transport.close()
        await self._reaper

    def _signal(self, signum: int) -> bool:
        if self._group_gone:
            return False
        if not _signal_group(self._group_id, signum):
            self._group_gone = True
        return not self._group_gone

    def _kill_group(self) -> None:
        # After SIGKILL nobody of the group is left, and the id may later be given to
        # another process group of the host: it must never be signalled again.
        self._signal(signal.SIGKILL)
        self._group_gone = True

    async def _reap_when_shell_ends(self) -> None:
        await self._process.wait()
        # Waits for a stop in progress to give the group its grace first.
        async with self._stop_lock:
            # Like a container whose main process ends: what the step left running in
            # the background ends with it, and stops holding the output pipe open.
            self._kill_group()
        while not self._transport.is_closing():
            # Woken at once when the pipe ends (the usual case), else once per poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._protocol.closed.wait(), _GROUP_POLL_SECONDS)
            quiet_for = time.monotonic() - self._protocol.last_data_at
            if self._transport.is_reading() and quiet_for > _ORPHAN_PIPE_QUIET_SECONDS:
                self._transport.close()


class LocalBackend:
    """Runs steps as `sh -c` processes in the workspace, with the host's tools."""

    name: ClassVar[str] = "local"
    shares_workspace: ClassVar[bool] = True

    def __init__(self, shell: str = "/bin/sh") -> None:
        self._shell = shell
        self._steps: dict[str, list[LocalStepProcess]] = {}

    def default_network(self) -> NetworkMode:
        # Processes share the host's network; the mode does not apply to them.
        return NetworkMode.JOB

    def paths(self, job: JobContext) -> StepPaths:
        return StepPaths(workspace=str(job.workspace), output=str(job.output))

    async def prepare(self, job: JobContext) -> None:
        if job.plan.services:
            names = ", ".join(service.name for service in job.plan.services)
            raise BackendError(
                f"job {job.plan.name!r} in {job.plan.source} asks for services ({names}): "
                "services need the docker backend; run it on an agent with Docker, or "
                "remove `services:`"
            )
        if not job.workspace.is_dir():
            raise BackendError(
                f"workspace {job.workspace} of job {job.plan.name!r} does not exist; "
                "the agent must check the code out before the backend runs steps"
            )

    async def start(self, job: JobContext, invocation: StepInvocation) -> LocalStepProcess:
        argv = self._argv(job, invocation)
        env = dict(invocation.env)
        for variable in _INHERITED_VARIABLES:
            if variable not in env and variable in os.environ:
                env[variable] = os.environ[variable]
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=job.workspace,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_fd)
            raise BackendError(
                f"step {invocation.step.name!r} could not be started with {argv[0]} in "
                f"{job.workspace}: {exc}; check that the program exists on this host"
            ) from exc
        finally:
            # Only the step keeps the write end: the pipe ends when the step's group does.
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_STREAM_BUFFER_LIMIT, loop=loop)
        protocol = _TimestampedStreamProtocol(reader)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
        step = LocalStepProcess(process, reader, transport, protocol)
        self._steps.setdefault(job.key, []).append(step)
        return step

    async def cleanup(self, job: JobContext) -> None:
        for step in self._steps.pop(job.key, []):
            await step.kill()

    def _argv(self, job: JobContext, invocation: StepInvocation) -> list[str]:
        step = invocation.step
        if step.kind is StepKind.IMAGE_BUILD:
            if not step.image_tag:
                raise BackendError(
                    f"image-build step {step.name!r} in {job.plan.source} has no image tag; "
                    "set `image_tag:` on the step"
                )
            dockerfile = step.dockerfile or "Dockerfile"
            return ["docker", "build", "-f", dockerfile, "-t", step.image_tag, "."]
        return [self._shell, "-c", invocation.script]
