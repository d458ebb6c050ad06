"""The web UI in a real browser against a real server process: sign-in, dashboard,
projects, runs with the live log viewer, settings, permissions, escaping, and a
million-line log."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.fixtures.gitrepos import Repo
from tests.server.receivers import receiver
from tests.server.web.conftest import SCREENSHOTS, UiServer, sign_in

LIVE_PIPELINE = """\
steps:
  - name: build
    commands:
      - printf '\\033[31mred alert\\033[0m plain\\n'
      - for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 0.5; done
      - mkdir -p dist && echo "artifact body" > dist/app.txt
artifacts: {paths: ["dist/*"], archive: none, hash: sha256}
"""
SLOW_PIPELINE = """\
steps:
  - name: wait
    commands: ["echo started", "sleep 60"]
"""
XSS = "<img src=x onerror=alert(1)>"
XSS_PIPELINE = """\
steps:
  - name: say
    commands:
      - echo '<script>alert(3)</script>'
      - echo '<img src=y onerror=alert(4)>'
"""
MILLION_PIPELINE = """\
steps:
  - name: count
    commands: ["seq 1 1000000"]
"""
LABELLED_PIPELINE = """\
labels: [no-such-machine]
steps:
  - name: never
    commands: ["echo never"]
"""
FINISHED = {"success", "failure", "warning", "cancelled", "skipped", "error"}
_names = count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{int(time.time() * 1000) % 100000}"


def create_project(api: httpx.Client, name: str, repo: Repo) -> None:
    answer = api.post("/api/v1/projects", json={"name": name, "git_url": repo.url})
    assert answer.status_code == 201, answer.text


def trigger(api: httpx.Client, project: str, branch: str = "main") -> dict[str, Any]:
    answer = api.post(f"/api/v1/projects/{project}/runs", json={"branch": branch})
    assert answer.status_code == 201, answer.text
    run: dict[str, Any] = answer.json()
    return run


def wait_for_run(api: httpx.Client, run_id: int, within: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        run: dict[str, Any] = api.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in FINISHED:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {within}s")


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def no_horizontal_overflow(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


class TestSignIn:
    def test_wrong_password_shows_an_error_on_the_page(
        self, browser: Any, ui_server: UiServer
    ) -> None:
        page = browser.new_page()
        page.goto(ui_server.url + "/ui/sign-in")
        page.get_by_label("Name").fill("admin")
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text().startswith("That name and password")
        page.close()

    def test_sign_in_returns_to_the_page_asked_for(self, browser: Any, ui_server: UiServer) -> None:
        page = browser.new_page()
        page.goto(ui_server.url + "/ui/agents")
        assert "/ui/sign-in?next=%2Fui%2Fagents" in page.url
        page.get_by_label("Name").fill("admin")
        page.get_by_label("Password").fill(ui_server.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(ui_server.url + "/ui/agents")
        assert page.get_by_role("heading", name="Agents").is_visible()
        page.close()

    def test_sign_in_never_redirects_to_another_origin(
        self, browser: Any, ui_server: UiServer
    ) -> None:
        page = browser.new_page()
        page.goto(ui_server.url + "/ui/sign-in?next=//evil.example/x")
        page.get_by_label("Name").fill("admin")
        page.get_by_label("Password").fill(ui_server.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(ui_server.url + "/")
        page.close()

    def test_sign_out_ends_the_session(self, admin_page: Any, ui_server: UiServer) -> None:
        admin_page.goto(ui_server.url + "/")
        admin_page.get_by_role("button", name="Sign out").click()
        admin_page.goto(ui_server.url + "/")
        assert "/ui/sign-in" in admin_page.url


class TestSecurityRules:
    def test_pages_carry_a_policy_without_inline_scripts(self, ui_server: UiServer) -> None:
        api = ui_server.api()
        answer = api.get("/")
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "<script>" not in answer.text and " on" + "click=" not in answer.text

    def test_a_post_without_the_csrf_token_is_refused(
        self, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        api = ui_server.api()
        name = unique("csrf")
        create_project(api, name, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        refused = api.post(f"/ui/projects/{name}/runs", data={"branch": "main"})
        assert refused.status_code == 403
        assert "security token" in refused.text and "text/html" in refused.headers["content-type"]
        forged = api.post(
            f"/ui/projects/{name}/runs", data={"branch": "main", "csrf_token": "guessed"}
        )
        assert forged.status_code == 403
        assert api.get(f"/api/v1/projects/{name}/runs").json()["total"] == 0

    def test_unknown_pages_and_projects_render_as_pages(self, ui_server: UiServer) -> None:
        api = ui_server.api()
        for path in ("/ui/no-such-page", "/ui/projects/no-such-project", "/ui/runs/999999"):
            answer = api.get(path)
            assert answer.status_code == 404, path
            assert "text/html" in answer.headers["content-type"], path
        assert api.get("/ui/static/conveyor.css").status_code == 200

    def test_session_and_csrf_cookies_are_httponly_and_lax(self, ui_server: UiServer) -> None:
        page = httpx.get(ui_server.url + "/ui/sign-in")
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie


class TestProjectAndRun:
    def test_create_from_git_url_watch_log_live_and_download_artifact(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        repo = make_repo({".conveyor.yml": LIVE_PIPELINE})
        name = unique("live")
        page.goto(ui_server.url + "/ui/projects/new")
        page.get_by_label("Git URL").fill(repo.url)
        page.get_by_label("Name (optional").fill(name)
        page.get_by_role("button", name="Create project").click()
        page.wait_for_url(re.compile(r"/ui/runs/\d+"))
        step = page.locator("details.step").first
        # The first tick shows while the step still runs: the line came live.
        page.locator(".log-row .lt", has_text="tick 1").wait_for()
        assert step.locator("[data-step-status]").inner_text() == "running"
        page.locator(".log-row .lt", has_text="tick 6").wait_for()
        red = page.locator(".log-row .lt span.a-fg1", has_text="red alert")
        assert red.count() == 1
        page.locator("#run [data-run-status]", has_text="success").wait_for(timeout=30_000)
        page.reload()
        link = page.get_by_role("link", name="app.txt")
        with page.expect_download() as download_info:
            link.click()
        download = download_info.value
        assert Path(download.path()).read_bytes() == b"artifact body\n"
        sha = page.locator("td code.hash").first.inner_text()
        assert sha == hashlib.sha256(b"artifact body\n").hexdigest()

    def test_trigger_from_the_project_page_and_cancel(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("cancel")
        create_project(api, name, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        page.goto(f"{ui_server.url}/ui/projects/{name}")
        page.get_by_label("Variables").fill("GREETING=hello")
        page.get_by_role("button", name="Run", exact=True).click()
        page.wait_for_url(re.compile(r"/ui/runs/\d+"))
        assert "GREETING=hello" in page.locator(".run-facts").inner_text()
        page.locator(".log-row .lt", has_text=re.compile(r"^started$")).wait_for()
        page.get_by_role("button", name="Cancel").click()
        page.locator("#run [data-run-status]", has_text="cancelled").wait_for()
        run_id = int(page.url.rsplit("/", 1)[-1].split("?")[0])
        assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "cancelled"
        page.get_by_role("button", name="Retry").wait_for()
        assert page.get_by_role("button", name="Cancel").is_hidden()

    def test_run_filters_narrow_the_list(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        api = ui_server.api()
        repo = make_repo({".conveyor.yml": "steps: [{name: ok, commands: ['true']}]\n"})
        repo.git("branch", "feature")
        name = unique("filters")
        create_project(api, name, repo)
        wait_for_run(api, trigger(api, name)["id"])
        wait_for_run(api, trigger(api, name, "feature")["id"])
        admin_page.goto(f"{ui_server.url}/ui/projects/{name}?branch=feature")
        rows = admin_page.locator("table.runs tbody tr")
        assert rows.count() == 1 and "feature" in rows.first.inner_text()
        branches = admin_page.locator("ul.branches").inner_text()
        assert "main" in branches and "feature" in branches


class TestDashboard:
    def test_new_runs_and_status_changes_arrive_without_reload(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("dash")
        create_project(api, name, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        page.goto(ui_server.url + "/")
        page.wait_for_function("document.body.dataset.live === 'open'")
        page.evaluate("window.notReloaded = true")
        run = trigger(api, name)
        row = page.locator(f"table.runs tr[data-run-id='{run['id']}']")
        row.wait_for()
        page.locator(f"#active-runs li[data-run-id='{run['id']}']").wait_for()
        api.post(f"/api/v1/runs/{run['id']}/cancel")
        row.locator("[data-status]", has_text="cancelled").wait_for()
        assert page.locator(f"#active-runs li[data-run-id='{run['id']}']").count() == 0
        assert page.evaluate("window.notReloaded") is True

    def test_a_queued_run_says_why_it_waits(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        api = ui_server.api()
        name = unique("labels")
        create_project(api, name, make_repo({".conveyor.yml": LABELLED_PIPELINE}))
        run = trigger(api, name)
        try:
            admin_page.goto(ui_server.url + "/")
            item = admin_page.locator(f"#queued-runs li[data-run-id='{run['id']}']")
            expected = "no online agent has labels no-such-machine"
            assert item.locator(".waiting-reason").inner_text() == f"({expected})"
            waiting = api.get(f"/api/v1/jobs/{run['jobs'][0]['id']}/waiting").json()
            assert waiting["reason"] == expected
        finally:
            api.post(f"/api/v1/runs/{run['id']}/cancel")


class TestAgentsPage:
    def test_status_is_shown_and_disable_and_enable_buttons_work(
        self, admin_page: Any, ui_server: UiServer
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("ui-agent")
        created = api.post("/api/v1/agents", json={"name": name})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        try:
            page.goto(ui_server.url + "/ui/agents")
            # The embedded agent heartbeats; the new one never registered.
            assert page.locator("[data-agent-status='online']").count() >= 1
            row = page.locator(f"tr[data-agent-id='{agent_id}']")
            status = row.locator("[data-agent-status]")
            assert status.inner_text() == "offline"
            row.get_by_role("button", name=f"Disable {name}").click()
            page.wait_for_url(re.compile(r"/ui/agents\?notice="))
            assert status.inner_text() == "disabled"
            assert api.get(f"/api/v1/agents/{agent_id}").json()["enabled"] is False
            row.get_by_role("button", name=f"Enable {name}").click()
            row.get_by_role("button", name=f"Disable {name}").wait_for()
            assert status.inner_text() == "offline"
            assert api.get(f"/api/v1/agents/{agent_id}").json()["enabled"] is True
        finally:
            api.delete(f"/api/v1/agents/{agent_id}")


def agent_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def agent_running_a_job(
    api: httpx.Client, server: UiServer, make_repo: Callable[..., Repo]
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """An agent (made through the API, not running anywhere) that claimed the job of a
    new run whose pipeline only it can take: (agent, run, token)."""
    label = unique("only-here")
    name = unique("busy-agent")
    project = unique("held")
    create_project(
        api, project, make_repo({".conveyor.yml": f"labels: [{label}]\n" + SLOW_PIPELINE})
    )
    created = api.post("/api/v1/agents", json={"name": name})
    assert created.status_code == 201, created.text
    agent: dict[str, Any] = created.json()
    token = agent["token"]
    registered = httpx.post(
        server.url + "/api/v1/agent/register",
        json={"name": name, "labels": [label]},
        headers=agent_headers(token),
    )
    assert registered.status_code == 200, registered.text
    run = trigger(api, project)
    claimed = httpx.post(
        server.url + "/api/v1/agent/claim",
        json={"free_slots": 1, "wait": 5},
        headers=agent_headers(token),
    )
    assert claimed.status_code == 200, claimed.text
    assert [job["job_id"] for job in claimed.json()["jobs"]] == [run["jobs"][0]["id"]]
    return agent, run, token


class TestRunHistory:
    def test_history_follows_the_run_live_in_the_readers_locale(
        self, browser: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        api = ui_server.api()
        repo = make_repo({".conveyor.yml": SLOW_PIPELINE})
        branch = "<i>lean</i>"
        repo.git("checkout", "-q", "-b", branch)
        name = unique("history")
        create_project(api, name, repo)
        run = trigger(api, name, branch)
        context = browser.new_context(locale="de-DE", timezone_id="Europe/Berlin")
        page = context.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, ui_server)
        page.goto(f"{ui_server.url}/ui/runs/{run['id']}")
        history = page.locator("#run-history")
        history.locator("li[data-action='started']").wait_for()
        page.evaluate("window.notReloaded = true")

        cancelled = api.post(f"/api/v1/runs/{run['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        history.locator("li[data-action='finished']").wait_for()
        assert page.evaluate("window.notReloaded") is True
        items = history.locator("li")
        assert [items.nth(i).get_attribute("data-action") for i in range(items.count())] == [
            "triggered",
            "started",
            "cancelled",
            "finished",
        ]
        assert items.nth(0).locator(".history-actor").inner_text() == "admin"
        assert items.nth(2).locator(".history-actor").inner_text() == "admin"
        assert items.nth(3).locator(".history-details").inner_text().startswith("cancelled after")
        # Names come back as text after the live re-render, never as markup.
        assert branch in items.nth(0).inner_text()
        assert history.locator("i").count() == 0
        # Times read as a reader in Berlin with German settings expects them.
        stamp = items.nth(2).locator("time")
        moment = datetime.fromisoformat(str(stamp.get_attribute("datetime")))
        local = moment.astimezone(ZoneInfo("Europe/Berlin"))
        shown = stamp.inner_text()
        assert local.strftime("%d.%m.%Y") in shown and local.strftime("%H:%M:%S") in shown, shown
        assert "UTC" not in shown
        screenshot(page, "run-history-de")
        context.close()

    def test_a_retry_is_named_on_both_runs(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        api = ui_server.api()
        name = unique("retried")
        create_project(
            api, name, make_repo({".conveyor.yml": "steps: [{name: ok, commands: ['true']}]\n"})
        )
        first = wait_for_run(api, trigger(api, name)["id"])
        admin_page.goto(f"{ui_server.url}/ui/runs/{first['id']}")
        admin_page.get_by_role("button", name="Retry").click()
        admin_page.wait_for_url(re.compile(r"/ui/runs/\d+\?notice="))
        new_id = int(admin_page.url.split("?")[0].rsplit("/", 1)[-1])
        assert new_id != first["id"]
        triggered = admin_page.locator("#run-history li[data-action='triggered']")
        assert f"retry of #{first['number']}" in triggered.inner_text()
        admin_page.goto(f"{ui_server.url}/ui/runs/{first['id']}")
        retried = admin_page.locator("#run-history li[data-action='retried']")
        assert retried.locator(".history-actor").inner_text() == "admin"
        assert retried.locator(".history-details").inner_text() == f"as run #{first['number'] + 1}"


class TestAgentDelete:
    def test_an_idle_agent_is_deleted_after_the_confirm_step(
        self, admin_page: Any, ui_server: UiServer
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("spare-agent")
        created = api.post("/api/v1/agents", json={"name": name})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        page.goto(ui_server.url + "/ui/agents")
        page.get_by_role("button", name=f"Delete {name}").click()
        page.get_by_role("heading", name=f"Delete agent {name}?").wait_for()
        assert "running" not in page.locator("main").inner_text()
        page.get_by_role("link", name="Keep it").click()
        page.wait_for_url(ui_server.url + "/ui/agents")
        assert api.get(f"/api/v1/agents/{agent_id}").status_code == 200

        page.get_by_role("button", name=f"Delete {name}").click()
        page.get_by_role("button", name=f"Delete {name}", exact=True).click()
        page.get_by_role("status").filter(has_text=f"Agent {name} deleted").wait_for()
        assert page.locator(f"tr[data-agent-id='{agent_id}']").count() == 0
        assert api.get(f"/api/v1/agents/{agent_id}").status_code == 404

    def test_an_agent_running_a_job_needs_force_and_its_job_goes_back_to_the_queue(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        agent, run, _ = agent_running_a_job(api, ui_server, make_repo)
        name = agent["name"]
        try:
            page.goto(ui_server.url + "/ui/agents")
            page.get_by_role("button", name=f"Delete {name}").click()
            warning = page.get_by_role("alert")
            assert f"{name} is running 1 job(s) now" in warning.inner_text()
            assert "back in the queue" in warning.inner_text()
            page.get_by_role("button", name=f"Force delete {name}").click()
            page.get_by_role("status").filter(has_text="1 job(s) back in the queue").wait_for()
            assert api.get(f"/api/v1/agents/{agent['id']}").status_code == 404
            job = api.get(f"/api/v1/runs/{run['id']}").json()["jobs"][0]
            assert job["status"] == "queued" and job["agent"] is None
            page.goto(f"{ui_server.url}/ui/runs/{run['id']}")
            requeued = page.locator("#run-history li[data-action='requeued']")
            assert f"agent {name} deleted" in requeued.inner_text()
        finally:
            api.post(f"/api/v1/runs/{run['id']}/cancel")
            api.delete(f"/api/v1/agents/{agent['id']}?force=true")

    def test_delete_without_the_csrf_token_or_as_a_non_admin_is_refused(
        self, ui_server: UiServer
    ) -> None:
        api = ui_server.api()
        name = unique("kept-agent")
        agent_id = api.post("/api/v1/agents", json={"name": name}).json()["id"]
        try:
            refused = api.post(f"/ui/agents/{agent_id}/delete", data={"force": "yes"})
            assert refused.status_code == 403 and "security token" in refused.text
            person = unique("pat")
            created = api.post("/api/v1/users", json={"name": person, "password": "pat-pass-123"})
            assert created.status_code == 201, created.text
            other = ui_server.api(person, "pat-pass-123")
            assert other.get(f"/ui/agents/{agent_id}/delete").status_code == 403
            agents_page = other.get("/ui/agents")
            assert agents_page.status_code == 403 and f"Delete {name}" not in agents_page.text
            assert api.get(f"/api/v1/agents/{agent_id}").status_code == 200
        finally:
            api.delete(f"/api/v1/agents/{agent_id}")


class TestAgentToken:
    def test_a_new_agents_token_is_shown_once_copied_and_works(
        self, browser: Any, ui_server: UiServer
    ) -> None:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui_server.url)
        page = context.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, ui_server)
        name = unique("token-agent")
        page.goto(ui_server.url + "/ui/agents")
        page.get_by_label("Name").fill(name)
        page.get_by_role("button", name="Create token").click()
        token = page.locator("#agent-token").input_value()
        assert token.startswith("cva_") and len(token) > 30
        page.get_by_role("button", name="Copy").click()
        page.get_by_role("button", name="Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == token
        beat = httpx.post(
            ui_server.url + "/api/v1/agent/heartbeat",
            json={"running": []},
            headers=agent_headers(token),
        )
        assert beat.status_code == 200, beat.text
        page.goto(ui_server.url + "/ui/agents")
        assert token not in page.content()
        agent_id = page.locator("tr", has_text=name).get_attribute("data-agent-id")
        context.close()
        ui_server.api().delete(f"/api/v1/agents/{agent_id}")


class TestSettings:
    def test_maintainer_changes_a_setting_and_it_stays(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("settings")
        create_project(api, name, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        page.goto(f"{ui_server.url}/ui/projects/{name}/settings")
        page.get_by_label("Branch filter").fill("main, release/*")
        page.get_by_label("Concurrency limit").fill("3")
        page.get_by_role("button", name="Save settings").click()
        page.get_by_role("status").filter(has_text="Settings saved").wait_for()
        project = api.get(f"/api/v1/projects/{name}").json()
        assert project["branch_filter"] == "main,release/*"
        assert project["concurrency_limit"] == 3
        assert page.get_by_label("Branch filter").input_value() == "main,release/*"

    def test_secret_values_are_write_only(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("secret")
        create_project(api, name, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        page.goto(f"{ui_server.url}/ui/projects/{name}/settings")
        form = page.get_by_role("region", name="Secrets")
        form.get_by_label("Name").fill("DEPLOY_KEY")
        form.get_by_label("Value").fill("s3cr3t-value-xyz")
        form.get_by_role("button", name="Save secret").click()
        page.get_by_role("status").filter(has_text="Secret DEPLOY_KEY saved").wait_for()
        assert "DEPLOY_KEY" in page.get_by_role("region", name="Secrets").inner_text()
        assert "s3cr3t-value-xyz" not in page.content()


class TestSchedulesAndNotifications:
    def test_add_a_schedule_and_send_a_test_notification(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("notify")
        create_project(api, name, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        page.goto(f"{ui_server.url}/ui/projects/{name}/settings")
        schedules = page.get_by_role("region", name="Schedules")
        schedules.get_by_label("Cron").fill("0 3 * * *")
        schedules.get_by_role("button", name="Add schedule").click()
        page.get_by_role("status").filter(has_text="Schedule added").wait_for()
        assert "0 3 * * *" in page.get_by_role("region", name="Schedules").inner_text()
        with receiver() as target:
            hooks = page.get_by_role("region", name="Notifications")
            hooks.get_by_label("Kind").select_option("webhook")
            hooks.get_by_label("Target").fill(target.url + "/hook")
            hooks.get_by_role("button", name="Add notification").click()
            page.get_by_role("status").filter(has_text="Notification added").wait_for()
            page.get_by_role("button", name="Send test").click()
            notice = page.get_by_role("status").filter(has_text="Test sent")
            notice.wait_for()
            assert "HTTP 200" in notice.inner_text()
            assert len(target.requests) == 1 and target.requests[0].path == "/hook"


class TestPermissions:
    def test_a_viewer_reads_but_is_denied_settings_and_trigger(
        self, browser: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        api = ui_server.api()
        name = unique("perm")
        viewer = unique("vera")
        create_project(api, name, make_repo({".conveyor.yml": SLOW_PIPELINE}))
        created = api.post("/api/v1/users", json={"name": viewer, "password": "viewer-pass-123"})
        assert created.status_code == 201, created.text
        api.put(f"/api/v1/projects/{name}/members/{viewer}", json={"role": "viewer"})
        context = browser.new_context()
        page = context.new_page()
        sign_in(page, ui_server, viewer, "viewer-pass-123")
        page.goto(f"{ui_server.url}/ui/projects/{name}")
        assert page.get_by_role("heading", name=name).is_visible()
        assert page.get_by_role("button", name="Run", exact=True).count() == 0
        answer = page.goto(f"{ui_server.url}/ui/projects/{name}/settings")
        assert answer is not None and answer.status == 403
        assert page.get_by_role("heading", name="Permission denied").is_visible()
        users = page.goto(f"{ui_server.url}/ui/users")
        assert users is not None and users.status == 403
        context.close()


class TestEscaping:
    def test_commit_message_branch_and_log_stay_text(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        dialogs: list[str] = []

        def record(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", record)
        repo = make_repo({".conveyor.yml": XSS_PIPELINE})
        branch = "<svg/onload=alert(2)>"
        repo.git("checkout", "-q", "-b", branch)
        repo.commit(XSS)
        api = ui_server.api()
        name = unique("xss")
        create_project(api, name, repo)
        run = wait_for_run(api, trigger(api, name, branch)["id"])
        page.goto(f"{ui_server.url}/ui/runs/{run['id']}")
        page.locator(
            ".log-row .lt", has_text=re.compile(r"^<script>alert\(3\)</script>$")
        ).wait_for()
        assert XSS in page.locator(".run-facts").inner_text()
        assert branch in page.locator(".run-facts").inner_text()
        assert branch in page.locator("#run-history").inner_text()
        assert page.locator("#run-history svg, #run-history img").count() == 0
        page.goto(ui_server.url + "/")
        assert XSS in page.locator("table.runs").inner_text()
        assert page.locator("table.runs img, .log-row img, .run-facts img, svg").count() == 0
        assert dialogs == []


class TestMillionLineLog:
    def test_opens_in_under_two_seconds_and_jumps_to_line_900000(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("million")
        create_project(api, name, make_repo({".conveyor.yml": MILLION_PIPELINE}))
        run = wait_for_run(api, trigger(api, name)["id"], within=120)
        assert run["status"] == "success", run
        step = run["jobs"][0]["steps"][0]
        # The log shows the command first ("$ seq 1 1000000"), so line n reads n - 1.
        assert step["log_lines"] == 1_000_001
        started = time.monotonic()
        page.goto(f"{ui_server.url}/ui/runs/{run['id']}#s{step['id']}L900000")
        target = page.locator(".log-row.marked .lt", has_text=re.compile(r"^899999$"))
        target.wait_for(timeout=10_000)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"opening the log at line 900,000 took {elapsed:.2f}s"
        assert target.is_visible()
        assert page.locator(".log-row.marked .ln").inner_text() == "900000"
        # The page holds a window of the log, never all of it.
        assert page.locator(".log-row").count() < 200
        page.get_by_label("Line").fill("12345")
        page.get_by_role("button", name="Go").click()
        page.locator(".log-row.marked .lt", has_text=re.compile(r"^12344$")).wait_for()
        page.get_by_label("Search").fill("999999")
        page.get_by_role("button", name="Find").click()
        page.locator(".log-row.marked .lt", has_text=re.compile(r"^999999$")).wait_for()
        assert page.locator("[data-found]").inner_text().startswith("1 of 1")


class TestScreenshots:
    @pytest.mark.parametrize("width", [1280, 375])
    def test_main_pages_fit_the_width(
        self, browser: Any, ui_server: UiServer, make_repo: Callable[..., Repo], width: int
    ) -> None:
        api = ui_server.api()
        name = unique(f"shots{width}")
        create_project(api, name, make_repo({".conveyor.yml": LIVE_PIPELINE}))
        run = wait_for_run(api, trigger(api, name)["id"])
        spare = api.post("/api/v1/agents", json={"name": unique(f"spare{width}")}).json()
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        sign_in(page, ui_server)
        pages = {
            "dashboard": "/",
            "project": f"/ui/projects/{name}",
            "settings": f"/ui/projects/{name}/settings",
            "run": f"/ui/runs/{run['id']}",
            "agents": "/ui/agents",
            "agent-delete": f"/ui/agents/{spare['id']}/delete",
            "users": "/ui/users",
        }
        crowded = []
        for label, path in pages.items():
            page.goto(ui_server.url + path)
            if label == "run":
                page.locator(".log-row .lt", has_text="tick 6").wait_for()
            screenshot(page, f"{label}-{width}")
            if not no_horizontal_overflow(page):
                crowded.append(label)
            if label == "agents":
                # Every agent's buttons in sight, not scrolled away inside the table.
                buttons = page.locator("table.agents button")
                assert buttons.count() >= 4
                for index in range(buttons.count()):
                    box = buttons.nth(index).bounding_box()
                    assert box is not None and box["x"] + box["width"] <= width, label
        context.close()
        api.delete(f"/api/v1/agents/{spare['id']}")
        assert crowded == [], f"pages wider than {width}px: {crowded}"
