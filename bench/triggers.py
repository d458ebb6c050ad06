"""Webhook benchmark: a real `conveyor server` process with its embedded local agent.

    python bench/triggers.py [--deliveries 100] [--database-url URL]

For each of N signed push deliveries (the generic provider, a one-step `echo` pipeline)
it measures the time from the POST to its 202 answer, and from the POST to the run's
first log line as a viewer following `/jobs/{id}/ws` receives it; then prints the
median and p95 of both. Each run ends before the next delivery, so no queue builds up.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import Server, make_repo, percentile, sign_in

PIPELINE = "steps:\n  - name: hello\n    commands: [echo first line]\n"


async def first_line_and_end(url: str, job_id: int, token: str) -> float:
    """The moment (perf_counter) the first log line arrived; returns after the job ends."""
    ws_url = url.replace("http://", "ws://") + f"/jobs/{job_id}/ws?token={token}"
    first: float | None = None
    async with websockets.connect(ws_url, max_size=None, compression=None) as ws:
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "lines" and message["lines"] and first is None:
                first = time.perf_counter()
            elif message["type"] == "end":
                if first is None:
                    raise SystemExit(f"job {job_id} ended {message['status']} without a line")
                return first


def newest_run_after(api: httpx.Client, previous: int, deadline: float) -> dict[str, object]:
    while time.monotonic() < deadline:
        page = api.get("/api/v1/runs", params={"project": "hooks", "per_page": 1}).json()
        if page["items"] and page["items"][0]["id"] > previous:
            run: dict[str, object] = api.get(f"/api/v1/runs/{page['items'][0]['id']}").json()
            return run
        time.sleep(0.002)
    raise SystemExit("no run appeared within the deadline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=100)
    parser.add_argument("--database-url", default=None)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-triggers-") as tmp:
        root = Path(tmp)
        repo_url = make_repo(root, "repo", PIPELINE)
        sha = (
            Path(repo_url.removeprefix("file://"))
            .joinpath(".git/refs/heads/main")
            .read_text()
            .strip()
        )
        server = Server(root / "data", agents=1, database_url=options.database_url)
        try:
            assert server.password
            api, token = sign_in(server.url, server.password)
            api.post(
                "/api/v1/projects", json={"name": "hooks", "git_url": repo_url}
            ).raise_for_status()
            secret = api.get("/api/v1/projects/hooks/webhook").json()["secret"]
            hooks = httpx.Client(base_url=server.url, timeout=30)
            to_answer: list[float] = []
            to_first_line: list[float] = []
            previous = 0
            warm_up = 3  # the first deliveries clone the mirror and warm the agent
            for index in range(options.deliveries + warm_up):
                body = json.dumps({"ref": "refs/heads/main", "sha": sha, "actor": "bench"}).encode()
                signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                headers = {
                    "Content-Type": "application/json",
                    "X-Conveyor-Event": "push",
                    "X-Conveyor-Delivery": str(uuid.uuid4()),
                    "X-Conveyor-Signature": f"sha256={signature}",
                }
                started = time.perf_counter()
                response = hooks.post("/hooks/generic/hooks", content=body, headers=headers)
                answered = time.perf_counter()
                if response.status_code != 202:
                    raise SystemExit(f"delivery {index}: {response.status_code} {response.text}")
                run = newest_run_after(api, previous, time.monotonic() + 60)
                previous = int(run["id"])  # type: ignore[call-overload]
                job_id = run["jobs"][0]["id"]  # type: ignore[index]
                first = asyncio.run(first_line_and_end(server.url, job_id, token))
                if index >= warm_up:
                    to_answer.append(answered - started)
                    to_first_line.append(first - started)
        finally:
            server.stop()
    print(f"webhook POST, {options.deliveries} deliveries (embedded local agent)")
    for label, values in (("-> 202 answer", to_answer), ("-> first log line", to_first_line)):
        print(
            f"    {label:18} median {statistics.median(values) * 1000:8.1f} ms   "
            f"p95 {percentile(values, 95) * 1000:8.1f} ms"
        )


if __name__ == "__main__":
    main()
