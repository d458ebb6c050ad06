"""Faults between a `conveyor server` process and `conveyor agent` processes on
127.0.0.1, each test printing its figures (`pytest -s`): the server SIGKILLed and
started again mid-run, the link cut for longer than a heartbeat, an artifact upload cut
in the middle, an agent frozen (SIGSTOP) for longer than its lease (its job re-run
elsewhere, or given back to it), and the heartbeats of an agent busy with a log flood
and artifact packing.

The link is cut with `tests.fixtures.tcpproxy.TcpProxy`: the agent talks to the proxy,
the test's own API client to the server directly."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.e2e.test_server_process import ServerProcess, free_port
from tests.fixtures.databases import empty_database
from tests.fixtures.gitrepos import Repo, git
from tests.fixtures.tcpproxy import TcpProxy
from tests.server.web.conftest import CHROMIUM, CHROMIUM_ARGS

HEARTBEAT_SECONDS = 0.5
HEARTBEAT_REQUEST = b"POST /api/v1/agent/heartbeat "
LINES = 3000
# ~4 s of numbered lines: a pause of 0.13 s after every hundredth.
COUNTING_STEP = (
    f'for i in $(seq 1 {LINES}); do echo "line $i"; '
    "if [ $((i % 100)) -eq 0 ]; then sleep 0.13; fi; done"
)
COUNTING_PIPELINE = f"""\
steps:
  - name: count
    commands:
      - '{COUNTING_STEP}'
"""
EXPECTED_LINES = [f"line {i}" for i in range(1, LINES + 1)]
ARTIFACT_BYTES = 6 * 1024 * 1024 + 12345
UPLOAD_PIPELINE = f"""\
steps:
  - name: make
    commands:
      - mkdir -p dist && head -c {ARTIFACT_BYTES} /dev/urandom > dist/blob.bin
      - sha256sum dist/blob.bin
artifacts: {{paths: ["dist/blob.bin"], archive: none, hash: sha256}}
"""
# The first attempt writes its pid and prints slowly for 20 s; the re-run (it finds the
# marker) sleeps `rerun_nap` s, prints one line and ends.
FROZEN_PIPELINE = """\
steps:
  - name: slow
    commands:
      - 'if [ ! -e {marker} ]; then touch {marker}; echo $$ > {pid_file}; i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo "first attempt $i"; sleep 0.1; done; else sleep {rerun_nap}; fi; echo "re-run done"'
"""  # noqa: E501


def launch_server(
    data_dir: Path, port: int, env: dict[str, str], password: str | None = None
) -> ServerProcess:
    """`conveyor server --agents 0` on `port`; `password` is the admin's from the first
    start (a restart prints none)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "server", "--port", str(port),
         "--data-dir", str(data_dir), "--agents", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        found = re.search(r"password '([^']+)'", line)
        if found:
            password = found.group(1)
        if "Uvicorn running on" in line:
            break
    assert password and "Uvicorn running on" in output[-1], "".join(output)
    # Keep draining its output so that a full pipe never blocks the server.
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    return ServerProcess(f"http://127.0.0.1:{port}", process, password, output, data_dir)


@dataclass
class Site:
    """A server process, the test's API client, and the agent processes it started."""

    root: Path
    env: dict[str, str]
    port: int
    server: ServerProcess
    api: httpx.Client
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def restart_server(self) -> None:
        self.server = launch_server(self.root / "data", self.port, self.env, self.server.password)

    def start_agent(
        self, name: str, server_url: str | None = None, capacity: int = 1
    ) -> subprocess.Popen[bytes]:
        created = self.api.post("/api/v1/agents", json={"name": name})
        assert created.status_code == 201, created.text
        home = self.root / name
        home.mkdir()
        with (home / "agent.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "agent",
                 "--server", server_url or self.server.url, "--token", created.json()["token"],
                 "--name", name, "--labels", "linux", "--capacity", str(capacity),
                 "--backend", "local", "--work-dir", str(home)],
                stdout=log, stderr=subprocess.STDOUT,
                # Its own process group: teardown also ends the steps it started.
                start_new_session=True,
            )  # fmt: skip
        self.agents[name] = process
        self.wait_for(lambda: self.agent(name)["status"] == "online", 30, f"agent {name} online")
        return process

    def agent(self, name: str) -> dict[str, Any]:
        listed = self.api.get("/api/v1/agents")
        assert listed.status_code == 200, listed.text
        return next(a for a in listed.json() if a["name"] == name)

    def agent_log(self, name: str) -> str:
        return (self.root / name / "agent.log").read_text(errors="replace")

    def project(self, name: str, pipeline: str, make_repo: Callable[..., Repo]) -> None:
        repo = make_repo({".conveyor.yml": pipeline})
        created = self.api.post("/api/v1/projects", json={"name": name, "git_url": repo.url})
        assert created.status_code == 201, created.text

    def trigger(self, project: str) -> int:
        triggered = self.api.post(f"/api/v1/projects/{project}/runs", json={"branch": "main"})
        assert triggered.status_code == 201, triggered.text
        run_id: int = triggered.json()["id"]
        return run_id

    def run(self, run_id: int) -> dict[str, Any]:
        got = self.api.get(f"/api/v1/runs/{run_id}")
        assert got.status_code == 200, got.text
        detail: dict[str, Any] = got.json()
        return detail

    def job(self, run_id: int) -> dict[str, Any]:
        [job] = self.run(run_id)["jobs"]
        return dict(job)

    def raw_log(self, step_id: int) -> str:
        raw = self.api.get(f"/api/v1/steps/{step_id}/log/raw")
        assert raw.status_code == 200, raw.text
        return raw.text

    def wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll until `ready()`; returns the seconds it took."""
        started = time.monotonic()
        while not ready():
            assert time.monotonic() - started < timeout, f"not {what} within {timeout} s"
            time.sleep(0.05)
        return time.monotonic() - started

    def wait_finished(self, run_id: int, timeout: float = 30) -> dict[str, Any]:
        self.wait_for(lambda: self.run(run_id)["finished_at"] is not None, timeout, "finished")
        return self.run(run_id)


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGCONT)  # a frozen agent cannot die otherwise
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def open_site(root: Path, lease: float, database_url: str | None = None) -> Iterator[Site]:
    env = {
        "CONVEYOR_LEASE_SECONDS": str(lease),
        "CONVEYOR_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        # A lost agent's job is due again at once (the default waits 10 s).
        "CONVEYOR_RETRY_BACKOFF_SECONDS": "0",
    }
    if database_url:
        env["CONVEYOR_DATABASE_URL"] = database_url
    port = free_port()
    server = launch_server(root / "data", port, env)
    site = Site(root, env, port, server, server.client())
    try:
        yield site
    finally:
        site.api.close()
        for process in site.agents.values():
            stop_process_group(process)
        site.server.process.kill()
        site.server.process.wait(timeout=10)


def numbered_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("line ")]


def wait_for_line(site: Site, run_id: int, line: str, timeout: float = 20) -> int:
    """Wait until the only step's stored log holds `line`; returns the step id."""

    def printed() -> bool:
        job = site.job(run_id)
        return bool(job["steps"]) and line in site.raw_log(job["steps"][0]["id"]).splitlines()

    site.wait_for(printed, timeout, f"{line!r} stored")
    step_id: int = site.job(run_id)["steps"][0]["id"]
    return step_id


class TestServerKilledMidRun:
    @pytest.mark.parametrize("database", ["sqlite", "postgresql"])
    def test_run_finishes_after_restart_with_every_line_stored_once(
        self, database: str, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        with (
            empty_database(database, tmp_path / "db") as database_url,
            open_site(tmp_path, lease=30, database_url=database_url) as site,
        ):
            site.start_agent("a")
            site.project("count", COUNTING_PIPELINE, make_repo)
            run_id = site.trigger("count")
            step_id = wait_for_line(site, run_id, "line 600")

            site.server.process.send_signal(signal.SIGKILL)
            site.server.process.wait(timeout=10)
            killed_at = time.monotonic()
            time.sleep(1.0)  # the step prints on meanwhile; the agent spools it
            site.restart_server()
            down_for = time.monotonic() - killed_at
            detail = site.wait_finished(run_id)
            finished_after = time.monotonic() - killed_at - down_for

            log = site.raw_log(step_id)
            stored = numbered_lines(log)
            figure = (
                f"server down for {down_for:.2f} s, run finished {finished_after:.2f} s after "
                f"restart, {len(stored)}/{LINES} lines ({database})"
            )
            print(f"\n{figure}")
            job = detail["jobs"][0]
            assert (detail["status"], job["attempts"]) == ("success", 1), (figure, job)
            assert stored == EXPECTED_LINES, figure
            # Nothing but the command's own line besides the numbered ones.
            assert len(log.splitlines()) == LINES + 1, figure


class TestLinkCutShorterThanTheLease:
    def test_nothing_is_requeued_or_doubled_and_the_run_succeeds(
        self, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        lease, cut_seconds = 8.0, 3.0
        with open_site(tmp_path, lease=lease) as site, TcpProxy(site.port) as proxy:
            proxy.watch(HEARTBEAT_REQUEST)
            site.start_agent("a", server_url=proxy.url)
            site.project("count", COUNTING_PIPELINE, make_repo)
            run_id = site.trigger("count")
            step_id = wait_for_line(site, run_id, "line 300")

            cut_at = time.monotonic()
            with proxy.cut_for(cut_seconds):
                pass
            restored_at = time.monotonic()
            detail = site.wait_finished(run_id)
            # A heartbeat stuck on a dead connection gives up after a quarter lease.
            site.wait_for(
                lambda: max(proxy.sightings(HEARTBEAT_REQUEST), default=0) >= restored_at,
                lease,
                "a heartbeat through after the cut",
            )

            beats = proxy.sightings(HEARTBEAT_REQUEST)
            stored = numbered_lines(site.raw_log(step_id))
            job = detail["jobs"][0]
            during_cut = [t for t in beats if cut_at < t < restored_at]
            first_after = min(t for t in beats if t >= restored_at)
            last_before = max(t for t in beats if t <= cut_at)
            figure = (
                f"cut for {restored_at - cut_at:.2f} s (heartbeat {HEARTBEAT_SECONDS} s, lease "
                f"{lease} s): {first_after - last_before:.2f} s between the last heartbeat "
                f"before and the first after, attempts {job['attempts']}, "
                f"{len(stored)}/{LINES} lines"
            )
            print(f"\n{figure}")
            assert during_cut == [], figure  # the proxy saw none through a dead link
            assert first_after - last_before < lease, figure
            assert (detail["status"], job["attempts"]) == ("success", 1), (figure, job)
            assert job["error_message"] is None, figure
            assert stored == EXPECTED_LINES, figure


class TestUploadCutInTheMiddle:
    def test_upload_resumes_from_the_servers_offset_and_the_hash_matches(
        self, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        with open_site(tmp_path, lease=8.0) as site, TcpProxy(site.port) as proxy:
            site.start_agent("a", server_url=proxy.url)
            site.project("blob", UPLOAD_PIPELINE, make_repo)
            cut_after = ARTIFACT_BYTES // 2
            # Logs, reports and heartbeats are a few KiB: the cut comes mid-upload.
            proxy.cut_after(cut_after)
            run_id = site.trigger("blob")
            assert proxy.cut_happened.wait(20), "the upload never reached the cut"
            bytes_before_cut = proxy.upstream_bytes
            time.sleep(1.0)
            proxy.restore()
            detail = site.wait_finished(run_id)

            job = detail["jobs"][0]
            assert detail["status"] == "success", job
            log = site.raw_log(job["steps"][0]["id"])
            [printed_sha256] = re.findall(r"^([0-9a-f]{64})  dist/blob.bin$", log, re.M)
            [artifact] = site.api.get(f"/api/v1/runs/{run_id}/artifacts").json()
            download = site.api.get(f"/api/v1/artifacts/{artifact['id']}/download")
            assert download.status_code == 200, download.text
            downloaded_sha256 = hashlib.sha256(download.content).hexdigest()
            resumed = [
                int(offset)
                for offset in re.findall(r"resumes at byte (\d+) of", site.agent_log("a"))
            ]
            figure = (
                f"{bytes_before_cut} bytes through the proxy before the cut, upload resumed "
                f"at byte {resumed}, total {len(download.content)} of {ARTIFACT_BYTES}, "
                f"sha256 match: {downloaded_sha256 == printed_sha256}"
            )
            print(f"\n{figure}")
            assert len(download.content) == artifact["size"] == ARTIFACT_BYTES, figure
            assert downloaded_sha256 == printed_sha256 == artifact["sha256"], figure
            assert download.headers["x-conveyor-sha256"] == printed_sha256, figure
            # It went on from what the server held, neither from the start nor past it.
            assert resumed and 0 < resumed[0] < ARTIFACT_BYTES, figure
            assert resumed[0] <= bytes_before_cut, figure
            assert job["attempts"] == 1, figure


class LogViewer:
    """Follows one step's log over a real WebSocket, in a thread, until its end."""

    def __init__(self, site: Site, run_id: int, step_id: int) -> None:
        created = site.api.post("/api/v1/user/tokens", json={"name": f"viewer-{step_id}"})
        assert created.status_code == 201, created.text
        self.url = (
            site.server.url.replace("http://", "ws://")
            + f"/api/v1/runs/{run_id}/logs/ws?step={step_id}&token={created.json()['token']}"
        )
        self.received: list[dict[str, Any]] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        try:
            with connect(self.url) as connection:
                while True:
                    message = json.loads(connection.recv(timeout=60))
                    self.received.append(message)
                    if message["type"] in ("end", "error"):
                        return
        except BaseException as failure:  # reported by `messages`
            self.failure = failure

    def messages(self, timeout: float) -> list[dict[str, Any]]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"no end within {timeout} s: {self.received[-3:]}"
        assert self.failure is None, self.failure
        return self.received


@dataclass
class FrozenAgentOutcome:
    figure: str
    run_before_thaw: dict[str, Any]
    run_after_thaw: dict[str, Any]
    log_before_thaw: str
    log_after_thaw: str
    step_pid_alive_before_thaw: bool
    agent_alive: bool
    agent_log: str
    viewer_messages: list[dict[str, Any]]
    """What a viewer of the step's log got, from before the freeze to the end."""
    page_rows: list[str]
    """The step's log rows on the run's page, open since before the freeze."""
    page_line_count: str


@pytest.fixture(scope="class")
def run_page() -> Iterator[Callable[[Site, int], Any]]:
    """Opens a run's page in Chromium, signed in as the site's admin."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )

        def open_page(site: Site, run_id: int) -> Any:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(site.server.url + "/ui/sign-in")
            page.get_by_label("Name").fill("admin")
            page.get_by_label("Password").fill(site.server.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"^(?!.*/ui/sign-in).*$"))
            page.goto(f"{site.server.url}/ui/runs/{run_id}")
            return page

        yield open_page
        browser.close()


@pytest.fixture(scope="class")
def frozen_agent(
    tmp_path_factory: pytest.TempPathFactory, run_page: Callable[[Site, int], Any]
) -> FrozenAgentOutcome:
    """Agent "frozen" runs the first attempt and is SIGSTOPped for longer than the
    lease; agent "healthy" runs the re-run to its end; then "frozen" gets SIGCONT.
    A viewer follows the step's log over a WebSocket, and the run's page in Chromium
    shows it, from before the freeze to the end."""
    lease = 3.0
    root = tmp_path_factory.mktemp("frozen")
    marker, pid_file = root / "first-attempt", root / "step.pid"
    with open_site(root, lease=lease) as site:
        frozen = site.start_agent("frozen")
        repo = make_committed_repo(
            root / "repo",
            {
                ".conveyor.yml": FROZEN_PIPELINE.format(
                    marker=marker, pid_file=pid_file, rerun_nap=0
                )
            },
        )
        created = site.api.post("/api/v1/projects", json={"name": "slow", "git_url": repo.url})
        assert created.status_code == 201, created.text
        run_id = site.trigger("slow")
        step_id = wait_for_line(site, run_id, "first attempt 5")
        viewer = LogViewer(site, run_id, step_id)
        page = run_page(site, run_id)
        page_log = page.locator("details.step[open]").last
        page_log.locator(".log-row", has_text=re.compile(r"first attempt 5$")).wait_for()
        step_pid = int(pid_file.read_text())
        [workspace] = (root / "frozen" / "work").glob("job-*-1")

        os.kill(frozen.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        site.start_agent("healthy")
        requeued_after = site.wait_for(
            lambda: site.job(run_id)["attempts"] == 2, lease * 4 + 20, "requeued"
        )
        site.wait_for(lambda: site.job(run_id)["agent"] == "healthy", 20, "claimed by healthy")
        run_before_thaw = site.wait_finished(run_id)
        log_before_thaw = site.raw_log(step_id)
        viewer_messages = viewer.messages(timeout=20)
        page_log.locator(".log-row", has_text=re.compile(r"re-run done$")).wait_for()
        page_rows = page_log.locator(".log-row").all_inner_texts()
        page_line_count = page_log.locator("[data-line-count]").inner_text()
        # The frozen agent's step printed on all this time (into a pipe nobody reads).
        step_pid_alive_before_thaw = Path(f"/proc/{step_pid}").exists()

        os.kill(frozen.pid, signal.SIGCONT)
        frozen_for = time.monotonic() - stopped_at
        step_gone_after = site.wait_for(
            lambda: not Path(f"/proc/{step_pid}").exists(), 15, "the stale step stopped"
        )
        workspace_gone_after = step_gone_after + site.wait_for(
            lambda: not workspace.exists(), 15, "the stale workspace removed"
        )
        # Whatever it still had to send has been tried by now.
        site.wait_for(lambda: "refused" in site.agent_log("frozen"), 15, "its reports refused")
        time.sleep(HEARTBEAT_SECONDS * 2)
        return FrozenAgentOutcome(
            figure=(
                f"agent frozen for {frozen_for:.2f} s (lease {lease} s, heartbeat "
                f"{HEARTBEAT_SECONDS} s): job requeued {requeued_after:.2f} s after the "
                f"freeze; after SIGCONT its step was gone in {step_gone_after:.2f} s and its "
                f"workspace in {workspace_gone_after:.2f} s"
            ),
            run_before_thaw=run_before_thaw,
            run_after_thaw=site.run(run_id),
            log_before_thaw=log_before_thaw,
            log_after_thaw=site.raw_log(step_id),
            step_pid_alive_before_thaw=step_pid_alive_before_thaw,
            agent_alive=frozen.poll() is None,
            agent_log=site.agent_log("frozen"),
            viewer_messages=viewer_messages,
            page_rows=page_rows,
            page_line_count=page_line_count,
        )


def make_committed_repo(path: Path, files: dict[str, str]) -> Repo:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    repo = Repo(path)
    for name, content in files.items():
        repo.write(name, content)
    repo.commit("initial commit")
    return repo


class TestAgentFrozenLongerThanTheLease:
    def test_returning_agent_stops_its_stale_step_and_removes_its_workspace(
        self, frozen_agent: FrozenAgentOutcome
    ) -> None:
        print(f"\n{frozen_agent.figure}")
        # Measured in the fixture: the step was alive at SIGCONT, gone and its workspace
        # removed within the waits there (which fail the fixture otherwise).
        assert frozen_agent.step_pid_alive_before_thaw, frozen_agent.figure
        assert frozen_agent.agent_alive, frozen_agent.agent_log[-3000:]

    def test_returning_agent_changes_nothing_of_the_rerun(
        self, frozen_agent: FrozenAgentOutcome
    ) -> None:
        job = frozen_agent.run_after_thaw["jobs"][0]
        assert (job["status"], job["attempts"], job["agent"]) == ("success", 2, "healthy"), job
        assert frozen_agent.run_after_thaw == frozen_agent.run_before_thaw
        assert frozen_agent.log_after_thaw == frozen_agent.log_before_thaw

    def test_rerun_log_holds_what_the_rerun_printed(self, frozen_agent: FrozenAgentOutcome) -> None:
        lines = frozen_agent.log_after_thaw.splitlines()
        assert lines[1:] == ["re-run done"], lines

    def test_a_log_viewer_is_told_the_log_began_again_and_gets_the_rerun(
        self, frozen_agent: FrozenAgentOutcome
    ) -> None:
        messages = frozen_agent.viewer_messages
        restarts = [i for i, message in enumerate(messages) if message["type"] == "restart"]
        assert len(restarts) == 1, messages
        restart = restarts[0]
        assert messages[restart]["attempt"] == 2

        def lines(part: list[dict[str, Any]]) -> list[str]:
            return [line for m in part if m["type"] == "lines" for line in m["lines"]]

        assert "first attempt 5" in lines(messages[:restart])
        after = [m for m in messages[restart + 1 :] if m["type"] == "lines"]
        assert after and after[0]["start"] == 0, after
        assert lines(after) == frozen_agent.log_after_thaw.splitlines()
        assert messages[-1] == {"type": "end", "status": "success"}

    def test_the_run_page_shows_the_rerun_log_alone(self, frozen_agent: FrozenAgentOutcome) -> None:
        rows = frozen_agent.page_rows
        # A line of the first attempt ("first attempt N"), not the command that prints them.
        assert any(row.endswith("re-run done") for row in rows), rows
        assert not any(re.search(r"first attempt \d+$", row) for row in rows), rows
        assert frozen_agent.page_line_count == str(len(frozen_agent.log_after_thaw.splitlines()))


BUSY_LOG_LINES = 100_000
# 7z of random bytes: a few seconds of packing for a few MiB.
BUSY_ARTIFACT_BYTES = 4 * 1024 * 1024
BUSY_PIPELINE = f"""\
steps:
  - name: busy
    commands:
      - seq 1 {BUSY_LOG_LINES}
      - mkdir -p dist && head -c {BUSY_ARTIFACT_BYTES} /dev/urandom > dist/blob.bin
artifacts: {{paths: ["dist/*"], archive: 7z, hash: sha256}}
"""


class TestHeartbeatsOfABusyAgent:
    def test_heartbeats_keep_their_pace_while_logs_flood_and_artifacts_are_packed(
        self, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        with open_site(tmp_path, lease=10.0) as site, TcpProxy(site.port) as proxy:
            proxy.watch(HEARTBEAT_REQUEST)
            site.start_agent("a", server_url=proxy.url)
            site.project("busy", BUSY_PIPELINE, make_repo)
            run_id = site.trigger("busy")
            started = time.monotonic()
            detail = site.wait_finished(run_id)
            finished = time.monotonic()
            beats = [t for t in proxy.sightings(HEARTBEAT_REQUEST) if started <= t <= finished]
            gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
            longest = max(gaps, default=finished - started)
            figure = (
                f"{len(beats)} heartbeats in {finished - started:.2f} s of a job printing "
                f"{BUSY_LOG_LINES} lines and packing {BUSY_ARTIFACT_BYTES >> 20} MiB: longest "
                f"gap {longest:.2f} s (interval {HEARTBEAT_SECONDS} s)"
            )
            print(f"\n{figure}")
            assert detail["status"] == "success", (figure, detail["jobs"])
            # An answer takes a few ms; a gap of 1.5 s means the agent's loop was blocked.
            assert longest < HEARTBEAT_SECONDS + 1.0, figure


class TestAgentFrozenUntilItsJobCameBackToIt:
    def test_new_attempt_of_the_same_job_runs_to_its_end_beside_the_stopping_stale_one(
        self, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        """The only agent (2 slots) is frozen past its lease; its pending claim is
        answered with the re-run of the very job it still runs. The stale attempt stops;
        the new one, longer than a lease, keeps its lease and succeeds."""
        lease = 3.0
        marker, pid_file = tmp_path / "first-attempt", tmp_path / "step.pid"
        pipeline = FROZEN_PIPELINE.format(marker=marker, pid_file=pid_file, rerun_nap=lease * 1.5)
        with open_site(tmp_path, lease=lease) as site:
            agent = site.start_agent("only", capacity=2)
            site.project("slow", pipeline, make_repo)
            run_id = site.trigger("slow")
            wait_for_line(site, run_id, "first attempt 5")
            step_pid = int(pid_file.read_text())

            os.kill(agent.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            # Its claim, pending since before the freeze, takes the re-run meanwhile.
            site.wait_for(lambda: site.job(run_id)["attempts"] == 2, lease * 3, "re-claimed")
            os.kill(agent.pid, signal.SIGCONT)
            frozen_for = time.monotonic() - stopped_at
            step_gone_after = site.wait_for(
                lambda: not Path(f"/proc/{step_pid}").exists(), 15, "the stale step stopped"
            )
            detail = site.wait_finished(run_id)
            job = detail["jobs"][0]
            figure = (
                f"agent frozen for {frozen_for:.2f} s (lease {lease} s); its stale step gone "
                f"{step_gone_after:.2f} s after SIGCONT; the re-run on the same agent ended "
                f"{job['status']} (attempt {job['attempts']})"
            )
            print(f"\n{figure}")
            assert (job["status"], job["attempts"], job["agent"]) == ("success", 2, "only"), (
                figure,
                job,
                site.agent_log("only")[-3000:],
            )
            assert "attempt 2 replaces the one still running here" in site.agent_log("only")
