"""`conveyor server` as a user starts it: a real process, real HTTP and WebSocket, a real
git repository, the embedded agent on the local backend and on Docker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from conveyor.agent.checkout import MirrorCache
from conveyor.server.config import Settings
from tests.fixtures.gitrepos import Repo

PIPELINE = """\
image: {image}
steps:
  - name: build
    commands:
      - for i in $(seq 1 2000); do echo "line $i of the build"; done
      - mkdir -p dist && echo "artifact of $CI_COMMIT_SHA" > dist/app.txt
      - echo "secret is $TOKEN"
    secrets: [TOKEN]
  - name: check
    commands: ["cat dist/app.txt"]
artifacts: {{paths: ["dist/*"], archive: tar.gz, hash: sha1}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[str]
    password: str
    output: list[str]
    data_dir: Path

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        signed_in = client.post(
            "/api/v1/session", json={"name": "admin", "password": self.password}
        )
        assert signed_in.status_code == 200, signed_in.text
        return client


def start_server(data_dir: Path, backend: str) -> ServerProcess:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "server", "--port", str(port),
         "--data-dir", str(data_dir), "--agents", "2", "--backend", backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CONVEYOR_DOCKER_PULL": "never"},
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    password = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        found = re.search(r"password '([^']+)'", line)
        if found:
            password = found.group(1)
        # "Uvicorn running on" comes once the socket listens; startup completes before.
        if "Uvicorn running on" in line:
            break
    assert password, "".join(output)
    # Keep draining its output (access log lines) so that a full pipe never blocks it.
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    return ServerProcess(f"http://127.0.0.1:{port}", process, password, output, data_dir)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    backend: str = request.param
    if backend == "docker":
        request.getfixturevalue("busybox_image")
    running = start_server(tmp_path / "data", backend)
    yield running
    running.process.terminate()
    try:
        running.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        running.process.kill()


async def follow_job(url: str, job_id: int, token: str) -> tuple[list[str], str]:
    lines: list[str] = []
    ws_url = url.replace("http://", "ws://") + f"/jobs/{job_id}/ws?token={token}"
    async with websockets.connect(ws_url, max_size=None) as ws:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if message["type"] == "lines":
                lines.extend(message["lines"])
            elif message["type"] == "end":
                return lines, message["status"]


@pytest.mark.parametrize("server", ["local", "docker"], indirect=True)
def test_trigger_follow_download(
    server: ServerProcess,
    make_repo: Callable[..., Repo],
    busybox_image: str,
) -> None:
    repo = make_repo({".conveyor.yml": PIPELINE.format(image=busybox_image)})
    api = server.client()
    try:
        token = api.post("/api/v1/user/tokens", json={"name": "e2e"}).json()["token"]
        created = api.post("/api/v1/projects", json={"name": "demo", "git_url": repo.url})
        assert created.status_code == 201, created.text
        secret = api.put("/api/v1/projects/demo/secrets/TOKEN", json={"value": "hunter2-abc"})
        assert secret.status_code in (200, 201, 204), secret.text
        triggered = api.post("/api/v1/projects/demo/runs", json={"branch": "main"})
        assert triggered.status_code == 201, triggered.text
        run = triggered.json()
        assert run["commit_sha"] == repo.head()
        job_id = run["jobs"][0]["id"]

        lines, status = asyncio.run(follow_job(server.url, job_id, token))
        assert status == "success", "\n".join(lines[-20:])
        assert [line for line in lines if line.startswith("line ")] == [
            f"line {i} of the build" for i in range(1, 2001)
        ]
        assert "secret is ********" in lines
        assert not any("hunter2" in line for line in lines)
        assert f"artifact of {repo.head()}" in lines

        # Served on Python's own event loop (serving.EVENT_LOOP): uvloop is installed
        # (the benchmark uses it), and uvicorn would take it if not told otherwise.
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "_asyncio" in maps and "uvloop" not in maps
        # `conveyor server` became the server process (exec: same pid, a fresh
        # interpreter without the command line's libraries).
        command = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
        assert command[1:4] == [b"-P", b"-m", b"conveyor.server"], command

        detail = api.get(f"/api/v1/runs/{run['id']}").json()
        assert detail["status"] == "success"
        assert [s["status"] for s in detail["jobs"][0]["steps"]] == ["success", "success"]
        first_step = detail["jobs"][0]["steps"][0]
        raw = api.get(f"/api/v1/steps/{first_step['id']}/log/raw")
        assert raw.status_code == 200
        assert "line 2000 of the build" in raw.text and "hunter2" not in raw.text

        [artifact] = api.get(f"/api/v1/runs/{run['id']}/artifacts").json()
        download = api.get(f"/api/v1/artifacts/{artifact['id']}/download")
        assert download.status_code == 200
        body = download.content
        assert int(download.headers["content-length"]) == len(body) == artifact["size"]
        assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
        assert download.headers["x-conveyor-sha256"] == artifact["sha256"]
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert download.headers["digest"] == f"sha-256={digest}"
        assert download.headers["x-conveyor-hash"] == f"sha1:{hashlib.sha1(body).hexdigest()}"  # noqa: S324 (7-Zip's SHA1, asked for)

        # The embedded agent (a process of its own) made its mirror where the server
        # looks for it, and deleting the project takes it with the server's.
        settings = Settings(data_dir=server.data_dir)
        [agent_mirror] = settings.embedded_agent_mirrors.glob("*.git")
        assert agent_mirror.name == MirrorCache(settings.repos_path).mirror_path(repo.url).name
        assert api.delete("/api/v1/projects/demo").status_code == 204
        assert not agent_mirror.exists()
        assert not MirrorCache(settings.repos_path).mirror_path(repo.url).exists()
    finally:
        api.close()
