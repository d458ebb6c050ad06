"""The live pages in a real browser against a real server process: `/ui/ws/runs` as the
dashboard uses it (a queued run says why it waits, the reason follows the agents, and
the "N running, N queued" summary follows the lists), and `/ui/ws/runs/{id}` as the run
page uses it (every status on the page follows the run: cancelled in the browser, or
ended by itself), all without a reload."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
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
    wait_for_run,
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


FAILING_PIPELINE = """\
steps:
  - name: first
    commands: ["echo first", "sleep 1"]
  - name: second
    commands: ["echo second", "sleep 1", "exit 3"]
"""


def _job_heading_status(page: Any) -> Any:
    return page.locator("section.job [data-job-status] [data-status]")


class TestRunPageFollowsTheRun:
    def test_cancel_in_the_browser_turns_the_job_heading_cancelled_without_a_reload(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        project = unique("cancel-live")
        create_project(api, project, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        run = trigger(api, project)
        try:
            page.goto(f"{ui_server.url}/ui/runs/{run['id']}")
            page.locator(".log-row .lt", has_text=re.compile(r"^started$")).wait_for()
            _job_heading_status(page).filter(has_text="running").wait_for()
            page.evaluate("window.notReloaded = true")
            page.get_by_role("button", name="Cancel").click()

            _job_heading_status(page).filter(has_text="cancelled").wait_for()
            page.locator("#run [data-run-status]", has_text="cancelled").wait_for()
            page.locator("details.step [data-step-status]", has_text="cancelled").wait_for()
            page.get_by_role("button", name="Retry").wait_for()
            assert page.get_by_role("button", name="Cancel").is_hidden()
            assert page.get_by_role("status").inner_text() == "Run cancelled"
            assert page.evaluate("window.notReloaded") is True
            assert api.get(f"/api/v1/runs/{run['id']}").json()["status"] == "cancelled"
            # The job's class follows too, for the stylesheet and for scripts.
            assert page.locator("section.job").get_attribute("data-status") == "cancelled"
            screenshot(page, "run-cancelled-1280")
            page.set_viewport_size({"width": 375, "height": 900})
            screenshot(page, "run-cancelled-375")
        finally:
            api.post(f"/api/v1/runs/{run['id']}/cancel")

    def test_a_job_that_ends_by_itself_shows_what_a_reload_would_show(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        project = unique("ends-live")
        create_project(api, project, make_repo({".conveyor.yml": FAILING_PIPELINE}))
        run = trigger(api, project)
        page.goto(f"{ui_server.url}/ui/runs/{run['id']}")
        page.evaluate("window.notReloaded = true")
        second = page.locator("details.step").nth(1)
        assert second.locator("[data-step-exit]").inner_text() == ""

        _job_heading_status(page).filter(has_text="failure").wait_for()
        page.locator("#run [data-run-status]", has_text="failure").wait_for()
        second.locator("[data-step-exit]", has_text="exit 3").wait_for()
        assert wait_for_run(api, run["id"])["status"] == "failure"
        assert page.evaluate("window.notReloaded") is True
        first = page.locator("details.step").first
        assert first.locator("[data-step-status]").inner_text() == "success"
        assert second.locator("[data-step-status]").inner_text() == "failure"
        assert re.fullmatch(r"[\d.]+s · ", second.locator("[data-step-took]").inner_text())
        assert page.locator("[data-run-duration]").inner_text() != ""
        live = _visible_facts(page)

        page.reload()
        assert _visible_facts(page) == live

    def test_each_job_heading_follows_its_own_job(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        """Two jobs of one run side by side: the short one ends while the run (and the
        long one) still run, a change that moves no run status."""
        page = admin_page
        api = ui_server.api()
        project = unique("matrix-live")
        pipeline = 'matrix: {NAP: ["1", "6"]}\nsteps:\n  - {name: nap, commands: ["sleep $NAP"]}\n'
        create_project(api, project, make_repo({".conveyor.yml": pipeline}))
        run = trigger(api, project)
        page.goto(f"{ui_server.url}/ui/runs/{run['id']}")
        page.evaluate("window.notReloaded = true")
        short = page.locator("section.job", has_text="NAP=1").locator("[data-job-status]")
        long = page.locator("section.job", has_text="NAP=6").locator("[data-job-status]")
        short.filter(has_text="success").wait_for()
        assert long.inner_text() == "running"
        assert page.locator("#run [data-run-status]").inner_text() == "running"
        long.filter(has_text="success").wait_for()
        assert wait_for_run(api, run["id"])["status"] == "success"
        assert page.evaluate("window.notReloaded") is True


def _visible_facts(page: Any) -> list[str]:
    """What the page says of the run, each job and each step (the log left out)."""
    parts = [page.locator("#run").inner_text(), page.locator(".run-facts").inner_text()]
    parts += [heading.inner_text() for heading in page.locator("section.job h2").all()]
    parts += [summary.inner_text() for summary in page.locator("details.step summary").all()]
    return [" ".join(part.split()) for part in parts]


class TestRunFeed:
    def test_sends_the_run_whole_at_once_and_again_when_it_changes(
        self, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        api = ui_server.api()
        project = unique("feed")
        label = unique("nowhere")
        create_project(
            api, project, make_repo({".conveyor.yml": f"labels: [{label}]\n" + SLOW_PIPELINE})
        )
        run = trigger(api, project)
        with connect(_ws(ui_server, f"/ui/ws/runs/{run['id']}"), **_cookie(api)) as feed:
            first = json.loads(feed.recv(timeout=15))
            assert first["type"] == "detail" and first["run"]["status"] == "queued"
            assert [step["status"] for step in first["run"]["jobs"][0]["steps"]] == ["queued"]
            cancelled = api.post(f"/api/v1/runs/{run['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            second = json.loads(feed.recv(timeout=15))
        assert second["run"]["status"] == "cancelled"
        assert second["run"]["jobs"][0]["status"] == "cancelled"
        assert second["run"]["jobs"][0]["steps"][0]["status"] == "skipped"

    def test_a_run_that_does_not_exist_closes_the_feed_saying_so(self, ui_server: UiServer) -> None:
        api = ui_server.api()
        with connect(_ws(ui_server, "/ui/ws/runs/987654321"), **_cookie(api)) as feed:
            try:
                feed.recv(timeout=15)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4404
            else:
                raise AssertionError("the feed of a missing run sent a message")

    def test_a_stranger_is_refused(self, ui_server: UiServer) -> None:
        with connect(_ws(ui_server, "/ui/ws/runs/1")) as feed:
            try:
                feed.recv(timeout=15)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4401
            else:
                raise AssertionError("the feed sent a message to a viewer not signed in")


def _ws(server: UiServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def _cookie(api: httpx.Client) -> dict[str, Any]:
    cookie = "; ".join(f"{name}={value}" for name, value in api.cookies.items())
    return {"additional_headers": {"Cookie": cookie}}


class TestDashboardSummary:
    def test_the_counts_follow_runs_queued_started_and_ended(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        project = unique("counts")
        label = unique("nowhere")
        create_project(
            api, project, make_repo({".conveyor.yml": f"labels: [{label}]\n" + SLOW_PIPELINE})
        )
        page.goto(ui_server.url + "/")
        page.wait_for_function("document.body.dataset.live === 'open'")
        page.evaluate("window.notReloaded = true")
        queued_before = _count(page, "queued")
        runs = [trigger(api, project) for _ in range(2)]
        try:
            for run in runs:
                page.locator(f"#queued-runs li[data-run-id='{run['id']}']").wait_for()
            page.wait_for_function(_COUNTS_MATCH_LISTS)
            assert _count(page, "queued") == queued_before + 2
            screenshot(page, "dashboard-counts-1280")
            page.set_viewport_size({"width": 375, "height": 900})
            screenshot(page, "dashboard-counts-375")
            page.set_viewport_size({"width": 1280, "height": 900})
            queued_with_both = _count(page, "queued")
            for run in runs:
                assert api.post(f"/api/v1/runs/{run['id']}/cancel").status_code == 200
            for run in runs:
                page.locator(f"#queued-runs li[data-run-id='{run['id']}']").wait_for(
                    state="detached"
                )
            page.wait_for_function(_COUNTS_MATCH_LISTS)
            assert _count(page, "queued") == queued_with_both - 2
            assert page.evaluate("window.notReloaded") is True
        finally:
            for run in runs:
                api.post(f"/api/v1/runs/{run['id']}/cancel")

    def test_a_run_that_starts_moves_from_the_queued_count_to_the_running_one(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        project = unique("starts")
        create_project(api, project, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        page.goto(ui_server.url + "/")
        page.wait_for_function("document.body.dataset.live === 'open'")
        run = trigger(api, project)
        try:
            page.locator(f"#active-runs li[data-run-id='{run['id']}']").wait_for()
            page.wait_for_function(_COUNTS_MATCH_LISTS)
            assert _count(page, "running") >= 1
        finally:
            api.post(f"/api/v1/runs/{run['id']}/cancel")
        page.locator(f"#active-runs li[data-run-id='{run['id']}']").wait_for(state="detached")
        page.wait_for_function(_COUNTS_MATCH_LISTS)


_COUNTS_MATCH_LISTS = """() => {
  const shown = (kind) => document.querySelector(`#run-counts [data-count="${kind}"]`).textContent;
  const listed = (id) => String(document.querySelectorAll(`#${id} li[data-run-id]`).length);
  return shown("running") === listed("active-runs") && shown("queued") === listed("queued-runs");
}"""


def _count(page: Any, kind: str) -> int:
    return int(page.locator(f"#run-counts [data-count='{kind}']").inner_text())
