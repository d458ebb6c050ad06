"""The agent loop against a real server over HTTP (uvicorn on 127.0.0.1), on both
databases: claim, checkout, run on the local backend, logs, reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.agent import loop as agent_loop
from conveyor.agent.backends.registry import create_backend
from conveyor.agent.client import AgentClient
from conveyor.agent.engine import StepResult
from conveyor.agent.loop import Agent, AgentSettings, ServerSink, finish_job
from conveyor.logstore import read_line_times
from conveyor.pipeline.plan import JobPlan, StepPlan
from conveyor.protocol.agents import JobReport, JobSpec
from conveyor.protocol.status import Status
from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.logs.paths import step_log_path
from conveyor.server.models import Job, Run, Step
from tests.fixtures.databases import empty_database
from tests.fixtures.gitrepos import Repo
from tests.fixtures.servers import serve
from tests.fixtures.tcpproxy import TcpProxy
from tests.server.agents.queue import add_agent, add_project, queue_job

SCRIPT = "printf 'first line\\n'; printf 'colour \\033[31mred\\033[0m\\n'; printf 'no newline'"


@pytest.fixture(params=["sqlite", "postgresql"])
def running_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Settings]]:
    with empty_database(request.param, tmp_path / "db") as url:
        settings = Settings(
            data_dir=tmp_path / "data", database_url=url, agents=0, heartbeat_seconds=0.2
        )
        with serve(create_app(settings)) as base_url:
            yield base_url, settings


def _run_until(agent: Agent, done: Callable[[], bool], limit: float = 30.0) -> None:
    async def main() -> None:
        task = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        # The database is what the test watches; it sends no events to this loop.
        while not done() and loop.time() < deadline and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        agent.stop()
        await asyncio.wait_for(task, 15)

    asyncio.run(main())


class TestAgentLoop:
    def test_one_step_job_runs_end_to_end_with_log_stored_byte_identical(
        self,
        running_server: tuple[str, Settings],
        make_repo: Callable[..., Repo],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # However slow this machine, the step's end must still be held at the finish.
        monkeypatch.setattr(agent_loop, "STEP_END_HOLD", 10.0)
        base_url, settings = running_server
        repo = make_repo({"README": "hello\n"})
        factory = create_app(settings).state.session_factory  # same database, own engine
        with factory() as session:
            project = add_project(session, "demo", git_url=repo.url)
            plan = JobPlan(name="build", steps=[StepPlan(name="say", commands=[SCRIPT])])
            job = queue_job(session, project, plan=plan, commit_sha=repo.head())
            _, token = add_agent(session, "worker")
            job_id, run_id = job.id, job.run_id

        def finished() -> bool:
            with factory() as session:
                stored = session.get(Job, job_id)
                return stored is not None and stored.status.finished and stored.lease_id is None

        agent = Agent(
            AgentSettings(
                server_url=base_url,
                token=token,
                name="worker",
                work_dir=tmp_path / "work",
                cache_dir=tmp_path / "cache",
                claim_wait=0.5,
            ),
            create_backend("local"),
        )
        calls: list[str] = []

        async def note(request: httpx.Request) -> None:
            calls.append(f"{request.method} {request.url.path.removeprefix('/api/v1/agent')}")

        agent.client._http.event_hooks["request"].append(note)
        _run_until(agent, finished)
        # The workspace goes after the slot is free; a stop waits for it.
        assert list((tmp_path / "work").glob("job-*")) == []
        # The step's end (its log tail and report) went with the job's finish report.
        assert f"POST /jobs/{job_id}/steps/0/end" not in calls
        assert calls.count(f"POST /jobs/{job_id}/finish") == 1
        with factory() as session:
            stored = session.get(Job, job_id)
            assert stored is not None
            assert stored.status is Status.SUCCESS, stored.error_message
            run = session.get(Run, run_id)
            assert run is not None and run.status is Status.SUCCESS
            step = _only_step(session, job_id)
            assert (step.status, step.exit_code) == (Status.SUCCESS, 0)
        stored_log = step_log_path(settings.data_dir, run_id, job_id, 0).read_bytes()
        expected = (
            b"\x1b[1;32m$ " + SCRIPT.encode() + b"\x1b[0m\n"
            b"first line\ncolour \x1b[31mred\x1b[0m\nno newline"
        )
        assert stored_log == expected

    def test_checkout_error_ends_the_job_in_error_with_the_git_message(
        self, running_server: tuple[str, Settings], make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        base_url, settings = running_server
        repo = make_repo({"README": "hello\n"})
        factory = create_app(settings).state.session_factory
        with factory() as session:
            project = add_project(session, "demo", git_url=repo.url)
            job = queue_job(session, project, commit_sha="f" * 40, max_attempts=1)
            _, token = add_agent(session, "worker")
            job_id = job.id

        def finished() -> bool:
            with factory() as session:
                stored = session.get(Job, job_id)
                return stored is not None and stored.status.finished

        agent = Agent(
            AgentSettings(base_url, token, "worker", tmp_path / "work", tmp_path / "cache"),
            create_backend("local"),
        )
        agent.settings.claim_wait = 0.5
        _run_until(agent, finished)
        with factory() as session:
            stored = session.get(Job, job_id)
            assert stored is not None and stored.status is Status.ERROR
            assert stored.error_message is not None
            assert "checkout failed" in stored.error_message and "f" * 12 in stored.error_message


class TestServerSinkLineTimes:
    """`ServerSink` with the agent's real client against a real server: the times of
    the lines are when the agent read them, however late the bytes reach the server."""

    @staticmethod
    def _agent_token(settings: Settings) -> str:
        """A queued job of one step, and the token of an agent that may claim it."""
        factory = create_app(settings).state.session_factory
        with factory() as session:
            queue_job(session, add_project(session, "timed"))
            return add_agent(session, "worker")[1]

    @staticmethod
    async def _claim(url: str, token: str) -> tuple[AgentClient, JobSpec]:
        client = AgentClient(url, token, retry_for=30, timeout=1.0)
        return client, (await client.claim(free_slots=1, wait=0)).jobs[0]

    @staticmethod
    async def _send_then_lose(
        settings: Settings, spec: JobSpec, sink: ServerSink, batch: bytes
    ) -> StepResult:
        """Start step 0 and print `batch` (a full batch: sent without waiting for the
        flush interval); then the server loses what it held of the log, as if its disk
        was restored from a backup."""
        server_log = step_log_path(settings.data_dir, spec.run_id, spec.job_id, 0)
        result = StepResult(0, "say", Status.RUNNING, started_at=time.time())
        await sink.step_started(result, spec.plan.steps[0])
        printed = time.monotonic()
        await sink.step_output(result, batch)
        # Until the agent knows the batch is stored and its start report is done (on a
        # busy machine the server's answer comes well after its file grew).
        while sink.acknowledged(0) < len(batch) or sink.reports_pending():
            assert time.monotonic() - printed < 10, "the full batch was not sent"
            await asyncio.sleep(0.005)
        assert server_log.stat().st_size == len(batch)
        for lost in server_log.parent.iterdir():
            lost.unlink()
        return result

    @staticmethod
    def _stored(settings: Settings, spec: JobSpec) -> tuple[bytes, list[int]]:
        path = step_log_path(settings.data_dir, spec.run_id, spec.job_id, 0)
        times = read_line_times(path, 0, 1_000_000)
        known = [time for time in times if time is not None]
        assert len(known) == len(times), "every line has its time"
        return path.read_bytes(), known

    def test_lines_spooled_through_a_server_outage_keep_the_times_they_were_read(
        self, running_server: tuple[str, Settings], tmp_path: Path
    ) -> None:
        base_url, settings = running_server
        port = int(base_url.rsplit(":", 1)[1])
        token = self._agent_token(settings)
        with TcpProxy(port) as proxy:

            async def run_step() -> tuple[JobSpec, float, float]:
                client, spec = await self._claim(proxy.url, token)
                sink = ServerSink(client, spec, tmp_path / "spool")
                result = StepResult(0, "say", Status.RUNNING, started_at=time.time())
                await sink.step_started(result, spec.plan.steps[0])
                proxy.cut()
                for line in (b"one\n", b"two\n", b"three\n"):
                    await sink.step_output(result, line)
                    await asyncio.sleep(0.4)
                restored_at = time.time()
                proxy.restore()
                result.status, result.finished_at = Status.SUCCESS, time.time()
                await sink.step_finished(result)
                await sink.close()
                await finish_job(client, spec, JobReport(status=Status.SUCCESS), sink)
                sink.discard()
                await client.close()
                assert result.started_at is not None
                return spec, result.started_at, restored_at

            spec, started_at, restored_at = asyncio.run(run_step())
        data, times = self._stored(settings, spec)
        assert data == b"one\ntwo\nthree\n"
        one, two, three = times
        # Read 0.4 s apart, all before the server could be reached again.
        assert 350 <= two - one <= 1_000 and 350 <= three - two <= 1_000
        assert started_at * 1000 - 5 <= one <= started_at * 1000 + 300
        assert three < restored_at * 1000

    def test_a_step_prints_on_while_the_server_is_slow_until_the_unsent_limit(
        self,
        running_server: tuple[str, Settings],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Full batches go out one request at a time without holding the step up; only
        a step `LOG_UNSENT_LIMIT` ahead of the server waits for it."""
        monkeypatch.setattr(agent_loop, "LOG_UNSENT_LIMIT", 256 * 1024)
        base_url, settings = running_server
        port = int(base_url.rsplit(":", 1)[1])
        token = self._agent_token(settings)
        batch = b"x" * 99 + b"\n"
        batches = [batch * 700 for _ in range(4)]  # 70,000 bytes each, past LOG_BATCH_BYTES
        with TcpProxy(port) as proxy:

            async def run_step() -> JobSpec:
                client, spec = await self._claim(proxy.url, token)
                sink = ServerSink(client, spec, tmp_path / "spool")
                result = StepResult(0, "say", Status.RUNNING, started_at=time.time())
                await sink.step_started(result, spec.plan.steps[0])
                proxy.cut()
                # 210,000 bytes unsent: the step goes on although no request can end.
                for data in batches[:3]:
                    await asyncio.wait_for(sink.step_output(result, data), 5)
                # 280,000: past the limit, the step waits for the server.
                held = asyncio.ensure_future(sink.step_output(result, batches[3]))
                await asyncio.sleep(0.5)
                assert not held.done()
                proxy.restore()
                await asyncio.wait_for(held, 30)
                result.status, result.finished_at = Status.SUCCESS, time.time()
                await sink.step_finished(result)
                await sink.close()
                await finish_job(client, spec, JobReport(status=Status.SUCCESS), sink)
                sink.discard()
                await client.close()
                return spec

            spec = asyncio.run(run_step())
        data, _ = self._stored(settings, spec)
        assert data == b"".join(batches)

    def test_resend_from_the_size_a_gap_names_keeps_each_line_on_its_time(
        self, running_server: tuple[str, Settings], tmp_path: Path
    ) -> None:
        base_url, settings = running_server
        token = self._agent_token(settings)
        first = b"".join(b"first %05d\n" % i for i in range(7_000))  # past LOG_BATCH_BYTES
        second = b"".join(b"second %05d\n" % i for i in range(7_000))

        async def run_step() -> JobSpec:
            client, spec = await self._claim(base_url, token)
            sink = ServerSink(client, spec, tmp_path / "spool")
            result = await self._send_then_lose(settings, spec, sink, first)
            # The next batch is a gap, and the agent resends all from byte 0.
            await asyncio.sleep(0.3)
            await sink.step_output(result, second)
            result.status, result.finished_at = Status.SUCCESS, time.time()
            await sink.step_finished(result)
            await sink.close()
            await finish_job(client, spec, JobReport(status=Status.SUCCESS), sink)
            sink.discard()
            await client.close()
            return spec

        spec = asyncio.run(run_step())
        data, times = self._stored(settings, spec)
        assert data == first + second
        factory = create_app(settings).state.session_factory
        with factory() as session:
            step = _only_step(session, spec.job_id)
            assert step.status is Status.SUCCESS
            stored_job = session.get(Job, spec.job_id)
            assert stored_job is not None and stored_job.status is Status.SUCCESS
        assert len(times) == 14_000
        first_times, second_times = set(times[:7_000]), set(times[7_000:])
        assert len(first_times) == len(second_times) == 1  # each read at one moment
        assert 250 <= min(second_times) - max(first_times) <= 1_000

    def test_a_gap_met_by_the_finish_report_resends_the_log_then_reports(
        self, running_server: tuple[str, Settings], tmp_path: Path
    ) -> None:
        base_url, settings = running_server
        token = self._agent_token(settings)
        first = b"".join(b"first %05d\n" % i for i in range(7_000))  # past LOG_BATCH_BYTES
        tail = b"the last line\n"

        async def run_step() -> JobSpec:
            client, spec = await self._claim(base_url, token)
            sink = ServerSink(client, spec, tmp_path / "spool")
            result = await self._send_then_lose(settings, spec, sink, first)
            await sink.step_output(result, tail)
            result.status, result.exit_code = Status.SUCCESS, 0
            result.finished_at = time.time()
            await sink.step_finished(result)
            await sink.close()
            # The tail is held for the finish report, which the gap refuses as a
            # whole: the log goes again from the server's size, then both reports.
            final = sink.final_step_end
            assert final is not None and final.log_offset == len(first) and final.log
            await finish_job(client, spec, JobReport(status=Status.SUCCESS), sink)
            sink.discard()
            await client.close()
            return spec

        spec = asyncio.run(run_step())
        data, _ = self._stored(settings, spec)
        assert data == first + tail
        with create_app(settings).state.session_factory() as session:
            step = _only_step(session, spec.job_id)
            assert (step.status, step.exit_code) == (Status.SUCCESS, 0)
            stored_job = session.get(Job, spec.job_id)
            assert stored_job is not None and stored_job.status is Status.SUCCESS


def _only_step(session: Session, job_id: int) -> Step:
    return session.scalars(select(Step).where(Step.job_id == job_id)).one()
