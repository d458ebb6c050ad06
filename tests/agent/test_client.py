"""The agent's client against a real HTTP server that is older than it: calls the
server does not know fall back to the older calls."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI

from conveyor.agent.client import AgentClient, EndpointMissingError
from conveyor.protocol.agents import LogChunk, StepReport
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
