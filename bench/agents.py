"""Remote agent benchmark: a real `conveyor server --agents 0` process and real
`conveyor agent` processes (local backend) on 127.0.0.1.

    python bench/agents.py [--claims 100] [--queued 500] [--agents 4] [--capacity 4]

Prints:
(a) time from a job queued (the run's created_at) to its claim (the job's started_at)
    by an idle remote agent, median and p95 over N one-step jobs run one after the
    other (target: < 50 ms);
(b) completed one-step jobs per second: N jobs queued while no agent runs, then 4
    remote agents of capacity 4 started (rate from the first job's start to the last
    one's end, and wall time from starting the agents);
(c) the cost of one claim against the length of the queue: in this process, on a fresh
    SQLite database (and PostgreSQL with --postgres-url), the median time of a claim of
    4 jobs with 100, 500 and 2,000 jobs queued (target: the same for every length).
    Less noisy than (b) on a busy machine: it times the server's claim alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import make_url

from conveyor.pipeline.plan import JobPlan, StepPlan
from conveyor.server.agents import repository, service
from conveyor.server.config import Settings
from conveyor.server.db.engine import create_database_engine, create_session_factory
from conveyor.server.db.migrate import upgrade_engine
from conveyor.server.models import Agent, Job, Project, Run, Step

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


def get_json(api: httpx.Client, path: str, params: dict[str, str] | None = None) -> Any:
    """GET with a few retries: under full load a SQLite server may answer one status
    poll with a 500 ("database is locked" while it records the token's use) or drop
    the connection; the benchmark measures the agents, not that poll."""
    for attempt in range(5):
        try:
            response = api.get(path, params=params)
            if response.status_code < 500:
                response.raise_for_status()
                return response.json()
            problem = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            problem = repr(exc)
        print(f"    (poll {path} failed, attempt {attempt + 1}: {problem})", file=sys.stderr)
        time.sleep(0.5)
    raise SystemExit(f"GET {path} kept failing; see the server's log")


def wait_online(api: httpx.Client, names: set[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        online = {a["name"] for a in get_json(api, "/api/v1/agents") if a["status"] == "online"}
        if names <= online:
            return
        time.sleep(0.05)
    raise SystemExit(f"agents {sorted(names)} did not come online within 60 s")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def wait_run(api: httpx.Client, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        detail: dict[str, Any] = get_json(api, f"/api/v1/runs/{run_id}")
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
            waiting = get_json(api, "/api/v1/runs", {"project": "many", "status": "queued"})
            running = get_json(api, "/api/v1/runs", {"project": "many", "status": "running"})
            if waiting["total"] == 0 and running["total"] == 0:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - started
    finally:
        for process in processes:
            process.stop()
    runs = [get_json(api, f"/api/v1/runs/{i}") for i in ids]
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


@contextlib.contextmanager
def fresh_postgres(base_url: str) -> Iterator[str]:
    """A new PostgreSQL database next to `base_url`'s, dropped afterwards."""
    name = f"conveyor_bench_{secrets.token_hex(4)}"
    conninfo = make_url(base_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def time_claims(url: str, data_dir: Path, queued: int, claims: int) -> float:
    """Median seconds of one claim of 4 jobs, `queued` (topped up) jobs in the queue."""
    engine = create_database_engine(url)
    try:
        upgrade_engine(engine)
        factory = create_session_factory(engine)
        plan = JobPlan(name="one", steps=[StepPlan(name="one", commands=["true"])])
        with factory.begin() as session:
            project = Project(name="claims", git_url="file:///nowhere")
            agent = Agent(name="claimer", labels=["linux"], capacity=10**6)
            session.add_all([project, agent])
            session.flush()
            for number in range(queued + claims * 4):
                run = Run(project_id=project.id, number=number + 1, event="api",
                          branch="main", commit_sha="0" * 40)  # fmt: skip
                session.add(run)
                session.flush()
                job = Job(run_id=run.id, name="one", plan=plan.model_dump(mode="json"),
                          labels=[], queued_at=datetime.now(UTC))  # fmt: skip
                session.add(job)
                session.flush()
                session.add(Step(job_id=job.id, index=0, name="one"))
            agent_id = agent.id
        with engine.begin() as connection:
            # Statistics as autovacuum (PostgreSQL) would have them by now: without,
            # PostgreSQL guesses a queue of a few rows and sorts rather than use the index.
            connection.exec_driver_sql("ANALYZE")
        settings = Settings(data_dir=data_dir, database_url=url, agents=0)
        seconds: list[float] = []
        for _ in range(claims):
            began = time.perf_counter()
            with repository.open_write_session(factory) as session:
                taken = service.claim(session, settings, agent_id, 4)
                session.commit()
            seconds.append(time.perf_counter() - began)
            assert len(taken.jobs) == 4, taken
        return statistics.median(seconds)
    finally:
        engine.dispose()


def bench_claim_cost(root: Path, postgres_url: str | None, claims: int) -> None:
    print(f"(c) one claim of 4 jobs against the queue's length, median of {claims} claims")
    sizes = (100, 500, 2000)
    kinds = ["sqlite"] + (["postgresql"] if postgres_url else [])
    for kind in kinds:
        figures: list[str] = []
        for size in sizes:
            data_dir = root / f"claims-{kind}-{size}"
            if kind == "sqlite":
                median = time_claims(f"sqlite:///{data_dir / 'db.sqlite'}", data_dir, size, claims)
            else:
                assert postgres_url is not None
                with fresh_postgres(postgres_url) as url:
                    median = time_claims(url, data_dir, size, claims)
            figures.append(f"{size:5d} queued: {median * 1000:6.2f} ms")
        print(f"    {kind:10s} " + "   ".join(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--claims", type=int, default=100, help="jobs timed in part (a)")
    parser.add_argument("--queued", type=int, default=500, help="jobs queued in part (b)")
    parser.add_argument("--agents", type=int, default=4, help="agent processes in part (b)")
    parser.add_argument("--capacity", type=int, default=4, help="capacity of each, part (b)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="part (c) on PostgreSQL too: a server to make a database in",
    )
    parser.add_argument("--only", default="latency,throughput,claims")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-agents-") as tmp:
        root = Path(tmp)
        if "claims" in parts:
            bench_claim_cost(root, args.postgres_url, claims=40)
        if not parts & {"latency", "throughput"}:
            return
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
