"""The server's own agent slots and the agents' background duties, run in the app's
lifespan. The embedded agent is `conveyor agent` itself, started as a child process
that talks to this server over HTTP like any remote agent: it runs the same code and
the same protocol, and it has a core and a memory of its own, so a busy build never
slows the API's event loop (nor the other way round)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.agent import EXIT_WITH_PARENT_ENV
from conveyor.server.agents import service, tasks
from conveyor.server.config import Settings

logger = logging.getLogger("conveyor.server.agents")
STOP_GRACE_SECONDS = 10.0
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before starting a crashed embedded agent again; the last one repeats."""
STABLE_SECONDS = 60.0
"""An agent that ran this long before it died starts again after the first delay."""
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


def agent_command_line(settings: Settings, name: str) -> list[str]:
    """The `conveyor agent` command of the embedded agent (its token goes in the
    environment, where `ps` does not show it)."""
    command = [
        sys.executable,
        "-m",
        "conveyor",
        "agent",
        "--server",
        own_url(settings),
        "--name",
        name,
        "--capacity",
        str(settings.agents),
        "--work-dir",
        str(settings.embedded_agent_dir),
    ]
    if settings.embedded_backend:
        command += ["--backend", settings.embedded_backend]
    return command


class EmbeddedAgentProcess:
    """Keeps the embedded agent running until `stop()`: started again, after a growing
    delay, if it crashes or is killed; stopped with SIGTERM (it finishes by cancelling
    its jobs), then SIGKILL after `STOP_GRACE_SECONDS`."""

    def __init__(self, command: list[str], token: str) -> None:
        self.command = command
        self.env = {
            **os.environ,
            "CONVEYOR_AGENT_TOKEN": token,
            EXIT_WITH_PARENT_ENV: str(os.getpid()),
        }
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._stopping = asyncio.Event()

    async def supervise(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self.process = await asyncio.create_subprocess_exec(*self.command, env=self.env)
            self.starts += 1
            started = loop.time()
            code = await self.process.wait()
            if self._stopping.is_set() or code == 0:
                # 0: it was stopped on purpose (Ctrl-C reaches the whole process group,
                # the server's shutdown follows); only a crash calls for a new start.
                return
            failures = 1 if loop.time() - started >= STABLE_SECONDS else failures + 1
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS)) - 1]
            logger.warning(
                "the embedded agent (pid %s) exited with %s; starting it again in %.0f s",
                self.process.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def stop(self) -> None:
        self._stopping.set()
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            logger.warning("the embedded agent did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@asynccontextmanager
async def running(factory: sessionmaker[Session], settings: Settings) -> AsyncIterator[None]:
    """The lease reaper, and `settings.agents` embedded agent slots (none for 0)."""
    background = [asyncio.create_task(tasks.reap_expired_leases(factory, settings))]
    agent: EmbeddedAgentProcess | None = None
    if settings.agents > 0:
        name = embedded_agent_name()
        token = await run_in_threadpool(_issue_token, factory, name, settings.agents)
        agent = EmbeddedAgentProcess(agent_command_line(settings, name), token)
        background.append(asyncio.create_task(agent.supervise()))
        logger.info("embedded agent %s: %d slot(s)", name, settings.agents)
    try:
        yield
    finally:
        if agent is not None:
            await agent.stop()
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
