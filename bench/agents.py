"""Remote agent benchmark: a real `conveyor server --agents 0` process and real
`conveyor agent` processes (local backend) on 127.0.0.1.

    python bench/agents.py [--claims 100] [--queued 500] [--agents 4] [--capacity 4]

Prints:
(a) time from a job queued (the run's created_at) to its claim (the job's started_at)
    by an idle remote agent, median and p95 over N one-step jobs run one after the
    other (target: < 50 ms);
(b) completed one-step jobs per second: N jobs queued while no agent runs, then 4
    remote agents of capacity 4 started (rate from the first job's start to the last
    one's end, and wall time from starting the agents).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

# bench/ is on sys.path when this file runs as a script: reuse the server benchmark's
# process and repository helpers.
from server import Server, make_repo, percentile, sign_in  # type: ignore[import-not-found]

ONE_STEP = """\
steps:
  - name: one
    commands: ["echo job $CI_JOB_ID"]
"""


class AgentProcess:
    """One `conveyor agent` process with its own token, name and work directory."""

    def __init__(self, api: httpx.Client, url: str, name: str, capacity: int, home: Path) -> None:
        created = api.post("/api/v1/agents", json={"name": name})
        created.raise_for_status()
        home.mkdir(parents=True)
        self.log = (home / "agent.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "agent", "--server", url,
             "--token", created.json()["token"], "--name", name, "--labels", "linux",
             "--capacity", str(capacity), "--backend", "local", "--work-dir", str(home)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def wait_online(api: httpx.Client, names: set[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        online = {a["name"] for a in api.get("/api/v1/agents").json() if a["status"] == "online"}
        if names <= online:
            return
        time.sleep(0.05)
    raise SystemExit(f"agents {sorted(names)} did not come online within 60 s")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def wait_run(api: httpx.Client, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        detail: dict[str, Any] = api.get(f"/api/v1/runs/{run_id}").json()
        if detail["finished_at"] is not None:
            return detail
        time.sleep(0.01)
    raise SystemExit(f"run {run_id} did not finish within 60 s")


def bench_claim_latency(
    server: Server, api: httpx.Client, repo: str, jobs: int, root: Path
) -> None:
    api.post("/api/v1/projects", json={"name": "claims", "git_url": repo}).raise_for_status()
    agent = AgentProcess(api, server.url, "idle", 1, root / "idle")
    try:
        wait_online(api, {"idle"})
        waited: list[float] = []
        for i in range(jobs + 3):
            run = api.post("/api/v1/projects/claims/runs", json={"branch": "main"}).json()
            detail = wait_run(api, run["id"])
            [job] = detail["jobs"]
            if detail["status"] != "success":
                raise SystemExit(f"run {detail['number']} ended {detail['status']}: {job}")
            if i >= 3:  # the first jobs warm the agent's git mirror
                waited.append((at(job["started_at"]) - at(detail["created_at"])).total_seconds())
    finally:
        agent.stop()
    median, p95 = statistics.median(waited) * 1000, percentile(waited, 95) * 1000
    print(f"(a) queued -> claimed by an idle remote agent, {jobs} one-step jobs")
    print(
        f"    median {median:7.1f} ms   p95 {p95:7.1f} ms   max {max(waited) * 1000:7.1f} ms"
        "   (target: < 50 ms)"
    )


def bench_throughput(
    server: Server, api: httpx.Client, repo: str, queued: int, agents: int, capacity: int,
    root: Path,
) -> None:  # fmt: skip
    api.post("/api/v1/projects", json={"name": "many", "git_url": repo}).raise_for_status()
    # No agent is online: every job waits in the queue until the agents start.
    ids = [
        api.post("/api/v1/projects/many/runs", json={"branch": "main"}).json()["id"]
        for _ in range(queued)
    ]
    started = time.perf_counter()
    processes = [
        AgentProcess(api, server.url, f"worker-{n}", capacity, root / f"worker-{n}")
        for n in range(agents)
    ]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            waiting = api.get("/api/v1/runs", params={"project": "many", "status": "queued"})
            running = api.get("/api/v1/runs", params={"project": "many", "status": "running"})
            if waiting.json()["total"] == 0 and running.json()["total"] == 0:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - started
    finally:
        for process in processes:
            process.stop()
    runs = [api.get(f"/api/v1/runs/{i}").json() for i in ids]
    bad = [r["status"] for r in runs if r["status"] != "success"]
    if bad:
        raise SystemExit(f"{len(bad)} runs did not succeed: {bad[:5]}")
    per_agent: dict[str, int] = {}
    for run in runs:
        name = run["jobs"][0]["agent"]
        per_agent[name] = per_agent.get(name, 0) + 1
    # The jobs' own times: a run's times also cover the queueing before the agents ran.
    first = min(at(r["jobs"][0]["started_at"]) for r in runs)
    last = max(at(r["jobs"][0]["finished_at"]) for r in runs)
    seconds = (last - first).total_seconds()
    print(f"(b) {queued} queued one-step jobs, {agents} remote agents of capacity {capacity}")
    print(
        f"    {queued / seconds:7.1f} jobs/s completed ({seconds:.2f} s from first start to "
        f"last end; {wall:.2f} s wall from starting the agents)"
    )
    print(f"    jobs per agent: {dict(sorted(per_agent.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--claims", type=int, default=100, help="jobs timed in part (a)")
    parser.add_argument("--queued", type=int, default=500, help="jobs queued in part (b)")
    parser.add_argument("--agents", type=int, default=4, help="agent processes in part (b)")
    parser.add_argument("--capacity", type=int, default=4, help="capacity of each, part (b)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--only", default="latency,throughput")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-agents-") as tmp:
        root = Path(tmp)
        repo = make_repo(root / "repos", "one-step", ONE_STEP)
        server = Server(root / "data", agents=0, database_url=args.database_url)
        try:
            assert server.password is not None
            api, _ = sign_in(server.url, server.password)
            print(f"server {server.url} (--agents 0), {os.cpu_count()} cores")
            if "latency" in parts:
                bench_claim_latency(server, api, repo, args.claims, root)
            if "throughput" in parts:
                bench_throughput(server, api, repo, args.queued, args.agents, args.capacity, root)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
