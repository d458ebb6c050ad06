"""The agent: registers, claims jobs with free slots (long-poll), runs each with the
engine in a fresh workspace, streams logs, heartbeats, uploads artifacts and reports.

The same code runs as `conveyor agent` on a build machine and as the server's
embedded agent; it talks to the server only over HTTP (`conveyor.agent.client`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import platform as host_platform
import shutil
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from conveyor import __version__
from conveyor.agent import mirrors_dir_of
from conveyor.agent.artifacts import Artifact
from conveyor.agent.backends.base import Backend
from conveyor.agent.checkout import CheckoutError, MirrorCache
from conveyor.agent.client import AgentClient, EndpointMissingError, LogGap, ServerRefusedError
from conveyor.agent.engine import JobRunner, RunFacts, StepResult
from conveyor.pipeline.plan import ArchiveFormat, StepPlan
from conveyor.protocol.agents import (
    AgentInfo,
    FinalStepEnd,
    Heartbeat,
    JobReport,
    JobSpec,
    LogChunk,
    RunningJob,
    StepEnd,
    StepReport,
    UploadStart,
)
from conveyor.protocol.status import Status

logger = logging.getLogger("conveyor.agent")

LOG_BATCH_BYTES = 64 * 1024
"""A step's pending log is sent once this much has gathered..."""
LOG_FLUSH_SECONDS = 0.05
"""...or this long after the first unsent byte, whichever comes first."""
LOG_UNSENT_LIMIT = 8 * 1024 * 1024
"""A step whose output is this far ahead of what the server acknowledged waits until
all of it is sent: the spool does not grow without bound while the server is slow or
away."""
STEP_START_REPORT_DELAY = LOG_FLUSH_SECONDS
"""A step's start is reported this long after it started, and not at all when the step
has ended by then: its end report carries the start too, so a short step costs one
report instead of two."""
STEP_END_HOLD = 0.2
"""The end of a step is held back this long at most: when the job ends meanwhile, it
goes with the job's finish report (see `ServerSink`)."""
LOG_REQUEST_BYTES = 1024 * 1024
UPLOAD_CHUNK_BYTES = 1024 * 1024
CLAIM_WAIT_SECONDS = 30.0
UPLOAD_ATTEMPTS = 20


@dataclass
class AgentSettings:
    server_url: str
    token: str
    name: str
    work_dir: Path
    cache_dir: Path
    labels: list[str] = field(default_factory=list)
    capacity: int = 1
    claim_wait: float = CLAIM_WAIT_SECONDS


def _timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class _StepLog:
    """One step's log: spooled to a local file, so any range can be (re)sent, with
    when each piece of it was read, so a range resent later carries its lines' times.

    The times are kept as runs, `(byte where a read began, ms after the step
    started)`, one per read with a new millisecond: a chunk's line times are counted
    per run (`bytes.count`), not per line, and a long log costs its reads, not its
    lines."""

    def __init__(self, path: Path, started_at: float | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("w+b")
        self.written = 0
        self.acknowledged = 0
        started = time.time() if started_at is None else started_at
        self.started_at_ms = round(started * 1000)
        # The start on the monotonic clock: line times do not jump with the wall clock.
        self._started_monotonic = time.monotonic() - max(0.0, time.time() - started)
        self._read_at = array("Q")
        self._read_ms = array("I")

    def read(self, start: int, end: int) -> bytes:
        self.handle.seek(start)
        return self.handle.read(end - start)

    def append(self, data: bytes) -> None:
        if not data:
            return
        elapsed_ms = max(0, round((time.monotonic() - self._started_monotonic) * 1000))
        if not self._read_ms or self._read_ms[-1] != elapsed_ms:
            self._read_at.append(self.written)
            self._read_ms.append(min(elapsed_ms, 0xFFFF_FFFF))
        self.handle.seek(0, 2)
        self.handle.write(data)
        self.handle.flush()
        self.written += len(data)

    def chunk(self, start: int, end: int) -> LogChunk:
        """Bytes `[start, end)` and the times of the lines that start in them."""
        lead = 1 if start > 0 else 0  # the byte before: does a line start at `start`?
        raw = self.read(start - lead, end)
        shift = start - lead  # `raw[i]` is byte `shift + i` of the log
        offsets = array("I")
        run = bisect.bisect_right(self._read_at, start) - 1
        at = start
        while at < end and run >= 0:
            following = run + 1
            run_end = self._read_at[following] if following < len(self._read_at) else end
            until = min(end, run_end)
            # A line starts at byte q when q == 0 or byte q - 1 is a newline.
            starts = raw.count(b"\n", max(at - 1 - shift, 0), until - 1 - shift)
            starts += 1 if at == 0 else 0
            offsets.extend(array("I", [self._read_ms[run]]) * starts)
            at, run = until, following
        return LogChunk(raw[lead:], self.started_at_ms, offsets)


class ServerSink:
    """A `JobSink` that reports steps to the server and streams their logs in batches:
    sent at 64 KiB or every ~50 ms, whichever comes first, never one request per line,
    one request at a time (what gathers meanwhile goes in the next; the step waits only
    when `LOG_UNSENT_LIMIT` is unsent); on a gap the server names, resent from the
    server's size.

    Step reports go out in order behind the job's back: a step starts without waiting
    for the server to hear that it did (the start is reported after
    `STEP_START_REPORT_DELAY`, or only with the end of a shorter step), and the end of a
    step (its last log bytes, then its report) is sent while the next one starts or the
    backend cleans up. `close()` waits for all of it and raises the first failure,
    before the job's own report.

    The end of the step that ended last is held back for up to `STEP_END_HOLD`: when
    no step starts meanwhile it was the job's last, and it goes with the job's finish
    report (`final_step_end`, `Agent._finish`), one request instead of two."""

    def __init__(self, client: AgentClient, spec: JobSpec, spool_dir: Path) -> None:
        self.client = client
        self.spec = spec
        self.spool_dir = spool_dir
        self._logs: dict[int, _StepLog] = {}
        self._send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        """Some log bytes are unsent."""
        self._full = asyncio.Event()
        """A batch's worth (`LOG_BATCH_BYTES`) is unsent: no reason to wait any longer."""
        self._flusher: asyncio.Task[None] | None = None
        self._reports: asyncio.Task[None] | None = None
        self._unreported_starts: dict[int, asyncio.TimerHandle] = {}
        self._held_end: tuple[int, StepReport] | None = None
        self._held_end_timer: asyncio.TimerHandle | None = None
        self.final_step_end: FinalStepEnd | None = None
        """After `close()`: the end of the job's last step, for the finish report to
        carry; `send_final_step_end()` sends it apart when that cannot be."""
        self.on_failure: Callable[[], None] | None = None
        """Called once when a report fails, so that the job stops instead of running on
        for a server that no longer takes its reports."""

    def _log(self, index: int, started_at: float | None) -> _StepLog:
        if index not in self._logs:
            self._logs[index] = _StepLog(self.spool_dir / f"{index}.log", started_at)
        return self._logs[index]

    def acknowledged(self, index: int) -> int:
        """The bytes of step `index`'s log that the server has said it stored."""
        log = self._logs.get(index)
        return 0 if log is None else log.acknowledged

    def reports_pending(self) -> bool:
        """Whether step reports are queued or in flight."""
        return self._reports is not None and not self._reports.done()

    async def step_started(self, result: StepResult, step: StepPlan) -> None:
        self._release_held_end()  # the step that ended before this one was not the last
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_periodically())
        report = functools.partial(self._report, result.index, self._step_report(result))
        self._unreported_starts[result.index] = asyncio.get_running_loop().call_later(
            STEP_START_REPORT_DELAY, self._report_start, result.index, report
        )

    def _report_start(self, index: int, report: Callable[[], Awaitable[None]]) -> None:
        if self._unreported_starts.pop(index, None) is not None:
            self._in_order(report)

    async def step_output(self, result: StepResult, data: bytes) -> None:
        log = self._log(result.index, result.started_at)
        log.append(data)
        # The step's output is read (and spooled) on while a batch is in flight, and
        # the next request carries all that gathered meanwhile: a slow server means
        # fewer, larger requests, not a slower step, until the step is
        # `LOG_UNSENT_LIMIT` ahead of it.
        unsent = log.written - log.acknowledged
        if unsent >= LOG_UNSENT_LIMIT:
            await self._send(log, result.index)
            return
        if unsent >= LOG_BATCH_BYTES:
            self._full.set()
        self._wake.set()

    async def step_finished(self, result: StepResult) -> None:
        unreported_start = self._unreported_starts.pop(result.index, None)
        if unreported_start is not None:
            unreported_start.cancel()  # the end report says when it started
        report = self._step_report(result)
        self._release_held_end()
        if not self.client.finishes_with_step_end:
            self._in_order(functools.partial(self._send_end, result.index, report))
            return
        self._held_end = (result.index, report)
        self._held_end_timer = asyncio.get_running_loop().call_later(
            STEP_END_HOLD, self._release_held_end
        )

    def _release_held_end(self) -> None:
        """Send the held step end now (behind what was queued before it)."""
        if self._held_end_timer is not None:
            self._held_end_timer.cancel()
            self._held_end_timer = None
        if self._held_end is not None:
            index, report = self._held_end
            self._held_end = None
            self._in_order(functools.partial(self._send_end, index, report))

    async def _send_end(self, index: int, report: StepReport) -> None:
        """A step's log tail and its end report: in one request when the server takes
        it, else the log, then the report."""
        log = self._logs.get(index)
        if await self._end_in_one_call(log, index, report):
            return
        if log is not None:
            await self._send(log, index)
        await self._report(index, report)

    async def _end_in_one_call(self, log: _StepLog | None, index: int, report: StepReport) -> bool:
        """Send the step's log tail (when small) with its end report in one request;
        False when that was not done (a tail too long for one request, a gap to resend
        from, an older server): the caller then sends them apart."""
        if not self.client.ends_steps_with_log:
            return False
        async with self._send_lock:
            start = 0 if log is None else log.acknowledged
            unsent = 0 if log is None else log.written - start
            if unsent > LOG_BATCH_BYTES:
                return False
            chunk = None if log is None or not unsent else log.chunk(start, start + unsent)
            try:
                appended = await self.client.end_step(
                    self.spec.job_id, self.spec.lease_id, index, report, start, chunk
                )
            except LogGap as gap:
                if log is not None:
                    log.acknowledged = min(gap.size, log.written)
                return False
            except EndpointMissingError:
                return False
            if log is not None:
                log.acknowledged = min(max(appended.size, log.acknowledged), log.written)
            return True

    async def close(self) -> None:
        """Wait for every report and log queued (raising the first failure), and set
        `final_step_end` when the last step's end is still held. The spooled logs stay
        open until `discard()`."""
        for unreported_start in self._unreported_starts.values():
            unreported_start.cancel()
        self._unreported_starts.clear()
        if self._held_end_timer is not None:
            self._held_end_timer.cancel()
            self._held_end_timer = None
        try:
            if self._reports is not None:
                await self._reports
        finally:
            if self._flusher is not None:
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
            held = None if self._held_end is None else self._held_end[0]
            for index, log in self._logs.items():
                if index != held:
                    with contextlib.suppress(ServerRefusedError, httpx.HTTPError):
                        await self._send(log, index)
        self.final_step_end = self._final_step_end()

    def _final_step_end(self) -> FinalStepEnd | None:
        if self._held_end is None:
            return None
        index, report = self._held_end
        log = self._logs.get(index)
        start = 0 if log is None else log.acknowledged
        unsent = 0 if log is None else log.written - start
        if unsent > LOG_BATCH_BYTES:
            return None  # too long for one request: `send_final_step_end` sends it
        chunk = None if log is None or not unsent else log.chunk(start, start + unsent)
        return FinalStepEnd.of_step(index, StepEnd.of(report, start, chunk))

    async def send_final_step_end(self, gap: int | None = None) -> None:
        """Send the held end of the last step apart (its log from `gap` when the server
        named one), for a finish report that will not carry it."""
        if self._held_end is None:
            return
        index, report = self._held_end
        self._held_end = None
        self.final_step_end = None
        log = self._logs.get(index)
        if log is not None and gap is not None:
            log.acknowledged = min(gap, log.written)
        if log is not None:
            await self._send(log, index)
        await self._report(index, report)

    def discard(self) -> None:
        """Close the spooled logs (after the job's finish report)."""
        for log in self._logs.values():
            log.handle.close()

    def _in_order(self, send: Callable[[], Awaitable[None]]) -> None:
        """Send after everything queued before; a failure skips what follows it."""
        previous = self._reports

        async def after_previous() -> None:
            if previous is not None:
                await previous
            try:
                await send()
            except Exception:
                if self.on_failure is not None:
                    self.on_failure()
                raise

        self._reports = asyncio.create_task(after_previous())

    @staticmethod
    def _step_report(result: StepResult) -> StepReport:
        # Taken when the engine tells it: the engine goes on changing `result`.
        return StepReport(
            status=result.status,
            exit_code=result.exit_code,
            started_at=_timestamp(result.started_at),
            finished_at=_timestamp(result.finished_at),
            message=result.message,
        )

    async def _report(self, index: int, report: StepReport) -> None:
        await self.client.report_step(self.spec.job_id, self.spec.lease_id, index, report)

    async def _flush_periodically(self) -> None:
        while True:
            await self._wake.wait()
            if not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), LOG_FLUSH_SECONDS)
            self._wake.clear()
            self._full.clear()
            for index, log in list(self._logs.items()):
                try:
                    await self._send(log, index)
                except (ServerRefusedError, httpx.HTTPError) as exc:
                    logger.warning("job %s: sending the log failed: %s", self.spec.job_id, exc)

    async def _send(self, log: _StepLog, index: int) -> None:
        async with self._send_lock:
            while log.acknowledged < log.written:
                end = min(log.written, log.acknowledged + LOG_REQUEST_BYTES)
                chunk = log.chunk(log.acknowledged, end)
                try:
                    appended = await self.client.append_log(
                        self.spec.job_id, self.spec.lease_id, index, log.acknowledged, chunk
                    )
                except LogGap as gap:
                    log.acknowledged = min(gap.size, log.written)
                    continue
                log.acknowledged = min(max(appended.size, log.acknowledged), log.written)


async def finish_job(
    client: AgentClient, spec: JobSpec, report: JobReport, sink: ServerSink | None
) -> None:
    """The job's final report, carrying the end of its last step when `sink` still
    holds it; that end is sent apart first when the server cannot take it so (a gap in
    the step's log, a server before `JobReport.step_end`)."""
    final = None if sink is None else sink.final_step_end
    gap: int | None = None
    if final is not None:
        try:
            await client.finish(
                spec.job_id, spec.lease_id, report.model_copy(update={"step_end": final})
            )
            return
        except LogGap as refused:
            gap = refused.size
        except EndpointMissingError:
            pass
    if sink is not None:
        await sink.send_final_step_end(gap)
    await client.finish(spec.job_id, spec.lease_id, report)


class Agent:
    """Keeps up to `capacity` jobs running until `stop()`."""

    def __init__(self, settings: AgentSettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.client = AgentClient(settings.server_url, settings.token)
        self.mirrors = MirrorCache(mirrors_dir_of(settings.cache_dir))
        self.heartbeat_interval = 10.0
        # Keyed by lease, not by job: after a lost lease the same job can come back to
        # this agent as a new attempt while the stale one is still stopping.
        self._runners: dict[str, JobRunner] = {}
        self._cancelled: set[str] = set()
        self._superseded: set[str] = set()
        """Leases of jobs that came back to this agent as a new attempt: stopped, left
        out of heartbeats, and deaf to cancels (which name the job, i.e. the new one)."""
        self._jobs: dict[str, tuple[JobSpec, asyncio.Task[None]]] = {}
        self._removals: set[asyncio.Task[None]] = set()
        """Workspaces of ended jobs being removed; a stop waits for them."""
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        # The server may not answer yet (the embedded agent starts with it): registering
        # retries until it does, unless the agent is stopped meanwhile.
        registering = asyncio.create_task(self._register())
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({registering, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not registering.done():
            registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registering
            await self.client.close()
            return
        registering.result()
        beating = asyncio.create_task(self._heartbeat_forever())
        try:
            await self._claim_forever()
        finally:
            beating.cancel()
            for runner in self._runners.values():
                runner.cancel("agent shutdown")
            tasks = [task for _, task in self._jobs.values()]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self._removals:
                await asyncio.gather(*self._removals, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            await self.client.close()

    async def _register(self) -> None:
        registered = await self.client.register(
            AgentInfo(
                name=self.settings.name,
                labels=self.settings.labels,
                capacity=self.settings.capacity,
                version=__version__,
                platform=f"{host_platform.system().lower()}-{host_platform.machine()}",
                backend=self.backend.name,
            )
        )
        self.heartbeat_interval = registered.heartbeat_interval
        self.client.fit_to_lease(registered.lease_duration)
        logger.info("agent %s registered (id %s)", self.settings.name, registered.agent_id)

    async def _claim_forever(self) -> None:
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                free = self.settings.capacity - len(self._jobs)
                if free <= 0:
                    tasks = {task for _, task in self._jobs.values()}
                    await asyncio.wait(tasks | {stopping}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                claiming = asyncio.create_task(self.client.claim(free, self.settings.claim_wait))
                await asyncio.wait({claiming, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not claiming.done():
                    claiming.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await claiming
                    break
                try:
                    response = claiming.result()
                except (ServerRefusedError, httpx.HTTPError) as exc:
                    logger.warning("claiming failed: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                self._cancel(response.cancel)
                for spec in response.jobs:
                    self._supersede(spec)
                    task = asyncio.create_task(self._run_job(spec))
                    self._jobs[spec.lease_id] = (spec, task)
                    task.add_done_callback(functools.partial(self._forget, spec.lease_id))
        finally:
            stopping.cancel()

    def _forget(self, lease_id: str, _task: object = None) -> None:
        self._jobs.pop(lease_id, None)
        self._runners.pop(lease_id, None)
        self._cancelled.discard(lease_id)
        self._superseded.discard(lease_id)

    def _current_leases(self, job_ids: list[int]) -> list[str]:
        wanted = set(job_ids)
        return [
            lease_id
            for lease_id, (spec, _) in self._jobs.items()
            if spec.job_id in wanted and lease_id not in self._superseded
        ]

    def _cancel(
        self, job_ids: list[int], by: str = "server", among: set[str] | None = None
    ) -> None:
        """Stop the jobs named, under their current lease; with `among`, only under
        those leases (a heartbeat's answer is about the leases it carried, and the
        job may have come back under a new one meanwhile)."""
        for lease_id in self._current_leases(job_ids):
            if among is not None and lease_id not in among:
                continue
            self._cancelled.add(lease_id)
            runner = self._runners.get(lease_id)
            if runner is not None:
                runner.cancel(by)

    def _supersede(self, spec: JobSpec) -> None:
        """A job this agent still runs under an older lease was handed out again: the
        server gave up on that lease, so the old attempt stops (without a report: the
        server refuses them) before the new one starts."""
        for lease_id in self._current_leases([spec.job_id]):
            logger.warning(
                "job %s: attempt %s replaces the one still running here; stopping that one",
                spec.job_id,
                spec.attempt,
            )
            self._cancel([spec.job_id], by=f"superseded by attempt {spec.attempt}")
            self._superseded.add(lease_id)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            running = [
                RunningJob(job_id=spec.job_id, lease_id=lease_id)
                for lease_id, (spec, _) in self._jobs.items()
                if lease_id not in self._superseded
            ]
            try:
                # Retried only until the next beat is due, which then says what runs now.
                answer = await self.client.heartbeat(
                    Heartbeat(running=running), retry_for=self.heartbeat_interval
                )
            except (ServerRefusedError, httpx.HTTPError) as exc:
                logger.warning("heartbeat failed: %s", exc)
                continue
            self._cancel(answer.cancel, among={job.lease_id for job in running})

    async def _run_job(self, spec: JobSpec) -> None:
        root = self.settings.work_dir / f"job-{spec.job_id}-{spec.attempt}"
        sink: ServerSink | None = None
        try:
            report, artifacts, sink = await self._execute(spec, root)
            if report.status in (Status.SUCCESS, Status.WARNING) and artifacts:
                if sink is not None:
                    await sink.send_final_step_end()  # shown ended while uploading
                failure = await self._upload_all(spec, artifacts)
                if failure is not None:
                    report = JobReport(
                        status=Status.ERROR,
                        message=failure,
                        started_at=report.started_at,
                        finished_at=report.finished_at,
                    )
            await finish_job(self.client, spec, report, sink)
        except ServerRefusedError as exc:
            # 403/404/409: the job is no longer ours (requeued, deleted); nothing to report.
            logger.warning("job %s: the server refused a report: %s", spec.job_id, exc)
        except Exception:
            logger.exception("job %s failed inside the agent", spec.job_id)
            with contextlib.suppress(ServerRefusedError, httpx.HTTPError):
                await self.client.finish(
                    spec.job_id,
                    spec.lease_id,
                    JobReport(status=Status.ERROR, message="the agent failed; see its log"),
                )
        finally:
            if sink is not None:
                sink.discard()
            if spec.plan.cleanup.remove_workspace:
                # Not on the slot's path: the next job is claimed while these files go.
                removal = asyncio.create_task(asyncio.to_thread(shutil.rmtree, root, True))
                self._removals.add(removal)
                removal.add_done_callback(self._removals.discard)

    async def _execute(
        self, spec: JobSpec, root: Path
    ) -> tuple[JobReport, list[Artifact], ServerSink | None]:
        started = datetime.now(UTC)
        workspace = root / "src"
        try:
            await asyncio.to_thread(
                self.mirrors.checkout_commit, spec.repo_url, spec.commit.sha, workspace
            )
        except CheckoutError as exc:
            return (
                JobReport(
                    status=Status.ERROR,
                    message=f"checkout failed: {exc}",
                    started_at=started,
                    finished_at=datetime.now(UTC),
                ),
                [],
                None,
            )
        sink = ServerSink(self.client, spec, root / "logs")
        runner = JobRunner(
            backend=self.backend,
            plan=spec.plan,
            key=f"conveyor-{spec.job_id}-{spec.attempt}",
            workspace=workspace,
            output=root / "output",
            facts=RunFacts(
                commit_sha=spec.commit.sha,
                branch=spec.commit.branch,
                tag=spec.commit.tag,
                commit_message=spec.commit.message,
                commit_author=spec.commit.author,
                repo_url=spec.repo_url,
                project=spec.project,
                run_number=spec.run_number,
                run_id=str(spec.run_id),
                job_id=str(spec.job_id),
                event=spec.event,
                variables=spec.variables,
            ),
            sink=sink,
            secrets=spec.secrets,
            artifacts_dir=root / "artifacts",
            network=self.backend.default_network(),
        )
        self._runners[spec.lease_id] = runner
        sink.on_failure = functools.partial(runner.cancel, "the server refused a report")
        if spec.lease_id in self._cancelled:
            runner.cancel("server")
        try:
            try:
                result = await runner.run()
            finally:
                await sink.close()
        except BaseException:
            sink.discard()
            raise
        report = JobReport(
            status=result.status,
            message=result.message,
            started_at=_timestamp(result.started_at),
            finished_at=_timestamp(result.finished_at),
        )
        return report, result.artifacts, sink

    async def _upload_all(self, spec: JobSpec, artifacts: list[Artifact]) -> str | None:
        archive = spec.plan.artifacts.archive if spec.plan.artifacts else ArchiveFormat.NONE
        for artifact in artifacts:
            try:
                await self._upload(spec, artifact, archive)
            except (ServerRefusedError, httpx.HTTPError, OSError) as exc:
                return f"uploading artifact {artifact.name} failed: {exc}"
        return None

    async def _upload(self, spec: JobSpec, artifact: Artifact, archive: ArchiveFormat) -> None:
        state = await self.client.start_upload(
            spec.job_id,
            spec.lease_id,
            UploadStart(
                name=artifact.name,
                size=artifact.size,
                sha256=artifact.sha256,
                hash_algorithm=artifact.hash_algorithm,
                hash=artifact.hash,
                archive=archive,
            ),
        )
        failures = 0
        with artifact.path.open("rb") as source:
            while state.offset < state.size:
                source.seek(state.offset)
                chunk = source.read(UPLOAD_CHUNK_BYTES)
                try:
                    state = await self.client.upload_chunk(
                        state.upload_id, state.offset, chunk, retry_for=0
                    )
                except (ServerRefusedError, httpx.TransportError):
                    # A broken connection or an offset the server disagrees with: ask
                    # where the upload stands (the chunk may have arrived, or part of
                    # it) and go on from there.
                    failures += 1
                    if failures >= UPLOAD_ATTEMPTS:
                        raise
                    state = await self.client.upload_state(state.upload_id)
                    logger.info(
                        "job %s: upload of %s resumes at byte %s of %s",
                        spec.job_id,
                        artifact.name,
                        state.offset,
                        state.size,
                    )
        await self.client.complete_upload(state.upload_id)
