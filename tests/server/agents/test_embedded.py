"""The embedded agent: started by the app's lifespan, it runs jobs over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from sqlalchemy import select

from conveyor.protocol.status import Status
from conveyor.server.agents.embedded import embedded_agent_name, own_url
from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.models import Agent, Job
from conveyor.server.runs import state
from tests.fixtures.gitrepos import Repo
from tests.server.agents.queue import add_project, queue_job


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TestOwnUrl:
    def test_wildcard_host_is_reached_on_loopback(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path, host="0.0.0.0", port=8123)  # noqa: S104
        assert own_url(settings) == "http://127.0.0.1:8123"


class TestEmbeddedAgent:
    def test_embedded_agent_registers_and_runs_a_queued_job(
        self, fresh_database_url: str, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        port = _free_port()
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=fresh_database_url,
            port=port,
            agents=2,
            embedded_backend="local",
        )
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            repo = make_repo({"README": "hi\n"})
            factory = app.state.session_factory
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.02)
            with factory() as session:
                project = add_project(session, "demo", git_url=repo.url)
                job = queue_job(session, project, commit_sha=repo.head(), commit=False)
                state.announce_queued(session, job)  # wakes the agent's waiting claim
                session.commit()
                job_id = job.id
            status = Status.QUEUED
            while time.monotonic() < deadline:
                with factory() as session:
                    stored = session.get(Job, job_id)
                    assert stored is not None
                    status = stored.status
                    if status.finished:
                        break
                time.sleep(0.1)
            assert status is Status.SUCCESS
            with factory() as session:
                agent = session.scalars(select(Agent)).one()
                assert agent.name == embedded_agent_name()
                assert agent.capacity == 2 and "local" in agent.platform
        finally:
            server.should_exit = True
            thread.join(timeout=20)
