"""The notification duties as they run: a real app on 127.0.0.1 with its embedded agent
(local backend) runs a real pipeline; the run-event subscriber queues deliveries and
the sender loop sends them to real receivers on 127.0.0.1 (playing the webhook target
and GitHub's status API, the only things faked), on both databases. Nothing calls a
service by hand."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.models import Role
from conveyor.server.users import service as users_service
from tests.fixtures.gitrepos import Repo
from tests.server.conftest import add_user
from tests.server.projects.factories import add_project, bearer
from tests.server.receivers import FORGE_CREATED, Receiver, receiver
from tests.server.runs.factories import PIPELINE

WAIT_SECONDS = 20.0
PUBLIC_BASE_URL = "https://ci.example.test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve_on(app: FastAPI, port: int) -> Iterator[str]:
    """Serve `app` on the port its settings name (the embedded agent calls that port)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextmanager
def _serving_demo(
    database_url: str, tmp_path: Path, repo: Repo
) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A served app with its embedded agent (local backend) and a project "demo" of
    `repo`: a client and the headers of its maintainer."""
    port = _free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        port=port,
        agents=1,
        embedded_backend="local",
        triggers_tick_seconds=0.2,
        outbound_allow=["127.0.0.1"],
        public_base_url=PUBLIC_BASE_URL,
    )
    app = create_app(settings)
    with serve_on(app, port) as url, httpx.Client(base_url=url, timeout=10) as client:
        with app.state.session_factory() as session:
            mia = add_user(session, "mia")
            demo = add_project(session, "demo", repo.url)
            users_service.set_membership(session, mia, demo, Role.MAINTAINER)
            session.commit()
            headers = bearer(session, mia)
        yield client, headers


def _wait_for_requests(target: Receiver, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while len(target.requests) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{target.url} got {len(target.requests)} of {count} requests"
        target.received.clear()
        target.received.wait(min(remaining, 0.2))


class TestRunNotificationDuties:
    def test_finished_run_is_notified_and_reported_without_a_manual_call(
        self,
        fresh_database_url: str,
        tmp_path: Path,
        make_repo: Callable[..., Repo],
    ) -> None:
        repo = make_repo({".conveyor.yml": PIPELINE})
        with (
            receiver() as hook_target,
            receiver(answer=FORGE_CREATED) as forge,
            _serving_demo(fresh_database_url, tmp_path, repo) as (client, headers),
        ):
            hook = client.post(
                "/api/v1/projects/demo/notifications",
                headers=headers,
                json={
                    "kind": "webhook",
                    "target": hook_target.url + "/ci",
                    "triggers": ["started", "succeeded", "failed"],
                    "template": "{{ project }} #{{ run_number }} {{ status }}",
                },
            ).json()
            linked = client.put(
                "/api/v1/projects/demo/commit-status",
                headers=headers,
                json={
                    "kind": "github",
                    "api_base_url": forge.url,
                    "repository": "acme/demo",
                    "token": "gh-token",
                },
            )
            assert linked.status_code == 200, linked.text

            started = client.post("/api/v1/projects/demo/runs", headers=headers, json={})
            assert started.status_code == 201, started.text
            run = started.json()

            _wait_for_requests(hook_target, 2)
            _wait_for_requests(forge, 2)
            finished = client.get(f"/api/v1/runs/{run['id']}", headers=headers).json()
            deliveries = client.get(
                f"/api/v1/projects/demo/notifications/{hook['id']}/deliveries", headers=headers
            ).json()

        assert finished["status"] == "success"
        events = {
            request.headers["x-conveyor-event"]: json.loads(request.body)
            for request in hook_target.requests
        }
        assert set(events) == {"started", "succeeded"}
        assert events["started"]["message"] == "demo #1 running"
        assert events["succeeded"]["message"] == "demo #1 success"
        assert events["succeeded"]["commit"] == repo.head()
        assert events["succeeded"]["url"] == f"{PUBLIC_BASE_URL}/runs/{run['id']}"
        assert sorted((d["trigger"], d["status"], d["response_code"]) for d in deliveries) == [
            ("started", "sent", 200),
            ("succeeded", "sent", 200),
        ]

        states = [json.loads(request.body)["state"] for request in forge.requests]
        assert sorted(states) == ["pending", "success"]
        for request in forge.requests:
            assert request.path == f"/repos/acme/demo/statuses/{repo.head()}"
            assert request.headers["authorization"] == "Bearer gh-token"

    def test_a_hook_added_after_runs_that_notified_nobody_gets_the_next_run(
        self,
        fresh_database_url: str,
        tmp_path: Path,
        make_repo: Callable[..., Repo],
    ) -> None:
        # The subscriber remembers that a project notifies nobody; adding a hook must
        # make it forget, or the hook would stay silent.
        repo = make_repo({".conveyor.yml": PIPELINE})
        with (
            receiver() as hook_target,
            _serving_demo(fresh_database_url, tmp_path, repo) as (client, headers),
        ):

            def run_to_end() -> dict[str, object]:
                started = client.post("/api/v1/projects/demo/runs", headers=headers, json={})
                assert started.status_code == 201, started.text
                deadline = time.monotonic() + WAIT_SECONDS
                while True:
                    run: dict[str, object] = client.get(
                        f"/api/v1/runs/{started.json()['id']}", headers=headers
                    ).json()
                    if run["finished_at"] is not None:
                        return run
                    assert time.monotonic() < deadline, f"run {run['id']} did not finish"
                    time.sleep(0.05)

            first = run_to_end()
            hook = client.post(
                "/api/v1/projects/demo/notifications",
                headers=headers,
                json={
                    "kind": "webhook",
                    "target": hook_target.url + "/ci",
                    "triggers": ["succeeded"],
                },
            )
            assert hook.status_code == 201, hook.text
            second = run_to_end()
            _wait_for_requests(hook_target, 1)
            time.sleep(0.3)  # a delivery for the first run would have come by now

        assert (first["status"], second["status"]) == ("success", "success")
        bodies = [json.loads(request.body) for request in hook_target.requests]
        assert [body["run_number"] for body in bodies] == [second["number"]]
