"""Step logs on the server: storing what agents send, reading it back masked.

Storage. One file per step at `step_log_path(...)`, written with
`conveyor.logstore.LogWriter` (raw bytes plus a sparse line index). The file holds the
agent's bytes exactly as they arrived: the agent counts its offsets in the bytes it
sent, and a server that rewrote them on the way in would have to translate every offset
forever after. So the server's own masking (the second line of defence, for a secret
the agent missed or one added after the step ran) is applied when the log is SERVED:
line ranges, raw download and WebSocket streams all go through `Masker`.

Times. Beside each log, `logstore` keeps when each line started (a `.times` file of
one record per line; the log bytes stay as the step printed them). An agent sends the
times of the lines that start in each batch (`protocol.agents.LogChunk`); a batch
without them (an older agent) is stamped with its arrival. Of a resent batch whose
head is already stored, only the tail is written, with the last of its times, which
are those of the tail's lines. Line ranges and streams serve the times beside the
lines, in ms since the epoch.

Appends, `append(session, settings, step, offset, data, secrets, line_times)`:

    offset == held size               append all of `data`
    offset <  held < offset+len(data) append only the new tail (a resent, longer batch)
    offset + len(data) <= held        a duplicate: nothing is written
    offset >  held                    LogGapError (409, detail {"size": held}): resend
                                      from `size`

Appends to one step serialise on a lock per step file (see `writers.py`). The file is
the truth: the step's `log_byte_size` / `log_line_count` are copies raised after each
append, and `Event("log:<step id>", "log.append", {size, lines})` goes out after commit.
A request whose transaction fails after its bytes were written leaves them in the file;
the agent's retry is then a duplicate, which still refreshes the counters and the event.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, object_session

from conveyor.agent.masking import Masker
from conveyor.logstore import LineTimes, read_line_times, read_lines
from conveyor.protocol.agents import InvalidLogChunkError, LogAppended, LogChunk, StepEnd
from conveyor.server.config import Settings
from conveyor.server.errors import ConflictError, InvalidInputError, NotFoundError
from conveyor.server.events import Event, publish_after_commit
from conveyor.server.logs import repository
from conveyor.server.logs.paths import log_attempt, step_log_path
from conveyor.server.logs.writers import OpenLogs
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.models.step import Step
from conveyor.server.runs.repository import RunRepository
from conveyor.server.secrets import service as secrets_service
from conveyor.server.users.authorization import Action, Actor, authorize

logger = logging.getLogger("conveyor.server.logs")

MAX_LINES_PER_READ = 10_000
"""Most lines one range request returns; clients page on with `start`."""
RAW_CHUNK_BYTES = 1 << 20

open_logs = OpenLogs()
"""The writers of this process's step logs."""


class LogGapError(ConflictError):
    """A batch starts past the end of what the server holds."""

    code = "log_gap"

    def __init__(self, step: Step, offset: int, size: int) -> None:
        super().__init__(
            f"the log batch for step {step.index} ({step.name!r}) of job {step.job_id} "
            f"starts at byte {offset}, but the server holds {size} bytes: resend from "
            f"byte {size}",
            detail={"size": size},
        )


class StepNotFoundError(NotFoundError):
    code = "step_not_found"


class InvalidLogRangeError(InvalidInputError):
    code = "invalid_log_range"


def times_of(chunk: LogChunk) -> LineTimes | None:
    """The times an agent sent with a batch, as the log store takes them."""
    if chunk.step_started_at_ms is None:
        return None
    return LineTimes(chunk.step_started_at_ms, chunk.line_offsets_ms)


class InvalidLogChunkBodyError(InvalidInputError):
    code = "invalid_log_chunk"


def decode_step_end_log(end: StepEnd) -> bytes:
    """The log tail's body in a step end (see `StepEnd`); 422 when it is no base64."""
    try:
        return end.log_body()
    except InvalidLogChunkError as error:
        raise InvalidLogChunkBodyError(
            f"{error}; send the tail's body as standard base64", detail={"field": "log"}
        ) from error


def decode_chunk(media_type: str | None, body: bytes) -> LogChunk:
    """An agent's log batch as sent: a `LogChunk` body, or raw bytes (older agents)."""
    try:
        return LogChunk.decode(media_type, body)
    except InvalidLogChunkError as error:
        raise InvalidLogChunkBodyError(
            f"{error}; send the bytes alone as application/octet-stream, or a whole "
            "chunk as conveyor.protocol.agents.LogChunk.encode() makes it",
            detail={"media_type": media_type, "length": len(body)},
        ) from error


def log_file(settings: Settings, step: Step) -> Path:
    """Where the log of `step` (attached to a session) is stored."""
    session = object_session(step)
    job = None if session is None else repository.job_of_step(session, step)
    if job is None:
        raise StepNotFoundError(
            f"step {step.id} has no job (it was deleted, or the step is not in a session)"
        )
    attempt = log_attempt(job.status, job.attempts)
    return step_log_path(settings.data_dir, job.run_id, job.id, step.index, attempt)


def append(
    session: Session,
    settings: Settings,
    step: Step,
    offset: int,
    data: bytes,
    secrets: Mapping[str, str],
    line_times: LineTimes | None = None,
) -> LogAppended:
    """Store an agent's batch of `step`'s log at byte `offset` (rules in the module
    docstring). `secrets` are the project's: a batch that still contains one is stored
    as sent (served masked) and logged as an agent that failed to mask. `line_times`
    are when the lines that start in `data` started (None: now; see `times_of`)."""
    if offset < 0:
        raise InvalidLogRangeError(
            f"the log offset must be 0 or more, not {offset} (step {step.id})",
            detail={"offset": offset},
        )
    path = log_file(settings, step)
    gap_at: int | None = None
    new_bytes = b""
    with open_logs.writing(path) as writer:
        held = writer.size
        if offset > held:
            gap_at = held
        else:
            new_bytes = data[held - offset :]
            if new_bytes:
                writer.append(new_bytes, line_times)
        size, lines = writer.size, writer.total_lines
    if gap_at is not None:
        raise LogGapError(step, offset, gap_at)
    if new_bytes and secrets and _masker(_frozen(secrets)).mask(new_bytes) is not new_bytes:
        logger.warning(
            "the agent sent an unmasked secret in the log of step %s (job %s); it is "
            "stored as sent and masked when served",
            step.id,
            step.job_id,
        )
    # Duplicates too: a batch whose first request failed after writing the file comes
    # back as a duplicate, and the counters and viewers must still learn of it.
    _record_growth(session, step, size, lines)
    return LogAppended(size=size, lines=lines)


def write_message(session: Session, settings: Settings, step: Step, text: str) -> None:
    """Append a line written by the server itself (a pipeline error, a note), on a line
    of its own. Only for steps no agent is writing to: it moves the byte size on, which
    an agent streaming to the same step would take for a duplicate of its own bytes."""
    path = log_file(settings, step)
    with open_logs.writing(path) as writer:
        ends_mid_line = writer.total_lines != writer.lines
        body = text if text.endswith("\n") else text + "\n"
        writer.append((b"\n" if ends_mid_line else b"") + body.encode())
        size, lines = writer.size, writer.total_lines
    _record_growth(session, step, size, lines)


def _record_growth(session: Session, step: Step, size: int, lines: int) -> None:
    repository.raise_log_counters(session, step, size, lines)
    publish_after_commit(
        session, Event(f"log:{step.id}", "log.append", {"size": size, "lines": lines})
    )


def read_range(settings: Settings, step: Step, start: int, end: int | None) -> list[bytes]:
    """Lines `[start, end)` (0-based, `end` None: to the end) of the stored log, with
    their newlines, unmasked, at most MAX_LINES_PER_READ of them."""
    if start < 0 or (end is not None and end < start):
        raise InvalidLogRangeError(
            f"the line range [{start}, {end}) of step {step.id} is not valid: start must "
            "be 0 or more and end (if given) at least start",
            detail={"start": start, "end": end},
        )
    limit = start + MAX_LINES_PER_READ
    return read_stored_lines(
        log_file(settings, step), start, limit if end is None else min(end, limit)
    )


def read_times(settings: Settings, step: Step, start: int, count: int) -> list[int | None]:
    """When lines `[start, start + count)` started, ms since the epoch; None for a line
    whose time is not known (stored before times were kept)."""
    times = read_line_times(log_file(settings, step), start, start + count)
    return times + [None] * (count - len(times))


def read_stored_lines(path: Path, start: int, end: int | None) -> list[bytes]:
    """`logstore.read_lines`, safe while the log grows: reading at the end of a file
    being appended to can return a line in two pieces (the part written so far, then
    the rest), which are put back together here."""
    try:
        lines = read_lines(path, start, end)
    except FileNotFoundError:
        return []
    if any(not line.endswith(b"\n") for line in lines[:-1]):
        lines = split_lines(b"".join(lines))
    return lines


# --- masking when serving ------------------------------------------------------------


def _frozen(secrets: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(secrets.items())


@functools.lru_cache(maxsize=256)
def _masker(secrets: frozenset[tuple[str, str]]) -> Masker:
    # A Masker compiles one expression over every form of every secret; build it once
    # per set of secrets rather than once per request.
    return Masker(dict(secrets))


def masker_for(secrets: Mapping[str, str]) -> Masker:
    return _masker(_frozen(secrets))


def split_lines(data: bytes) -> list[bytes]:
    """`data` cut after each newline (only `\\n`: a `\\r` of a progress bar stays inside
    its line), the newlines kept."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def mask_lines(lines: list[bytes], masker: Masker) -> list[bytes]:
    """`lines` with every secret masked, one output line per input line."""
    joined = b"".join(lines)
    masked = masker.mask(joined)
    if masked is joined:
        return lines
    if masked.count(b"\n") == joined.count(b"\n"):
        return split_lines(masked)
    # A multi-line secret spanned lines and became one mask: mask line by line instead
    # (the masker knows every line of a multi-line value), so line numbers hold.
    return [masker.mask(line) for line in lines]


def line_text(line: bytes) -> str:
    """A stored line as text for JSON: without its line ending, bad UTF-8 replaced."""
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line.decode("utf-8", "replace")


def read_text_range(
    settings: Settings, step: Step, start: int, end: int | None, secrets: Mapping[str, str]
) -> list[str]:
    """Lines `[start, end)` as masked text (see `read_range`)."""
    lines = mask_lines(read_range(settings, step, start, end), masker_for(secrets))
    return [line_text(line) for line in lines]


@dataclass(frozen=True)
class RawLog:
    """The log of a step as it is when asked, masked, for download. The size is fixed
    when it is opened, so a log that grows meanwhile is served as it was (and the
    Content-Length announced is the length sent)."""

    path: Path
    size: int
    masker: Masker
    masks: bool

    def _stored_chunks(self) -> Iterator[bytes]:
        # Chunks end at a newline (or at `size`), so masking sees whole lines.
        remaining = self.size
        if remaining == 0:
            return
        carry = b""
        with self.path.open("rb") as f:
            while remaining > 0:
                block = f.read(min(RAW_CHUNK_BYTES, remaining))
                if not block:
                    break
                remaining -= len(block)
                block = carry + block
                cut = block.rfind(b"\n") + 1
                if cut == 0 and remaining > 0:
                    carry = block
                    continue
                carry = block[cut:] if remaining > 0 else b""
                yield block[:cut] if remaining > 0 else block
        if carry:
            yield carry

    def chunks(self) -> Iterator[bytes]:
        for chunk in self._stored_chunks():
            yield self.masker.mask(chunk) if self.masks else chunk

    def length(self) -> int:
        if not self.masks:
            return self.size
        return sum(len(chunk) for chunk in self.chunks())


def raw_log(settings: Settings, step: Step, secrets: Mapping[str, str]) -> RawLog:
    path = log_file(settings, step)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    return RawLog(path=path, size=size, masker=masker_for(secrets), masks=bool(secrets))


# --- finding what to read, for an actor -----------------------------------------------


@dataclass(frozen=True)
class StepContext:
    step: Step
    job: Job
    run: Run
    project: Project


def step_for_reading(session: Session, actor: Actor, step_id: int) -> StepContext:
    """The step `step_id` with its job, run and project, if `actor` may read them."""
    found = repository.step_with_owners(session, step_id)
    if found is None:
        raise StepNotFoundError(
            f"there is no step {step_id}; GET /api/v1/runs/{{run id}} lists a run's steps",
            detail={"step": step_id},
        )
    context = StepContext(*found)
    authorize(actor, context.project, Action.READ)
    return context


def step_secrets(session: Session, settings: Settings, project: Project) -> dict[str, str]:
    """The project's secrets, for masking what is served."""
    return secrets_service.secret_values(session, settings, project)


class RunNotFoundError(NotFoundError):
    code = "run_not_found"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


def job_for_reading(session: Session, actor: Actor, job_id: int) -> tuple[Job, Run, Project]:
    found = RunRepository(session).job_with_owners(job_id)
    if found is None:
        raise JobNotFoundError(
            f"there is no job {job_id}; GET /api/v1/runs/{{run id}} lists a run's jobs",
            detail={"job": job_id},
        )
    authorize(actor, found[2], Action.READ)
    return found


def run_for_reading(session: Session, actor: Actor, run_id: int) -> tuple[Run, Project]:
    found = RunRepository(session).with_project(run_id)
    if found is None:
        raise RunNotFoundError(
            f"there is no run {run_id}; GET /api/v1/runs lists the runs you may read",
            detail={"run": run_id},
        )
    authorize(actor, found[1], Action.READ)
    return found


def step_of_job(session: Session, job: Job, index: int) -> Step | None:
    return repository.step_of_job(session, job.id, index)
