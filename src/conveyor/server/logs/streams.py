"""Live step logs for many viewers: the backlog from any line, then new lines as they
are stored, then the end; no gap, no duplicate.

One `StepFollower` per followed step reads the new lines of its file ONCE per wake-up
(a `log:<step id>` event, a `run:<run id>` status event, or a slow poll as a safety
net), masks them once, serialises each message once, and hands the same text to every
viewer; a viewer costs a queue, not a file read.

How a viewer avoids gaps and duplicates (everything below runs in the event loop, so
the attach is atomic with respect to broadcasts):

1. the follower subscribes to its events BEFORE it counts the lines already stored,
   so every later append wakes it: its `position` (lines broadcast so far) only moves
   after the lines are on disk;
2. a viewer attaches and learns `join_at`, the follower's position at that moment:
   every message it receives afterwards starts at `join_at` or later;
3. it reads its backlog `[offset, join_at)` from the file, then forwards the queued
   messages, trimming any line below its own next line number.

Only complete lines are streamed while the step runs (agents send bytes, not lines, so
the file often ends mid-line); the unterminated tail goes out once the step finished.
A viewer that falls too far behind is detached and re-attaches from its own next line
(the file holds everything, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from conveyor.agent.masking import Masker
from conveyor.logstore import count_lines
from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.events import OVERFLOW, EventBus
from conveyor.server.logs import repository, service
from conveyor.server.logs.paths import step_log_path
from conveyor.server.logs.service import line_text, mask_lines, read_stored_lines
from conveyor.server.models.job import Job
from conveyor.server.models.step import Step

LINES_PER_MESSAGE = 5_000
BYTES_PER_MESSAGE = 256 * 1024
POLL_SECONDS = 5.0
"""How often a follower looks at its step without being woken (a lost event)."""
MAX_QUEUED_MESSAGES = 256
"""Messages a viewer may have waiting before it is detached to catch up from the file."""


@dataclass(frozen=True)
class StepSource:
    """What following one step needs, loaded once."""

    step_id: int
    run_id: int
    path: Path
    masker: Masker


@dataclass(frozen=True)
class LinesMessage:
    start: int
    lines: list[str]
    text: str
    """The JSON message, serialised once for every viewer."""

    @property
    def end(self) -> int:
        return self.start + len(self.lines)


@dataclass(frozen=True)
class StatusMessage:
    status: Status


@dataclass(frozen=True)
class EndMessage:
    status: Status


class Lagged:
    """Put in a viewer's queue when it fell too far behind."""


Message = LinesMessage | StatusMessage | EndMessage | Lagged


def lines_message(step_id: int, start: int, lines: list[str]) -> LinesMessage:
    text = json.dumps({"type": "lines", "step": step_id, "start": start, "lines": lines})
    return LinesMessage(start=start, lines=lines, text=text)


def batch(raw: list[bytes], masker: Masker) -> list[list[str]]:
    """Masked text lines, cut into pieces of at most LINES_PER_MESSAGE lines and
    about BYTES_PER_MESSAGE bytes."""
    pieces: list[list[str]] = []
    current: list[bytes] = []
    size = 0
    for line in raw:
        if current and (len(current) >= LINES_PER_MESSAGE or size + len(line) > BYTES_PER_MESSAGE):
            pieces.append([line_text(item) for item in mask_lines(current, masker)])
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        pieces.append([line_text(item) for item in mask_lines(current, masker)])
    return pieces


def read_stored(path: Path, start: int, end: int | None, *, complete_only: bool) -> list[bytes]:
    lines = read_stored_lines(path, start, end)
    if complete_only and lines and not lines[-1].endswith(b"\n"):
        lines.pop()
    return lines


def count_complete_lines(path: Path) -> int:
    try:
        return count_lines(path)
    except FileNotFoundError:
        return 0


@dataclass(eq=False)
class Viewer:
    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)


class StepFollower:
    def __init__(
        self,
        source: StepSource,
        bus: EventBus,
        step_status: Callable[[int], Awaitable[Status | None]],
        on_done: Callable[[StepFollower], None],
    ) -> None:
        self.source = source
        self._bus = bus
        self._step_status = step_status
        self._on_done = on_done
        self.viewers: set[Viewer] = set()
        self.position = 0
        self.final: Status | None = None
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._follow(), name=f"log-follower-{source.step_id}")

    def attach(self, viewer: Viewer) -> int:
        """Start sending to `viewer`; returns the line its messages will start at. Call
        after `ready`. On a finished follower, the viewer gets only the end."""
        if self.final is not None:
            viewer.queue.put_nowait(EndMessage(self.final))
        else:
            self.viewers.add(viewer)
        return self.position

    def detach(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def _send(self, message: Message) -> None:
        for viewer in list(self.viewers):
            if viewer.queue.qsize() >= MAX_QUEUED_MESSAGES:
                while not viewer.queue.empty():
                    viewer.queue.get_nowait()
                viewer.queue.put_nowait(Lagged())
                self.viewers.discard(viewer)
            else:
                viewer.queue.put_nowait(message)

    async def _broadcast_new_lines(self, *, finished: bool) -> None:
        source = self.source
        raw = await asyncio.to_thread(
            read_stored, source.path, self.position, None, complete_only=not finished
        )
        if not raw:
            return
        pieces = await asyncio.to_thread(batch, raw, source.masker)
        for piece in pieces:
            self._send(lines_message(source.step_id, self.position, piece))
            self.position += len(piece)

    async def _follow(self) -> None:
        source = self.source
        subscription = self._bus.subscribe([f"log:{source.step_id}", f"run:{source.run_id}"])
        try:
            self.position = await asyncio.to_thread(count_complete_lines, source.path)
            status = await self._step_status(source.step_id)
            self.ready.set()
            check_status = False
            while True:
                if check_status:
                    new_status = await self._step_status(source.step_id)
                    if (
                        new_status is not None
                        and new_status is not status
                        and not new_status.finished  # the final one comes with the end
                    ):
                        self._send(StatusMessage(new_status))
                    status = new_status
                finished = status is None or status.finished
                await self._broadcast_new_lines(finished=finished)
                if finished:
                    self.final = status or Status.ERROR
                    self._send(EndMessage(self.final))
                    return
                event = await subscription.get(within=POLL_SECONDS)
                check_status = (
                    event is None or event.kind == OVERFLOW or event.topic.startswith("run:")
                )
        finally:
            subscription.close()
            self.ready.set()
            self._on_done(self)


class LogStreams:
    """The followers of this server's event loop, one per followed step, and the
    streams of steps and jobs that viewers ask for."""

    def __init__(
        self, session_factory: sessionmaker[Session], settings: Settings, bus: EventBus
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._bus = bus
        self._followers: dict[int, StepFollower] = {}

    def _status_now(self, step_id: int) -> Status | None:
        with self._session_factory() as session:
            step = session.get(Step, step_id)
            return None if step is None else step.status

    async def step_status(self, step_id: int) -> Status | None:
        return await asyncio.to_thread(self._status_now, step_id)

    def _load_step(self, step_id: int) -> tuple[StepSource, str] | None:
        """The source of a step and its status message, or None if it is gone."""
        with self._session_factory() as session:
            found = repository.step_with_owners(session, step_id)
            if found is None:
                return None
            step, job, run, project = found
            secrets = service.step_secrets(session, self._settings, project)
            source = StepSource(
                step_id=step.id,
                run_id=run.id,
                path=step_log_path(self._settings.data_dir, run.id, job.id, step.index),
                masker=service.masker_for(secrets),
            )
            return source, status_text(step)

    def _job_step(self, job_id: int, index: int) -> tuple[Status | None, int | None]:
        """The job's status (None: gone) and the id of its step `index`, if it exists."""
        with self._session_factory() as session:
            job = session.get(Job, job_id)
            if job is None:
                return None, None
            step = repository.step_of_job(session, job_id, index)
            return job.status, None if step is None else step.id

    def _forget(self, follower: StepFollower) -> None:
        if self._followers.get(follower.source.step_id) is follower:
            del self._followers[follower.source.step_id]

    async def attach(self, source: StepSource, viewer: Viewer) -> tuple[StepFollower, int]:
        while True:
            follower = self._followers.get(source.step_id)
            if follower is None:
                follower = StepFollower(source, self._bus, self.step_status, self._forget)
                self._followers[source.step_id] = follower
            await follower.ready.wait()
            if follower.task.done() and follower.final is None:
                # It stopped without an end (its last viewer left): start another.
                self._forget(follower)
                continue
            return follower, follower.attach(viewer)

    def detach(self, follower: StepFollower, viewer: Viewer) -> None:
        follower.detach(viewer)
        if not follower.viewers and follower.final is None:
            self._forget(follower)
            follower.task.cancel()

    async def close(self) -> None:
        followers = list(self._followers.values())
        self._followers.clear()
        for follower in followers:
            follower.task.cancel()
        for follower in followers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await follower.task

    async def follow_step(self, step_id: int, offset: int, send: SendText) -> None:
        """Stream one step from line `offset`: its status, lines, then
        `{"type": "end", "status"}` once it finished."""
        loaded = await asyncio.to_thread(self._load_step, step_id)
        if loaded is None:
            await send(end_text(Status.ERROR))
            return
        source, status = loaded
        await send(status)
        final = await stream_step(self, source, offset, send)
        await send(end_text(final))

    async def follow_job(self, job_id: int, first_index: int, offset: int, send: SendText) -> None:
        """Stream every step of a job in order, from step `first_index` (line `offset`
        of that one, line 0 of the next ones), then the end with the job's status."""
        subscription = None
        index, line = first_index, offset
        try:
            while True:
                job_status, step_id = await asyncio.to_thread(self._job_step, job_id, index)
                if step_id is None:
                    if job_status is None or job_status.finished:
                        await send(end_text(job_status or Status.ERROR))
                        return
                    if subscription is None:
                        # The next step (or the job's end) is not recorded yet: wait
                        # for the run to change, then look again.
                        subscription = self._bus.subscribe([f"run:{self._run_of(job_id)}"])
                        continue
                    await subscription.get(within=POLL_SECONDS)
                    continue
                loaded = await asyncio.to_thread(self._load_step, step_id)
                if loaded is None:
                    continue
                source, status = loaded
                await send(status)
                final = await stream_step(self, source, line, send)
                await send(_status_text(step_id, final))
                index, line = index + 1, 0
        finally:
            if subscription is not None:
                subscription.close()

    def _run_of(self, job_id: int) -> int | None:
        with self._session_factory() as session:
            job = session.get(Job, job_id)
            return None if job is None else job.run_id


SendText = Callable[[str], Awaitable[None]]


async def stream_step(
    streams: LogStreams, source: StepSource, offset: int, send: SendText
) -> Status:
    """Send the step's lines from line `offset` until it ends; returns its final status.

    Messages: `{"type": "lines", "step", "start", "lines"}` and `{"type": "status",
    "step", "status"}` when it changes; the caller sends the end."""
    next_line = offset
    while True:
        viewer = Viewer()
        follower, join_at = await streams.attach(source, viewer)
        try:
            while next_line < join_at:
                upto = min(join_at, next_line + LINES_PER_MESSAGE)
                raw = await asyncio.to_thread(
                    read_stored, source.path, next_line, upto, complete_only=False
                )
                if not raw:
                    break
                for piece in await asyncio.to_thread(batch, raw, source.masker):
                    await send(lines_message(source.step_id, next_line, piece).text)
                    next_line += len(piece)
            while True:
                message = await viewer.queue.get()
                if isinstance(message, Lagged):
                    break
                if isinstance(message, EndMessage):
                    return message.status
                if isinstance(message, StatusMessage):
                    await send(_status_text(source.step_id, message.status))
                    continue
                if message.end <= next_line:
                    continue
                if message.start < next_line:
                    kept = message.lines[next_line - message.start :]
                    await send(lines_message(source.step_id, next_line, kept).text)
                else:
                    await send(message.text)
                next_line = message.end
        finally:
            streams.detach(follower, viewer)


def _status_text(step_id: int, status: Status) -> str:
    return json.dumps({"type": "status", "step": step_id, "status": str(status)})


def status_text(step: Step) -> str:
    return json.dumps(
        {
            "type": "status",
            "step": step.id,
            "job": step.job_id,
            "index": step.index,
            "name": step.name,
            "status": str(step.status),
        }
    )


def end_text(status: Status) -> str:
    return json.dumps({"type": "end", "status": str(status)})
