"""`conveyor server --agents 0` and three `conveyor agent` processes on 127.0.0.1, as a
user runs them: labels route jobs, capacity is never exceeded, priority orders the
queue, and a SIGKILLed agent's job runs again on another agent."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_server_process import ServerProcess, free_port
from tests.fixtures.gitrepos import Repo

# A lost agent's lease runs out after LEASE_SECONDS without a heartbeat.
LEASE_SECONDS = 6
HEARTBEAT_SECONDS = 0.5

AGENTS = {"a": ("linux", 1), "b": ("linux,gpu", 2), "c": ("arm", 1)}

PIPELINE = """\
{labels}
steps:
  - name: work
    commands:
      - sleep {nap}
      - echo "job $CI_JOB_ID"
"""

# The first attempt sleeps long enough to be killed; the retry finds the marker.
KILLED_PIPELINE = """\
labels: [linux]
steps:
  - name: long
    commands:
      - if [ ! -e {marker} ]; then touch {marker}; sleep 20; fi
      - echo "job $CI_JOB_ID"
"""


@dataclass
class Cluster:
    server: ServerProcess
    api: httpx.Client
    agents: dict[str, subprocess.Popen[bytes]]

    def project(self, name: str, pipeline: str, make_repo: Callable[..., Repo]) -> None:
        repo = make_repo({".conveyor.yml": pipeline})
        created = self.api.post("/api/v1/projects", json={"name": name, "git_url": repo.url})
        assert created.status_code == 201, created.text

    def trigger(self, project: str, priority: int = 0) -> dict[str, Any]:
        triggered = self.api.post(
            f"/api/v1/projects/{project}/runs", json={"branch": "main", "priority": priority}
        )
        assert triggered.status_code == 201, triggered.text
        run: dict[str, Any] = triggered.json()
        return run

    def detail(self, run_id: int) -> dict[str, Any]:
        got = self.api.get(f"/api/v1/runs/{run_id}")
        assert got.status_code == 200, got.text
        detail: dict[str, Any] = got.json()
        return detail

    def wait_finished(self, run_ids: list[int], timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            details = [self.detail(run_id) for run_id in run_ids]
            if all(d["finished_at"] is not None for d in details):
                return details
            assert time.monotonic() < deadline, [
                (d["id"], d["status"], [j["status"] for j in d["jobs"]]) for d in details
            ]
            time.sleep(0.1)


def start_agent(
    url: str, token: str, name: str, labels: str, capacity: int, home: Path
) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True)
    with (home / "agent.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", "agent", "--server", url, "--token", token,
             "--name", name, "--labels", labels, "--capacity", str(capacity),
             "--backend", "local", "--work-dir", str(home)],
            stdout=log, stderr=subprocess.STDOUT,
            # Its own process group: teardown also kills the steps a killed agent left.
            start_new_session=True,
        )  # fmt: skip


def kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("agents")
    server = start_server_with_no_agents(root / "data")
    agents: dict[str, subprocess.Popen[bytes]] = {}
    api = None
    try:
        api = server.client()
        for name, (labels, capacity) in AGENTS.items():
            created = api.post("/api/v1/agents", json={"name": name})
            assert created.status_code == 201, created.text
            token = created.json()["token"]
            agents[name] = start_agent(server.url, token, name, labels, capacity, root / name)
        deadline = time.monotonic() + 30
        while True:
            listed = {a["name"]: a for a in api.get("/api/v1/agents").json()}
            if all(listed.get(name, {}).get("status") == "online" for name in AGENTS):
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.1)
        assert {name: (sorted(a["labels"]), a["capacity"]) for name, a in listed.items()} == {
            name: (sorted(labels.split(",")), capacity)
            for name, (labels, capacity) in AGENTS.items()
        }
        yield Cluster(server, api, agents)
    finally:
        if api is not None:
            api.close()
        for process in agents.values():
            kill_group(process)
        server.process.kill()
        server.process.wait(timeout=10)


def start_server_with_no_agents(data_dir: Path) -> ServerProcess:
    """`conveyor server --agents 0` (every job must go to a remote agent) with a short
    lease and back-off, so that a lost agent's job runs again within seconds."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "server", "--port", str(port),
         "--data-dir", str(data_dir), "--agents", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CONVEYOR_LEASE_SECONDS": str(LEASE_SECONDS),
             "CONVEYOR_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
             # A short back-off: the lost agent's job is claimable again 1 s after requeue.
             "CONVEYOR_RETRY_BACKOFF_SECONDS": "1"},
    )  # fmt: skip
    return _await_start(process, port, data_dir)


def _await_start(process: subprocess.Popen[str], port: int, data_dir: Path) -> ServerProcess:
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
    # Keep draining its output so that a full pipe never blocks the server.
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    return ServerProcess(f"http://127.0.0.1:{port}", process, password, output, data_dir)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals open at one instant (an end at the same
    instant as a start does not overlap it)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, change in events:
        open_now += change
        peak = max(peak, open_now)
    return peak


class TestLabelsAndCapacity:
    def test_jobs_go_only_to_agents_with_their_labels_and_never_beyond_capacity(
        self, cluster: Cluster, make_repo: Callable[..., Repo]
    ) -> None:
        cluster.project("gpu", PIPELINE.format(labels="labels: [gpu]", nap=1), make_repo)
        cluster.project("arm", PIPELINE.format(labels="labels: [arm]", nap=1), make_repo)
        cluster.project("linux", PIPELINE.format(labels="labels: [linux]", nap=1), make_repo)
        cluster.project("any", PIPELINE.format(labels="", nap=0.5), make_repo)
        kinds = ["gpu"] * 4 + ["arm"] * 2 + ["linux"] * 3 + ["any"] * 3
        runs = [(kind, cluster.trigger(kind)["id"]) for kind in kinds]
        details = cluster.wait_finished([run_id for _, run_id in runs])

        allowed = {"gpu": {"b"}, "arm": {"c"}, "linux": {"a", "b"}, "any": {"a", "b", "c"}}
        intervals: dict[str, list[tuple[datetime, datetime]]] = {name: [] for name in AGENTS}
        for (kind, _), detail in zip(runs, details, strict=True):
            [job] = detail["jobs"]
            assert job["status"] == "success", job
            assert job["agent"] in allowed[kind], (kind, job["agent"])
            intervals[job["agent"]].append((at(job["started_at"]), at(job["finished_at"])))
        peaks = {name: most_at_once(spans) for name, spans in intervals.items()}
        print(f"\njobs per agent: { {n: len(s) for n, s in intervals.items()} }; peaks {peaks}")
        for name, (_, capacity) in AGENTS.items():
            assert peaks[name] <= capacity, (name, intervals[name])
        # Four one-second gpu jobs on b (capacity 2): b did run two at once.
        assert peaks["b"] == 2, intervals["b"]


class TestPriority:
    def test_higher_priority_job_is_taken_before_an_older_lower_priority_one(
        self, cluster: Cluster, make_repo: Callable[..., Repo]
    ) -> None:
        cluster.project("arm-busy", PIPELINE.format(labels="labels: [arm]", nap=2), make_repo)
        cluster.project("arm-short", PIPELINE.format(labels="labels: [arm]", nap=0), make_repo)
        busy = cluster.trigger("arm-busy")["id"]
        deadline = time.monotonic() + 15
        while cluster.detail(busy)["jobs"][0]["status"] != "running":
            assert time.monotonic() < deadline, cluster.detail(busy)
            time.sleep(0.05)
        # c (arm, capacity 1) is busy: both wait in the queue, the low one first.
        low = cluster.trigger("arm-short", priority=0)["id"]
        high = cluster.trigger("arm-short", priority=10)["id"]
        assert cluster.detail(low)["jobs"][0]["status"] == "queued"
        busy_job, low_job, high_job = (
            d["jobs"][0] for d in cluster.wait_finished([busy, low, high])
        )
        assert [j["agent"] for j in (busy_job, low_job, high_job)] == ["c", "c", "c"]
        assert at(low_job["queued_at"]) < at(high_job["queued_at"])
        assert at(busy_job["finished_at"]) <= at(high_job["started_at"])
        assert at(high_job["finished_at"]) <= at(low_job["started_at"])


class TestLostAgent:
    def test_job_of_a_killed_agent_runs_again_on_another_matching_agent(
        self, cluster: Cluster, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        marker = tmp_path / "first-attempt-started"
        cluster.project("lost", KILLED_PIPELINE.format(marker=marker), make_repo)
        run_id = cluster.trigger("lost")["id"]
        deadline = time.monotonic() + 15
        while not marker.exists() or cluster.detail(run_id)["jobs"][0]["agent"] is None:
            assert time.monotonic() < deadline, cluster.detail(run_id)
            time.sleep(0.05)
        first = cluster.detail(run_id)["jobs"][0]
        assert first["status"] == "running" and first["attempts"] == 1
        victim = first["agent"]
        assert victim in {"a", "b"}

        cluster.agents[victim].send_signal(signal.SIGKILL)
        cluster.agents[victim].wait(timeout=10)
        killed_at = time.monotonic()
        requeued_after = rerun_after = None
        deadline = killed_at + LEASE_SECONDS * 4 + 15
        while True:
            job = cluster.detail(run_id)["jobs"][0]
            now = time.monotonic() - killed_at
            if requeued_after is None and (job["status"] == "queued" or job["attempts"] == 2):
                requeued_after = now
            if rerun_after is None and job["attempts"] == 2 and job["started_at"]:
                rerun_after = now
            if job["finished_at"] is not None:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        print(
            f"\nagent {victim} SIGKILLed: job requeued after {requeued_after:.2f} s, "
            f"running again after {rerun_after:.2f} s, finished after {now:.2f} s "
            f"(lease {LEASE_SECONDS} s, heartbeat {HEARTBEAT_SECONDS} s)"
        )
        assert job["status"] == "success", job
        assert job["attempts"] == 2
        assert job["agent"] in {"a", "b"} - {victim}
        assert requeued_after is not None and requeued_after >= LEASE_SECONDS - 1
        # Offline once nothing was heard from it for a lease (its last claim may be later
        # than its last heartbeat, so this can trail the requeue a little).
        deadline = time.monotonic() + LEASE_SECONDS * 2
        while True:
            listed = {a["name"]: a for a in cluster.api.get("/api/v1/agents").json()}
            if listed[victim]["status"] == "offline":
                break
            assert time.monotonic() < deadline, listed[victim]
            time.sleep(0.1)
