"""`/ui/ws/runs` as the dashboard uses it, in a real browser against a real server
process: a queued run pushed to the page says why it waits, and the reason follows
the agents (one coming online, then claiming the job) without a reload."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.fixtures.gitrepos import Repo
from tests.server.web.conftest import UiServer
from tests.server.web.test_views import (
    SLOW_PIPELINE,
    agent_headers,
    create_project,
    screenshot,
    trigger,
    unique,
)


class TestDashboardWaitingReasons:
    def test_a_pushed_queued_run_says_why_it_waits_and_the_reason_follows_the_agents(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        label = unique("gpu")
        project = unique("waits")
        create_project(
            api, project, make_repo({".conveyor.yml": f"labels: [{label}]\n" + SLOW_PIPELINE})
        )
        page.goto(ui_server.url + "/")
        page.wait_for_function("document.body.dataset.live === 'open'")
        page.evaluate("window.notReloaded = true")
        run = trigger(api, project)
        agent_id = None
        try:
            item = page.locator(f"#queued-runs li[data-run-id='{run['id']}']")
            reason = item.locator(".waiting-reason")
            reason.filter(has_text=f"(no online agent has labels {label})").wait_for()
            screenshot(page, "dashboard-waiting-1280")

            # An agent with the label comes online: no run changes, the reason does.
            name = unique("gpu-agent")
            created = api.post("/api/v1/agents", json={"name": name})
            assert created.status_code == 201, created.text
            agent_id = created.json()["id"]
            token = created.json()["token"]
            registered = httpx.post(
                ui_server.url + "/api/v1/agent/register",
                json={"name": name, "labels": [label]},
                headers=agent_headers(token),
            )
            assert registered.status_code == 200, registered.text
            reason.filter(has_text="(waiting for an agent to claim it)").wait_for(timeout=15_000)

            # It claims the job: the run leaves the queue for the active list.
            claimed = httpx.post(
                ui_server.url + "/api/v1/agent/claim",
                json={"free_slots": 1, "wait": 5},
                headers=agent_headers(token),
            )
            assert claimed.status_code == 200, claimed.text
            page.locator(f"#active-runs li[data-run-id='{run['id']}']").wait_for()
            assert item.count() == 0
            assert page.evaluate("window.notReloaded") is True
        finally:
            api.post(f"/api/v1/runs/{run['id']}/cancel")
            if agent_id is not None:
                api.delete(f"/api/v1/agents/{agent_id}?force=true")

    def test_pages_that_do_not_ask_get_no_reasons(
        self, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        """The run page's socket (log.js) does not pay for the reasons."""
        api = ui_server.api()
        project = unique("quiet")
        label = unique("nowhere")
        create_project(
            api, project, make_repo({".conveyor.yml": f"labels: [{label}]\n" + SLOW_PIPELINE})
        )
        cookie = "; ".join(f"{name}={value}" for name, value in api.cookies.items())
        base = ui_server.url.replace("http://", "ws://")
        with (
            connect(base + "/ui/ws/runs", additional_headers={"Cookie": cookie}) as plain,
            connect(base + "/ui/ws/runs?waiting=1", additional_headers={"Cookie": cookie}) as asks,
        ):
            run = trigger(api, project)
            try:
                plain_message = _first_about(plain, run["id"])
                asked_message = _first_about(asks, run["id"])
            finally:
                api.post(f"/api/v1/runs/{run['id']}/cancel")
        assert plain_message["run"]["waiting_reason"] is None and "waiting" not in plain_message
        expected = f"no online agent has labels {label}"
        assert asked_message["run"]["waiting_reason"] == expected
        assert asked_message["waiting"][str(run["id"])] == expected


def _first_about(socket: Any, run_id: int) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(socket.recv(timeout=15))
        if message.get("type") == "run" and message["run"]["id"] == run_id:
            return message
