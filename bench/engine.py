"""Engine benchmark: per-step overhead and log throughput, each beside its raw baseline.

    python bench/engine.py [--steps 20] [--lines 1000000] [--skip-docker]

(a) A pipeline of N trivial steps (`true`) run by the engine, against the same N
    commands run raw: `sh -c true` for the local backend, `docker run --rm` for docker.
(b) A step printing 1,000,000 lines of about 100 bytes, captured, masked (one secret is
    in play) and stored by the log store, against the same command redirected to a file.

Targets (issue 2): local overhead < 20 ms a step; docker < 15% over raw; logs <= 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conveyor.agent.backends.base import Backend
from conveyor.agent.backends.registry import create_backend
from conveyor.agent.engine import JobRunner, RunFacts, StepResult
from conveyor.logstore import LogWriter
from conveyor.pipeline.plan import JobPlan, NetworkMode, StepPlan
from conveyor.protocol.status import Status

IMAGE = "conveyor-test/busybox:latest"
LINE_TEXT = "x" * 88  # with the 10-digit counter and the newline: 100 bytes a line


class NullSink:
    async def step_started(self, result: StepResult, step: StepPlan) -> None:
        pass

    async def step_output(self, result: StepResult, data: bytes) -> None:
        pass

    async def step_finished(self, result: StepResult) -> None:
        pass


class StoringSink(NullSink):
    """Stores output the way the agent and the server do: log file plus line index."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writers: dict[int, LogWriter] = {}

    async def step_output(self, result: StepResult, data: bytes) -> None:
        writer = self.writers.get(result.index)
        if writer is None:
            writer = LogWriter(self.directory / f"{result.index}.log")
            self.writers[result.index] = writer
        writer.append(data)

    async def step_finished(self, result: StepResult) -> None:
        writer = self.writers.pop(result.index, None)
        if writer:
            writer.close()


async def run_plan(
    backend: Backend,
    plan: JobPlan,
    root: Path,
    sink: NullSink,
    network: NetworkMode,
    secrets: dict[str, str] | None = None,
) -> float:
    workspace, output = root / "src", root / "output"
    workspace.mkdir(parents=True, exist_ok=True)
    runner = JobRunner(
        backend=backend,
        plan=plan,
        key=f"bench-{time.monotonic_ns()}",
        workspace=workspace,
        output=output,
        facts=RunFacts(commit_sha="0" * 40),
        sink=sink,
        secrets=secrets,
        network=network,
    )
    started = time.perf_counter()
    result = await runner.run()
    elapsed = time.perf_counter() - started
    if result.status is not Status.SUCCESS:
        raise SystemExit(f"benchmark job ended {result.status}: {result.message}")
    return elapsed


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def best_of(repeats: int, fn: object) -> float:
    return min(timed(fn) for _ in range(repeats))


def step_overhead(steps: int, repeats: int, docker: bool) -> list[tuple[str, float, float, str]]:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    plan = JobPlan(
        name="bench",
        image=IMAGE,
        steps=[StepPlan(name=f"s{i}", commands=["true"]) for i in range(steps)],
    )
    local = create_backend("local")
    raw_local = best_of(
        repeats, lambda: [subprocess.run(["sh", "-c", "true"], check=True) for _ in range(steps)]
    )
    eng_local = min(
        asyncio.run(run_plan(local, plan, tmp / f"l{i}", NullSink(), NetworkMode.NONE))
        for i in range(repeats)
    )
    per_step_ms = (eng_local - raw_local) / steps * 1000
    rows.append(
        ("local", raw_local, eng_local, f"{per_step_ms:+.1f} ms/step over raw (target < 20 ms)")
    )
    if docker:
        dock = create_backend("docker")
        cmd = ["docker", "run", "--rm", "--network", "none", IMAGE, "true"]
        raw_docker = best_of(
            repeats,
            lambda: [
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL) for _ in range(steps)
            ],
        )
        for network in (NetworkMode.NONE, NetworkMode.JOB):
            eng = min(
                asyncio.run(run_plan(dock, plan, tmp / f"d{network}{i}", NullSink(), network))
                for i in range(repeats)
            )
            pct = (eng - raw_docker) / raw_docker * 100
            rows.append(
                (
                    f"docker (network {network})",
                    raw_docker,
                    eng,
                    f"{pct:+.1f}% over raw, {(eng - raw_docker) / steps * 1000:+.1f} ms/step "
                    "(target < 15%)",
                )
            )
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


def log_throughput(lines: int, repeats: int) -> tuple[float, float, int]:
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    command = f"seq -f '%010.0f {LINE_TEXT}' 1 {lines}"
    raw = best_of(
        repeats, lambda: subprocess.run(["sh", "-c", f"{command} > {tmp / 'raw.log'}"], check=True)
    )
    size = (tmp / "raw.log").stat().st_size
    plan = JobPlan(
        name="logs", steps=[StepPlan(name="print", commands=[command], secrets=["TOKEN"])]
    )
    local = create_backend("local")
    best = float("inf")
    for i in range(repeats):
        sink = StoringSink(tmp / f"logs{i}")
        best = min(
            best,
            asyncio.run(
                run_plan(
                    local,
                    plan,
                    tmp / f"w{i}",
                    sink,
                    NetworkMode.NONE,
                    secrets={"TOKEN": "s3cr3t-value"},
                )
            ),
        )
    stored = (tmp / "logs0" / "0.log").read_bytes()
    # The engine echoes the command first; the rest must be byte-identical to the raw file.
    body = stored[stored.index(b"\n") + 1 :]
    if body != (tmp / "raw.log").read_bytes():
        raise SystemExit("stored log differs from the raw output")
    shutil.rmtree(tmp, ignore_errors=True)
    return raw, best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-docker", action="store_true")
    args = parser.parse_args()
    docker = (
        not args.skip_docker
        and subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode
        == 0
    )
    if not docker and not args.skip_docker:
        print(
            f"(docker rows skipped: no engine or no image {IMAGE}; run scripts/build-test-images)",
            file=sys.stderr,
        )

    print(f"(a) per-step overhead, {args.steps} trivial steps, best of {args.repeats}")
    print(f"    {'backend':<24} {'raw':>9} {'engine':>9}   verdict")
    for name, raw, eng, verdict in step_overhead(args.steps, args.repeats, docker):
        print(f"    {name:<24} {raw:>8.3f}s {eng:>8.3f}s   {verdict}")
    raw, eng, size = log_throughput(args.lines, args.repeats)
    print(f"(b) log throughput, {args.lines:,} lines ({size / 1e6:.0f} MB), best of {args.repeats}")
    print(f"    redirect to file        {raw:>8.3f}s  ({size / raw / 1e6:.0f} MB/s)")
    print(
        f"    captured+masked+stored  {eng:>8.3f}s  ({size / eng / 1e6:.0f} MB/s)"
        f"   {eng / raw:.2f}x raw (target <= 3x)"
    )


if __name__ == "__main__":
    main()
