"""The local backend: processes on this host, in their own process group."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conveyor.agent.backends.base import BackendError
from conveyor.agent.backends.local import LocalBackend
from conveyor.pipeline.plan import ServicePlan, StepKind, StepPlan

from .harness import collect, invocation, make_job, processes_with_marker, run_step


class TestPaths:
    def test_steps_see_the_host_workspace_and_output(self, tmp_path: Path) -> None:
        job = make_job(tmp_path, [StepPlan(name="where", commands=["pwd"])])
        backend = LocalBackend()
        step = job.plan.steps[0]

        async def scenario() -> tuple[int, bytes]:
            await backend.prepare(job)
            try:
                return await run_step(backend, job, step)
            finally:
                await backend.cleanup(job)

        paths = backend.paths(job)
        assert (paths.workspace, paths.output) == (str(job.workspace), str(job.output))
        assert asyncio.run(scenario()) == (0, f"{job.workspace}\n".encode())


class TestPrepare:
    def test_services_are_refused_with_a_pointer_to_docker(self, tmp_path: Path) -> None:
        job = make_job(
            tmp_path,
            [StepPlan(name="use-db", commands=["true"])],
            services=[ServicePlan(name="db", image="postgres:16")],
        )
        with pytest.raises(BackendError, match="services need the docker backend"):
            asyncio.run(LocalBackend().prepare(job))


class TestEnvironment:
    def test_step_gets_only_its_invocation_env_plus_path_home_lang(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CONVEYOR_AGENT_ONLY_SECRET", "must-not-leak")
        monkeypatch.setenv("HOME", "/home/agent")
        monkeypatch.setenv("LANG", "C.UTF-8")
        step = StepPlan(name="env", commands=["env"])
        job = make_job(tmp_path, [step])
        backend = LocalBackend()
        given = {"CI": "true", "LANG": "en_GB.UTF-8"}

        async def scenario() -> tuple[int, bytes]:
            try:
                return await run_step(backend, job, step, given)
            finally:
                await backend.cleanup(job)

        code, output = asyncio.run(scenario())
        seen = dict(line.split("=", 1) for line in output.decode().splitlines())
        assert code == 0
        assert "CONVEYOR_AGENT_ONLY_SECRET" not in seen
        assert seen["CI"] == "true"
        assert seen["LANG"] == "en_GB.UTF-8"  # the invocation's value wins
        assert seen["HOME"] == "/home/agent"
        assert seen["PATH"] == os.environ["PATH"]
        # What sh itself adds (PWD, SHLVL, ...) is fine; nothing else of the agent is.
        assert set(seen) - {"CI", "LANG", "HOME", "PATH", "PWD", "SHLVL", "_", "OLDPWD"} == set()


class TestOutput:
    def test_stdout_and_stderr_come_through_one_stream_in_order(self, tmp_path: Path) -> None:
        step = StepPlan(name="mixed", commands=["echo out-1", "echo err-1 >&2", "echo out-2"])
        job = make_job(tmp_path, [step])
        backend = LocalBackend()

        async def scenario() -> tuple[int, bytes]:
            try:
                return await run_step(backend, job, step)
            finally:
                await backend.cleanup(job)

        assert asyncio.run(scenario()) == (0, b"out-1\nerr-1\nout-2\n")

    def test_a_million_lines_arrive_complete(self, tmp_path: Path) -> None:
        step = StepPlan(name="loud", commands=["seq 1 1000000"])
        job = make_job(tmp_path, [step])
        backend = LocalBackend()
        expected = subprocess.run(["seq", "1", "1000000"], capture_output=True, check=True).stdout

        async def scenario() -> tuple[int, bytes]:
            try:
                return await run_step(backend, job, step)
            finally:
                await backend.cleanup(job)

        code, output = asyncio.run(scenario())
        assert code == 0
        assert output == expected


class TestStepEnd:
    def test_background_processes_end_with_the_step(self, tmp_path: Path) -> None:
        marker = f"conveyor-marker-{uuid.uuid4().hex}"
        step = StepPlan(name="daemon", commands=[f"sh -c 'sleep 60; :' {marker} &", "echo done"])
        job = make_job(tmp_path, [step])
        backend = LocalBackend()

        async def scenario() -> tuple[int, bytes]:
            try:
                return await run_step(backend, job, step)
            finally:
                await backend.cleanup(job)

        began = time.monotonic()
        assert asyncio.run(scenario()) == (0, b"done\n")
        # The output ended although a background child held the pipe: it was killed.
        assert time.monotonic() - began < 10
        assert processes_with_marker(marker) == []


class TestStop:
    def test_stop_sends_sigterm_first_so_the_step_can_clean_up(self, tmp_path: Path) -> None:
        step = StepPlan(
            name="trapper",
            commands=[
                "trap 'echo got TERM; exit 5' TERM",
                # "ready" only once the background sleep has surely started: a child
                # signalled between fork and exec may miss SIGTERM and wait out the grace.
                "sleep 60 &",
                "sleep 0.3",
                "echo ready",
                "wait",
            ],
        )
        job = make_job(tmp_path, [step])
        backend = LocalBackend()

        async def scenario() -> tuple[int, bytes, float]:
            try:
                process = await backend.start(job, invocation(step))
                chunks = aiter(process.output())
                first = await asyncio.wait_for(anext(chunks), 10)
                began = time.monotonic()
                await process.stop(5)
                took = time.monotonic() - began
                rest = b"".join([chunk async for chunk in chunks])
                return await process.wait(), first + rest, took
            finally:
                await backend.cleanup(job)

        code, output, took = asyncio.run(scenario())
        assert code == 5
        assert output == b"ready\ngot TERM\n"
        assert took < 4, "a group that obeys SIGTERM must not wait out the grace"

    def test_stop_kills_a_step_that_ignores_sigterm_after_the_grace(self, tmp_path: Path) -> None:
        step = StepPlan(name="stubborn", commands=["trap '' TERM", "echo ready", "sleep 60"])
        job = make_job(tmp_path, [step])
        backend = LocalBackend()

        async def scenario() -> tuple[int, float]:
            try:
                process = await backend.start(job, invocation(step))
                await asyncio.wait_for(anext(aiter(process.output())), 10)
                began = time.monotonic()
                await process.stop(0.5)
                took = time.monotonic() - began
                return await process.wait(), took
            finally:
                await backend.cleanup(job)

        code, took = asyncio.run(scenario())
        assert code == 137  # 128 + SIGKILL
        assert 0.5 <= took < 2.5


class TestImageBuild:
    def test_image_build_step_runs_docker_build_in_the_workspace(
        self, tmp_path: Path, busybox_image: str
    ) -> None:
        tag = f"conveyor-test/local-build-{uuid.uuid4().hex[:10]}:1"
        step = StepPlan(
            name="image", kind=StepKind.IMAGE_BUILD, dockerfile="build/Containerfile", image_tag=tag
        )
        job = make_job(tmp_path, [step])
        (job.workspace / "build").mkdir()
        (job.workspace / "build" / "Containerfile").write_text(
            f"FROM {busybox_image}\nRUN echo built > /built\n"
        )
        backend = LocalBackend()

        async def scenario() -> tuple[int, bytes]:
            try:
                return await run_step(backend, job, step)
            finally:
                await backend.cleanup(job)

        try:
            code, output = asyncio.run(scenario())
            assert code == 0, output.decode(errors="replace")
            built = subprocess.run(
                ["docker", "run", "--rm", "--network", "none", tag, "cat", "/built"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert built.stdout == "built\n"
        finally:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)

    def test_image_build_step_without_tag_is_refused(self, tmp_path: Path) -> None:
        step = StepPlan(name="image", kind=StepKind.IMAGE_BUILD)
        job = make_job(tmp_path, [step])
        with pytest.raises(BackendError, match="image_tag"):
            asyncio.run(LocalBackend().start(job, invocation(step)))


class TestExitCodes:
    def test_death_by_signal_is_reported_as_128_plus_the_signal(self, tmp_path: Path) -> None:
        step = StepPlan(name="suicide", commands=["kill -USR1 $$"])
        job = make_job(tmp_path, [step])
        backend = LocalBackend()

        async def scenario() -> int:
            try:
                process = await backend.start(job, invocation(step))
                await collect(process)
                return await process.wait()
            finally:
                await backend.cleanup(job)

        assert asyncio.run(scenario()) == 128 + 10
