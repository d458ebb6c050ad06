"""The embedded agent as the server runs it: `conveyor agent` in a child process that
the server starts again after a crash, that dies with the server, and whose long polls
do not hold up a stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_server_process import ServerProcess, start_server


def agent_children(server_pid: int) -> list[int]:
    """The server's child processes that run `conveyor agent`."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children")
    found = []
    for pid in children.read_text().split():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"conveyor" in command and b"agent" in command:
            found.append(int(pid))
    return found


def exited(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (its parent was killed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for(condition: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return condition()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(tmp_path / "data", "local")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=20)


def the_agent(server: ServerProcess) -> int:
    pids = wait_for(lambda: agent_children(server.process.pid), 15)
    assert isinstance(pids, list) and len(pids) == 1, "".join(server.output[-30:])
    return pids[0]


class TestEmbeddedAgentProcess:
    def test_a_killed_agent_is_started_again(self, server: ServerProcess) -> None:
        first = the_agent(server)
        os.kill(first, signal.SIGKILL)
        again = wait_for(
            lambda: [pid for pid in agent_children(server.process.pid) if pid != first], 10
        )
        assert again, "".join(server.output[-30:])
        print(f"embedded agent {first} killed; {again[0]} started in its place")  # type: ignore[index]

    def test_the_agent_dies_with_a_killed_server(self, server: ServerProcess) -> None:
        agent = the_agent(server)
        server.process.kill()
        server.process.wait(timeout=10)
        assert wait_for(lambda: exited(agent), 10), f"agent {agent} outlived its server"

    def test_a_stop_does_not_wait_out_the_agents_long_poll(self, server: ServerProcess) -> None:
        agent = the_agent(server)
        time.sleep(1.0)  # registered, and its claim now waits on the server
        asked = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop within 20 s")
        took = time.monotonic() - asked
        print(f"server stopped {took:.2f} s after SIGTERM")
        # Uvicorn's graceful timeout is 5 s: a waiting claim would hold the stop that long.
        assert took < 3.0, "".join(server.output[-30:])
        assert wait_for(lambda: exited(agent), 10)
