"""The server's own agent slots and the agents' background duties, run in the app's
lifespan: the same agent code as `conveyor agent`, talking to this server over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.agent.backends.registry import create_backend, default_backend_name
from conveyor.agent.loop import Agent, AgentSettings
from conveyor.server.agents import service, tasks
from conveyor.server.config import Settings

logger = logging.getLogger("conveyor.server.agents")
STOP_GRACE_SECONDS = 10.0
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104  (addresses, not binds)


def embedded_agent_name() -> str:
    host = re.sub(r"[^A-Za-z0-9_.@-]", "-", socket.gethostname()) or "localhost"
    return f"embedded-{host}"[:100]


def own_url(settings: Settings) -> str:
    """Where this server answers for its own agent: a wildcard bind is reached on
    the loopback address."""
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _issue_token(factory: sessionmaker[Session], name: str, capacity: int) -> str:
    with factory.begin() as session:
        return service.ensure_embedded_agent(session, name, capacity)


async def _start_embedded_agent(factory: sessionmaker[Session], settings: Settings) -> Agent:
    name = embedded_agent_name()
    token = await run_in_threadpool(_issue_token, factory, name, settings.agents)
    backend_name = settings.embedded_backend or await asyncio.to_thread(default_backend_name)
    agent_dir = settings.data_dir / "agent"
    agent = Agent(
        AgentSettings(
            server_url=own_url(settings),
            token=token,
            name=name,
            work_dir=agent_dir / "work",
            cache_dir=agent_dir / "cache",
            capacity=settings.agents,
        ),
        create_backend(backend_name),
    )
    logger.info("embedded agent %s: %d slot(s), backend %s", name, settings.agents, backend_name)
    return agent


@asynccontextmanager
async def running(factory: sessionmaker[Session], settings: Settings) -> AsyncIterator[None]:
    """The lease reaper, and `settings.agents` embedded agent slots (none for 0)."""
    background = [asyncio.create_task(tasks.reap_expired_leases(factory, settings))]
    agent: Agent | None = None
    if settings.agents > 0:
        agent = await _start_embedded_agent(factory, settings)
        background.append(asyncio.create_task(agent.run()))
    try:
        yield
    finally:
        if agent is not None:
            agent.stop()
            await asyncio.wait(background[1:], timeout=STOP_GRACE_SECONDS)
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
