"""The agent's client against a real HTTP server that is older than it: calls the
server does not know fall back to the older calls."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from conveyor.agent.client import AgentClient, EndpointMissingError
from conveyor.protocol.agents import FinalStepEnd, JobReport, LogChunk, StepEnd, StepReport
from conveyor.protocol.status import Status
from tests.fixtures.servers import serve


def _server_without_step_end() -> FastAPI:
    """A server of the agent protocol before `POST .../steps/{index}/end`: it answers
    the older report call only (FastAPI's own 404 for the rest)."""
    app = FastAPI()

    @app.post("/api/v1/agent/jobs/{job_id}/steps/{index}")
    def report_step(job_id: int, index: int) -> dict[str, str]:
        return {}

    return app


class _OlderJobReport(BaseModel):
    """`JobReport` before `step_end`: like every wire model, it refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")
    status: Status
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def _server_without_step_end_in_finish() -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    finished: list[str] = []

    @app.post("/api/v1/agent/jobs/{job_id}/finish")
    def finish(job_id: int, body: _OlderJobReport) -> dict[str, str]:
        finished.append(str(body.status))
        return {}

    return app, finished


class TestEndStep:
    def test_an_older_server_makes_the_client_fall_back_for_good(self) -> None:
        async def end_then_report(url: str) -> bool:
            client = AgentClient(url, "token", retry_for=0)
            try:
                assert client.ends_steps_with_log
                with pytest.raises(EndpointMissingError):
                    await client.end_step(
                        1, "lease", 0, StepReport(status=Status.SUCCESS), 0, LogChunk(b"x\n")
                    )
                await client.report_step(1, "lease", 0, StepReport(status=Status.SUCCESS))
                return client.ends_steps_with_log
            finally:
                await client.close()

        with serve(_server_without_step_end()) as url:
            assert asyncio.run(end_then_report(url)) is False


class TestFinishWithStepEnd:
    def test_an_older_server_refuses_the_field_and_the_client_stops_sending_it(self) -> None:
        app, finished = _server_without_step_end_in_finish()
        report = StepReport(status=Status.SUCCESS, exit_code=0)
        end = FinalStepEnd.of_step(0, StepEnd.of(report, 0, LogChunk(b"last\n")))

        async def finish_twice(url: str) -> bool:
            client = AgentClient(url, "token", retry_for=0)
            try:
                assert client.finishes_with_step_end
                with pytest.raises(EndpointMissingError):
                    await client.finish(1, "lease", JobReport(status=Status.SUCCESS, step_end=end))
                await client.finish(1, "lease", JobReport(status=Status.SUCCESS))
                return client.finishes_with_step_end
            finally:
                await client.close()

        with serve(app) as url:
            assert asyncio.run(finish_twice(url)) is False
        assert finished == ["success"]  # the refused report changed nothing
