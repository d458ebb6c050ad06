"""Live step logs for many viewers: the backlog from any line, then new lines as they
are stored, then the end; no gap, no duplicate.

One `StepFollower` per followed step loads the step once (its file, its masker, what
its status message says), then reads the new bytes of its file ONCE per wake-up (a
`log:<step id>` event, a `run:<run id>` status event, or a slow poll as a safety net;
the events that arrive while it reads, or within `COALESCE_SECONDS` of a first `log:`
one, make one wake-up), masks them once, serialises each message once, and hands the same text
to every viewer; a viewer costs a queue, not a database query or a file read. The follower
also keeps its latest messages (`HISTORY_BYTES`), so a viewer who joins a running
step gets the recent part of its backlog from memory; only lines stored before the
follower started are read from the file by the viewer itself.

How a viewer avoids gaps and duplicates (everything below runs in the event loop, so
the attach is atomic with respect to broadcasts):

1. the follower subscribes to its events BEFORE it counts the lines already stored,
   so every later append wakes it: its `position` (lines broadcast so far) only moves
   after the lines are on disk;
2. a viewer attaches and learns `join_at`, the follower's position at that moment,
   and the follower's kept messages (which end at `join_at`): every message it
   receives afterwards starts at `join_at` or later;
3. it sends its backlog `[offset, join_at)`: from the file up to the first kept
   message, then the kept messages, then the queued ones, trimming any line below its
   own next line number.

Only complete lines are streamed while the step runs (agents send bytes, not lines, so
the file often ends mid-line); the unterminated tail goes out once the step finished.
A viewer that falls too far behind is detached and re-attaches from its own next line
(the file holds everything, so nothing is lost).

The masker is the follower's, made from the project's secrets when it started: a
secret added while a step is being followed applies from its next follower on.

Each lines message is also compressed once, in the follower's thread, for the viewers
whose connection takes it so (`websocket_protocol`): a hundred viewers cost one
compression and a tenth of the bytes, not a hundred compressions or full copies.

Each lines message carries `time_runs`, `[[time, count], ...]`: its lines in order,
`count` of them in a row started at `time` (ms since the epoch; null: unknown). Lines
read at once share a time, so runs are few: sent to every viewer, a time per line
would cost more bytes than many lines. They are read from the log's times file with
the lines (its records are written before the lines they time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from conveyor.agent.masking import Masker
from conveyor.logstore import TimeRun, read_time_runs
from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.events import OVERFLOW, Event, EventBus, Subscription
from conveyor.server.logs import repository, service
from conveyor.server.logs.paths import log_attempt, step_log_path
from conveyor.server.logs.service import mask_lines, read_stored_lines, split_lines
from conveyor.server.models.job import Job
from conveyor.server.models.step import Step
from conveyor.server.websocket_protocol import deflate

LINES_PER_MESSAGE = 20_000
BYTES_PER_MESSAGE = 256 * 1024
READ_BYTES = 4 * 1024 * 1024
"""About the most a follower reads (and holds) per round; it reads on until caught up."""
BACKLOG_LINES_PER_READ = 50_000
"""Lines a viewer reads from the file per round for the part of its backlog that the
follower does not keep."""
HISTORY_BYTES = 8 * 1024 * 1024
"""Serialised messages a follower keeps for the viewers who join after them."""
BACKLOG_CACHE_BYTES = 16 * 1024 * 1024
"""Serialised messages of backlogs read from files, kept for the next viewers."""
POLL_SECONDS = 5.0
"""How often a follower looks at its step without being woken (a lost event)."""
MAX_QUEUED_MESSAGES = 256
"""Messages a viewer may have waiting before it is detached to catch up from the file."""
MAX_REMEMBERED_STEP_IDS = 4_096
COALESCE_SECONDS = 0.01
"""How long a woken follower waits for more appends before it reads: a step printing
fast sends a batch every few ms, and one read of several batches is one message per
viewer instead of several (each send costs per viewer); a live line is this late.
Measured with (c) of bench/server.py, six runs each in turn: 20 ms gave a median of
1.75x, 10 ms 1.64x (the viewers get the first lines while the step still prints)."""


@dataclass(frozen=True)
class StepSource:
    """What following one step needs, loaded once per follower."""

    step_id: int
    run_id: int
    job_id: int
    index: int
    name: str
    path: Path
    masker: Masker
    attempt: int = 1
    """The job's attempt whose log `path` is (see `logs.paths.log_attempt`)."""


@dataclass(frozen=True)
class StepState:
    """A step's status and the attempt of its job whose log it shows."""

    status: Status
    attempt: int


@dataclass(frozen=True)
class LinesMessage:
    start: int
    count: int
    text: str
    """The JSON message, serialised once for every viewer. The lines are kept only in
    it (a list of str would take twice the memory): few viewers ever need a part."""
    deflated: bytes | None = None
    """`text` compressed alone (`websocket_protocol.deflate`), for every viewer whose
    connection takes it; None for a message made for one viewer."""

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def size(self) -> int:
        """About the memory it holds."""
        return len(self.text) + len(self.deflated or b"")

    def lines_and_time_runs(self) -> tuple[list[str], list[TimeRun]]:
        message = json.loads(self.text)
        return message["lines"], [(at, count) for at, count in message["time_runs"]]


@dataclass(frozen=True)
class StatusMessage:
    status: Status


@dataclass(frozen=True)
class EndMessage:
    status: Status


class Lagged:
    """Put in a viewer's queue when it fell too far behind."""


@dataclass(frozen=True)
class RestartMessage:
    """The step's log begins again: its job was put back in the queue (its agent was
    lost) and attempt `attempt` writes a log of its own, from line 0."""

    attempt: int


Message = LinesMessage | StatusMessage | EndMessage | Lagged | RestartMessage


def lines_message(
    step_id: int,
    start: int,
    lines: list[str],
    time_runs: list[TimeRun],
    *,
    compressed: bool = False,
) -> LinesMessage:
    """The message of `lines`; compressed too if it goes to many viewers (`compressed`:
    costs about as much as serialising it, so not in the event loop)."""
    text = json.dumps(
        {"type": "lines", "step": step_id, "start": start, "lines": lines, "time_runs": time_runs}
    )
    deflated = deflate(text.encode()) if compressed else None
    return LinesMessage(start=start, count=len(lines), text=text, deflated=deflated)


def split_runs(runs: list[TimeRun], count: int) -> tuple[list[TimeRun], list[TimeRun]]:
    """The runs of the first `count` lines, and those of the lines after them."""
    head: list[TimeRun] = []
    for at, (time, length) in enumerate(runs):
        if count <= 0:
            return head, runs[at:]
        if length > count:
            head.append((time, count))
            return head, [(time, length - count), *runs[at + 1 :]]
        head.append((time, length))
        count -= length
    return head, []


def _masked(data: bytes, masker: Masker) -> bytes:
    """Stored bytes with the secrets masked, line for line."""
    masked = masker.mask(data)
    if masked is not data and masked.count(b"\n") != data.count(b"\n"):
        masked = b"".join(mask_lines(split_lines(data), masker))
    return masked


def text_lines(data: bytes, masker: Masker) -> list[str]:
    """Stored bytes (whole lines, the last one possibly unterminated) as masked text
    lines, each as `service.line_text` gives it; one pass over the bytes, not one per
    line."""
    # b"\n" is never part of a multi-byte sequence, so decoding the whole at once
    # replaces bad UTF-8 exactly as decoding each line would.
    text = _masked(data, masker).decode("utf-8", "replace")
    lines = text.split("\n")
    unterminated = lines.pop()  # "" when the data ends with a newline
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if unterminated:
        lines.append(unterminated)
    return lines


NO_SECRETS = Masker({})


_PLAIN_BYTES = bytes(
    [*range(0x20, 0x7F), ord("\n"), ord("\t"), 0x1B]  # printable ASCII, newline, tab, escape
).translate(None, b'"\\')
"""Bytes a JSON string holds as they are, and a tab and an escape (ANSI colours),
which it holds escaped as `lines_json` escapes them: not a quote, a backslash, another
control byte, or anything not ASCII."""


def lines_json(data: bytes) -> tuple[list[bytes | memoryview], int] | None:
    """The lines of `data` (masked stored bytes: whole lines, the last one possibly
    unterminated) as a JSON array in parts to join, the same lines as `text_lines`,
    and their count; made without a str per line (the most of a lines message's cost)
    and with one copy of the bytes, when nothing in `data` needs more escaping than a
    tab or an escape byte. None otherwise."""
    if data.translate(None, _PLAIN_BYTES):
        return None  # some byte is not plain
    if not data:
        return [b"[]"], 0
    terminated = data.endswith(b"\n")
    count = data.count(b"\n") + (0 if terminated else 1)
    quoted = data.replace(b"\n", b'", "')
    if b"\t" in data:
        quoted = quoted.replace(b"\t", b"\\t")
    if b"\x1b" in data:
        quoted = quoted.replace(b"\x1b", b"\\u001b")
    body = memoryview(quoted)[:-4] if terminated else memoryview(quoted)  # no last '", "'
    return [b'["', body, b'"]'], count


def pieces(data: bytes) -> list[bytes]:
    """`data` (whole lines) cut into pieces of at most LINES_PER_MESSAGE lines and at
    most BYTES_PER_MESSAGE bytes (a longer line is a piece of its own)."""
    out: list[bytes] = []
    start, size = 0, len(data)
    while start < size:
        end = start + BYTES_PER_MESSAGE
        if end >= size:
            end = size
        else:
            cut = data.rfind(b"\n", start, end) + 1
            end = cut if cut > start else (data.find(b"\n", end) + 1 or size)
        if data.count(b"\n", start, end) >= LINES_PER_MESSAGE:
            # Just after the LINES_PER_MESSAGE-th newline: what the split leaves over.
            rest = data[start:end].split(b"\n", LINES_PER_MESSAGE)[-1]
            end -= len(rest)
        out.append(data[start:end])
        start = end
    return out


def encode(source: StepSource, start: int, data: bytes) -> list[LinesMessage]:
    """The messages of `data`, stored lines from line `start` on, with their times."""
    messages: list[LinesMessage] = []
    if not data:
        return messages
    count = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    runs = read_time_runs(source.path, start, start + count)
    timed = sum(length for _, length in runs)
    if timed < count:
        runs.append((None, count - timed))
    for piece in pieces(data):
        masked = _masked(piece, source.masker)
        made = lines_json(masked)
        if made is None:
            lines = text_lines(masked, NO_SECRETS)
            these, runs = split_runs(runs, len(lines))
            messages.append(lines_message(source.step_id, start, lines, these, compressed=True))
            start += len(lines)
            continue
        array, count = made
        these, runs = split_runs(runs, count)
        # Made as bytes, compressed, then decoded once: one copy of the lines each.
        message = b"".join(
            [
                b'{"type": "lines", "step": %d, "start": %d, "lines": ' % (source.step_id, start),
                *array,
                b', "time_runs": %s}' % json.dumps(these).encode(),
            ]
        )
        deflated = deflate(message)
        text = message.decode("ascii")
        messages.append(LinesMessage(start=start, count=count, text=text, deflated=deflated))
        start += count
    return messages


def read_new(
    source: StepSource, at: int, start: int, *, complete_only: bool
) -> tuple[int, list[LinesMessage], bool]:
    """The messages of the bytes stored from byte `at` (line `start`): whole lines,
    about READ_BYTES of them, and the unterminated last line unless `complete_only`.
    Returns the bytes used, the messages, and whether more may follow at once."""
    try:
        f = source.path.open("rb")
    except FileNotFoundError:
        return 0, [], False
    with f:
        f.seek(at)
        blocks: list[bytes] = []
        while True:
            block = f.read(READ_BYTES)
            blocks.append(block)
            at_end = len(block) < READ_BYTES
            if at_end or b"\n" in block:
                break
    data = b"".join(blocks)
    if complete_only or not at_end:
        data = data[: data.rfind(b"\n") + 1]
    return len(data), encode(source, start, data), not at_end


def read_backlog(source: StepSource, start: int, end: int) -> list[LinesMessage]:
    """The messages of stored lines `[start, end)`."""
    return encode(source, start, b"".join(read_stored_lines(source.path, start, end)))


BacklogKey = tuple[int, Path, Masker, int, int]


class Backlogs:
    """The messages of stored line ranges read lately for viewers, for the next ones
    who ask for the same range: a hundred viewers opening one finished log read and
    serialise it once. Only ranges of lines that can no longer change are asked for
    (complete lines, or all of a finished step's), so an entry never goes stale; the
    masker is part of the key, so a change of the project's secrets is a new entry."""

    def __init__(self, max_bytes: int = BACKLOG_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[BacklogKey, list[LinesMessage]] = OrderedDict()
        self._reading: dict[BacklogKey, asyncio.Future[list[LinesMessage]]] = {}

    async def read(self, source: StepSource, start: int, end: int) -> list[LinesMessage]:
        key = (source.step_id, source.path, source.masker, start, end)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(asyncio.to_thread(read_backlog, source, start, end))
            self._reading[key] = reading
            reading.add_done_callback(lambda done: self._store(key, done))
        return await asyncio.shield(reading)

    def _store(self, key: BacklogKey, done: asyncio.Future[list[LinesMessage]]) -> None:
        del self._reading[key]
        if done.cancelled() or done.exception() is not None:
            return
        messages = done.result()
        size = sum(message.size for message in messages)
        if size > self._max_bytes:
            return
        self._entries[key] = messages
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= sum(message.size for message in dropped)


def count_complete_lines(path: Path) -> tuple[int, int]:
    """The complete lines stored, and the byte where the line after them starts."""
    lines = at = end = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0, 0
    with f:
        while chunk := f.read(1 << 20):
            found = chunk.count(b"\n")
            if found:
                lines += found
                end = at + chunk.rfind(b"\n") + 1
            at += len(chunk)
    return lines, end


@dataclass(eq=False)
class Viewer:
    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True)
class Attachment:
    join_at: int
    """The line the viewer's queued messages start at."""
    status: Status | None
    """The step's status as the follower knows it when the viewer attached."""
    kept: list[LinesMessage]
    """The follower's latest messages, ending at `join_at`."""


class StepFollower:
    def __init__(
        self,
        step_id: int,
        bus: EventBus,
        load: Callable[[int], Awaitable[StepSource | None]],
        step_status: Callable[[int], Awaitable[StepState | None]],
        on_done: Callable[[StepFollower], None],
    ) -> None:
        self.step_id = step_id
        self.source: StepSource | None = None
        self.gone = False
        """The step does not exist (any more)."""
        self._bus = bus
        self._load = load
        self._step_status = step_status
        self._on_done = on_done
        self.viewers: set[Viewer] = set()
        self.position = 0
        self._byte_position = 0
        self.status: Status | None = None
        self.final: Status | None = None
        self._kept: deque[LinesMessage] = deque()
        self._kept_bytes = 0
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._follow(), name=f"log-follower-{step_id}")

    def attach(self, viewer: Viewer) -> Attachment:
        """Start sending to `viewer`. Call after `ready`. On a finished follower, the
        viewer gets only the end."""
        if self.final is not None:
            viewer.queue.put_nowait(EndMessage(self.final))
        else:
            self.viewers.add(viewer)
        return Attachment(join_at=self.position, status=self.status, kept=list(self._kept))

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

    def _keep(self, message: LinesMessage) -> None:
        self._kept.append(message)
        self._kept_bytes += message.size
        while self._kept_bytes > HISTORY_BYTES and len(self._kept) > 1:
            self._kept_bytes -= self._kept.popleft().size

    async def _broadcast_new_lines(self, source: StepSource, *, finished: bool) -> None:
        more = True
        while more:
            used, messages, more = await asyncio.to_thread(
                read_new, source, self._byte_position, self.position, complete_only=not finished
            )
            self._byte_position += used
            for message in messages:
                self._keep(message)
                self._send(message)
                self.position = message.end

    async def _restart(self) -> StepSource | None:
        """Follow the log of the job's new attempt from its line 0: what was kept is
        another attempt's, and every viewer is told to begin again (None: the step is
        gone)."""
        source = await self._load(self.step_id)
        if source is None:
            self.gone = True
            return None
        self.source = source
        self._kept.clear()
        self._kept_bytes = 0
        # What the new attempt wrote already comes with the next read, after this.
        self.position, self._byte_position = 0, 0
        self._send(RestartMessage(source.attempt))
        return source

    async def _follow(self) -> None:
        subscription = None
        try:
            source = await self._load(self.step_id)
            if source is None:
                self.gone = True
                return
            self.source = source
            subscription = self._bus.subscribe([f"log:{source.step_id}", f"run:{source.run_id}"])
            self.position, self._byte_position = await asyncio.to_thread(
                count_complete_lines, source.path
            )
            state = await self._step_status(source.step_id)
            self.status = status = None if state is None else state.status
            self.ready.set()
            check_status = False
            while True:
                if check_status:
                    state = await self._step_status(source.step_id)
                    if state is not None and state.attempt != source.attempt:
                        source = await self._restart()
                        if source is None:
                            return
                    new_status = None if state is None else state.status
                    if (
                        new_status is not None
                        and new_status is not status
                        and not new_status.finished  # the final one comes with the end
                    ):
                        self._send(StatusMessage(new_status))
                    self.status = status = new_status
                finished = status is None or status.finished
                await self._broadcast_new_lines(source, finished=finished)
                if finished:
                    self.final = status or Status.ERROR
                    self._send(EndMessage(self.final))
                    return
                event = await subscription.get(within=POLL_SECONDS)
                events = [event, *await _coalesced(subscription, event)]
                check_status = any(
                    event is None or event.kind == OVERFLOW or event.topic.startswith("run:")
                    for event in events
                )
        finally:
            if subscription is not None:
                subscription.close()
            self.ready.set()
            self._on_done(self)


async def _coalesced(subscription: Subscription, first: Event | None) -> list[Event]:
    """The events that follow `first` within `COALESCE_SECONDS` of an append: every
    append since the last read is one read, not one wake-up (and read) each. A status
    change (a few per step) ends the wait: a step's start and end reach viewers at once."""
    if first is None or not first.topic.startswith("log:") or not COALESCE_SECONDS:
        return subscription.get_pending()
    loop = asyncio.get_running_loop()
    until = loop.time() + COALESCE_SECONDS
    events: list[Event] = []
    while (left := until - loop.time()) > 0:
        event = await subscription.get(within=left)
        if event is None:
            break
        events.append(event)
        if not event.topic.startswith("log:"):
            break
    return events + subscription.get_pending()


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
        self.backlogs = Backlogs()
        self._step_ids: dict[tuple[int, int], int] = {}
        """(job id, step index) -> step id: a step keeps its id for as long as it lives."""
        self._asking: dict[
            tuple[int, int], tuple[int, asyncio.Future[tuple[Status | None, int | None]]]
        ] = {}
        """(job id, step index) -> the query under way: the bus's deliveries when it
        started, and its answer to come."""

    def _state_now(self, step_id: int) -> StepState | None:
        with self._session_factory() as session:
            step = session.get(Step, step_id)
            job = None if step is None else session.get(Job, step.job_id)
            if step is None or job is None:
                return None
            return StepState(step.status, log_attempt(job.status, job.attempts))

    async def step_state(self, step_id: int) -> StepState | None:
        return await asyncio.to_thread(self._state_now, step_id)

    def _source_now(self, step_id: int) -> StepSource | None:
        with self._session_factory() as session:
            found = repository.step_with_owners(session, step_id)
            if found is None:
                return None
            step, job, run, project = found
            secrets = service.step_secrets(session, self._settings, project)
            attempt = log_attempt(job.status, job.attempts)
            return StepSource(
                step_id=step.id,
                run_id=run.id,
                job_id=job.id,
                index=step.index,
                name=step.name,
                path=step_log_path(self._settings.data_dir, run.id, job.id, step.index, attempt),
                masker=service.masker_for(secrets),
                attempt=attempt,
            )

    async def _load_source(self, step_id: int) -> StepSource | None:
        return await asyncio.to_thread(self._source_now, step_id)

    def _job_step(self, job_id: int, index: int) -> tuple[Status | None, int | None]:
        """The job's status (None: gone) and the id of its step `index`, if it exists."""
        with self._session_factory() as session:
            job = session.get(Job, job_id)
            if job is None:
                return None, None
            step = repository.step_of_job(session, job_id, index)
            return job.status, None if step is None else step.id

    def _forget(self, follower: StepFollower) -> None:
        if self._followers.get(follower.step_id) is follower:
            del self._followers[follower.step_id]

    async def follower(self, step_id: int) -> StepFollower | None:
        """The running (or just finished) follower of a step, started if need be;
        None when the step does not exist."""
        while True:
            follower = self._followers.get(step_id)
            if follower is None:
                follower = StepFollower(
                    step_id, self._bus, self._load_source, self.step_state, self._forget
                )
                self._followers[step_id] = follower
            try:
                await follower.ready.wait()
            except asyncio.CancelledError:
                # The viewer left before attaching; a follower nobody attached to stops.
                if not follower.viewers and follower.final is None:
                    self._forget(follower)
                    follower.task.cancel()
                raise
            if follower.gone:
                return None
            if follower.task.done() and follower.final is None:
                # It stopped without an end (its last viewer left): start another.
                self._forget(follower)
                continue
            return follower

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

    async def follow_step(self, step_id: int, offset: int, send: Send) -> None:
        """Stream one step from line `offset`: its status, lines, then
        `{"type": "end", "status"}` once it finished."""
        follower = await self.follower(step_id)
        if follower is None:
            await send(end_text(Status.ERROR))
            return
        final = await stream_step(self, follower, offset, send)
        assert final is not None  # a restart is followed within the step's stream
        await send(end_text(final))

    async def _step_of_job(
        self, job_id: int, index: int, *, seen: int | None = None
    ) -> tuple[Status | None, int | None]:
        """The job's status and the id of its step `index` (see `_job_step`). A step's
        id never changes, so once found it is remembered. Viewers asking at the same
        time share one query; with `seen` (the bus's `deliveries` when the caller
        woke), only a query started since then, which sees every change the caller
        was woken for: a hundred viewers woken by one status change make one query."""
        key = (job_id, index)
        step_id = self._step_ids.get(key)
        if step_id is not None:
            return None, step_id
        asking = self._asking.get(key)
        if asking is None or (seen is not None and asking[0] < seen):
            future = asyncio.ensure_future(asyncio.to_thread(self._job_step, job_id, index))
            asking = self._asking[key] = (self._bus.deliveries, future)
            future.add_done_callback(
                lambda done: self._asking.pop(key) if self._asking.get(key) is asking else None
            )
        job_status, step_id = await asyncio.shield(asking[1])
        if step_id is not None:
            if len(self._step_ids) >= MAX_REMEMBERED_STEP_IDS:
                self._step_ids.clear()
            self._step_ids[key] = step_id
        return job_status, step_id

    async def follow_job(
        self, job_id: int, run_id: int, first_index: int, offset: int, send: Send
    ) -> None:
        """Stream every step of job `job_id` (of run `run_id`) in order, from step
        `first_index` (line `offset` of that one, line 0 of the next ones), then the end
        with the job's status."""
        subscription = None
        seen: int | None = None  # the bus's deliveries when the answer was last stale
        index, line = first_index, offset
        try:
            while True:
                job_status, step_id = await self._step_of_job(job_id, index, seen=seen)
                if step_id is None:
                    if job_status is None or job_status.finished:
                        await send(end_text(job_status or Status.ERROR))
                        return
                    if subscription is None:
                        # The next step (or the job's end) is not recorded yet: wait
                        # for the run to change, then look again.
                        subscription = self._bus.subscribe([f"run:{run_id}"])
                    else:
                        await subscription.get(within=POLL_SECONDS)
                    seen = self._bus.deliveries
                    continue
                follower = await self.follower(step_id)
                if follower is None or follower.source is None or follower.source.job_id != job_id:
                    self._step_ids.pop((job_id, index), None)  # gone: look again
                    seen = self._bus.deliveries
                    continue
                final = await stream_step(self, follower, line, send, whole_job=True)
                if final is None:
                    # The job was put back in the queue: its steps run again, from the
                    # first this viewer asked for.
                    index, line = first_index, 0
                    continue
                await send(_status_text(step_id, final))
                index, line = index + 1, 0
        finally:
            if subscription is not None:
                subscription.close()


Send = Callable[[str | LinesMessage], Awaitable[None]]
"""Sends a message to a viewer: a JSON text, or a lines message (its text, or its
compressed form where the connection takes it)."""


async def _forward(step_id: int, message: LinesMessage, next_line: int, send: Send) -> int:
    """Send the part of `message` from line `next_line` on; returns the next line."""
    if message.end <= next_line:
        return next_line
    if message.start < next_line:
        lines, runs = message.lines_and_time_runs()
        skip = next_line - message.start
        _, rest = split_runs(runs, skip)
        await send(lines_message(step_id, next_line, lines[skip:], rest))
    else:
        await send(message)
    return message.end


async def stream_step(
    streams: LogStreams,
    follower: StepFollower,
    offset: int,
    send: Send,
    *,
    whole_job: bool = False,
) -> Status | None:
    """Send the step's status, then its lines from line `offset` until it ends; returns
    its final status.

    Messages: `{"type": "status", "step", "job", "index", "name", "status"}` first,
    `{"type": "lines", "step", "start", "lines", "time_runs"}`, `{"type": "status", "step",
    "status"}` when it changes, and `{"type": "restart", "step", "attempt"}` when the job
    was put back in the queue and the step's log begins again (the new attempt's lines
    follow from line 0; with `whole_job`, None is returned then instead, for the caller
    to begin again with the job's first step); the caller sends the end."""
    next_line = offset
    first = True
    attempt = follower.source.attempt if follower.source is not None else 1
    while True:
        source = follower.source
        assert source is not None  # `LogStreams.follower` returns loaded followers
        if source.attempt != attempt:  # requeued while this viewer caught up
            attempt, next_line = source.attempt, 0
            await send(_restart_text(source.step_id, attempt))
            if whole_job:
                return None
        viewer = Viewer()
        attachment = follower.attach(viewer)
        try:
            if first:
                await send(status_text(source, attachment.status))
                first = False
            from_file = attachment.kept[0].start if attachment.kept else attachment.join_at
            while next_line < from_file:
                upto = min(from_file, next_line + BACKLOG_LINES_PER_READ)
                messages = await streams.backlogs.read(source, next_line, upto)
                if not messages:
                    break
                for message in messages:
                    await send(message)
                next_line = messages[-1].end
            for message in attachment.kept:
                next_line = await _forward(source.step_id, message, next_line, send)
            while True:
                queued = await viewer.queue.get()
                if isinstance(queued, Lagged):
                    break
                if isinstance(queued, EndMessage):
                    return queued.status
                if isinstance(queued, StatusMessage):
                    await send(_status_text(source.step_id, queued.status))
                    continue
                if isinstance(queued, RestartMessage):
                    attempt, next_line = queued.attempt, 0
                    await send(_restart_text(source.step_id, attempt))
                    if whole_job:
                        return None
                    continue
                next_line = await _forward(source.step_id, queued, next_line, send)
        finally:
            streams.detach(follower, viewer)
        # Fell behind: catch up from the file (and the follower, running or a new one).
        found = await streams.follower(source.step_id)
        if found is None:
            return Status.ERROR
        follower = found


def _restart_text(step_id: int, attempt: int) -> str:
    return json.dumps({"type": "restart", "step": step_id, "attempt": attempt})


def _status_text(step_id: int, status: Status) -> str:
    return json.dumps({"type": "status", "step": step_id, "status": str(status)})


def status_text(source: StepSource, status: Status | None) -> str:
    return json.dumps(
        {
            "type": "status",
            "step": source.step_id,
            "job": source.job_id,
            "index": source.index,
            "name": source.name,
            "status": str(status or Status.ERROR),
        }
    )


def end_text(status: Status) -> str:
    return json.dumps({"type": "end", "status": str(status)})
