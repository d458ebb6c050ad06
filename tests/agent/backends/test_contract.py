"""The backend contract (base.py), the same tests for every backend: local, docker, fake.

Steps use only what all three understand: `echo`, `exit`, `sleep`; the fake prints
"fake: ..." for anything else and goes on, which the tests allow for.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import pytest

from conveyor.pipeline.plan import NetworkMode, StepPlan

from .harness import BackendUnderTest, collect, invocation, run_step, wait_until


class TestOutput:
    def test_lines_arrive_in_the_order_printed(self, backend_under_test: BackendUnderTest) -> None:
        under_test = backend_under_test
        words = ["one", "two", "three", "four", "five"]
        step = StepPlan(name="count", commands=[f"echo {word}" for word in words])
        job = under_test.job([step])

        async def scenario() -> tuple[int, bytes]:
            await under_test.backend.prepare(job)
            try:
                return await run_step(under_test.backend, job, step)
            finally:
                await under_test.backend.cleanup(job)

        code, output = asyncio.run(scenario())
        assert code == 0
        assert output == b"".join(f"{word}\n".encode() for word in words)

    def test_output_arrives_while_the_step_still_runs(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        under_test = backend_under_test
        step = StepPlan(name="slow", commands=["echo early", "sleep 30"])
        job = under_test.job([step])

        async def scenario() -> tuple[bytes, float]:
            await under_test.backend.prepare(job)
            try:
                process = await under_test.backend.start(job, invocation(step))
                began = time.monotonic()
                first = await asyncio.wait_for(anext(aiter(process.output())), 10)
                waited = time.monotonic() - began
                await process.stop(0.5)
                return first, waited
            finally:
                await under_test.backend.cleanup(job)

        first, waited = asyncio.run(scenario())
        assert first.startswith(b"early")
        assert waited < 10


class TestExitCode:
    @pytest.mark.parametrize("code", [0, 3])
    def test_step_exit_code_is_reported(
        self, backend_under_test: BackendUnderTest, code: int
    ) -> None:
        under_test = backend_under_test
        step = StepPlan(name="ends", commands=["echo ending", f"exit {code}"])
        job = under_test.job([step])

        async def scenario() -> tuple[int, bytes]:
            await under_test.backend.prepare(job)
            try:
                return await run_step(under_test.backend, job, step)
            finally:
                await under_test.backend.cleanup(job)

        assert asyncio.run(scenario()) == (code, b"ending\n")


class TestEnvironment:
    def test_invocation_variables_reach_the_step(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        under_test = backend_under_test
        step = StepPlan(name="greet", commands=["echo $GREETING from ${PLACE}"])
        job = under_test.job([step])
        env = {"GREETING": "hello there", "PLACE": "the-step"}

        async def scenario() -> tuple[int, bytes]:
            await under_test.backend.prepare(job)
            try:
                return await run_step(under_test.backend, job, step, env)
            finally:
                await under_test.backend.cleanup(job)

        assert asyncio.run(scenario()) == (0, b"hello there from the-step\n")


class TestStop:
    def test_stop_of_a_long_sleep_ends_it_within_grace_with_a_signal_code(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        under_test = backend_under_test
        marker = f"conveyor-marker-{uuid.uuid4().hex}"
        # The background shell carries the marker in its command line, so the host's
        # process table shows whether anything of the step survived.
        step = StepPlan(name="sleeper", commands=[f"sh -c 'sleep 60; :' {marker} &", "sleep 60"])
        job = under_test.job([step])
        grace = 1.0

        async def scenario() -> tuple[float, int, list[str], list[str]]:
            await under_test.backend.prepare(job)
            try:
                process = await under_test.backend.start(job, invocation(step))
                running = await asyncio.to_thread(
                    wait_until, lambda: bool(under_test.leftovers(job, marker))
                )
                assert running, "the probe must see the step alive before it is stopped"
                before = under_test.leftovers(job, marker)
                began = time.monotonic()
                await process.stop(grace)
                took = time.monotonic() - began
                code = await asyncio.wait_for(process.wait(), 10)
            finally:
                await under_test.backend.cleanup(job)
            return took, code, before, under_test.leftovers(job, marker)

        took, code, before, after = asyncio.run(scenario())
        assert before
        assert took < grace + 2
        assert code > 128
        assert after == []

    def test_stop_after_the_step_ended_changes_nothing(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        under_test = backend_under_test
        step = StepPlan(name="quick", commands=["exit 4"])
        job = under_test.job([step])

        async def scenario() -> int:
            await under_test.backend.prepare(job)
            try:
                process = await under_test.backend.start(job, invocation(step))
                await collect(process)
                code = await process.wait()
                await process.stop(1)
                await process.stop(1)
                return code
            finally:
                await under_test.backend.cleanup(job)

        assert asyncio.run(scenario()) == 4


class TestCleanup:
    def test_cleanup_twice_leaves_nothing_and_does_not_raise(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        under_test = backend_under_test
        marker = f"conveyor-marker-{uuid.uuid4().hex}"
        step = StepPlan(name="left", commands=[f"sh -c 'sleep 60; :' {marker} &", "sleep 60"])
        job = under_test.job([step])

        async def scenario() -> tuple[list[str], list[str]]:
            await under_test.backend.prepare(job)
            await under_test.backend.start(job, invocation(step))
            await asyncio.to_thread(wait_until, lambda: bool(under_test.leftovers(job, marker)))
            before = under_test.leftovers(job, marker)
            await under_test.backend.cleanup(job)
            await under_test.backend.cleanup(job)
            return before, under_test.leftovers(job, marker)

        before, after = asyncio.run(scenario())
        assert before, "a running step must be visible before cleanup"
        assert after == []

    def test_cleanup_of_a_job_never_prepared_does_not_raise(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        under_test = backend_under_test
        job = under_test.job([StepPlan(name="never", commands=["echo never"])])
        asyncio.run(under_test.backend.cleanup(job))
        assert under_test.leftovers(job, job.key) == []


class TestSharedWorkspace:
    def test_files_written_by_one_step_are_seen_by_the_next(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        under_test = backend_under_test
        if not under_test.backend.shares_workspace:
            pytest.skip(f"the {under_test.backend.name} backend declares no shared workspace")
        write = StepPlan(name="write", commands=["echo carried over > carried.txt"])
        read = StepPlan(name="read", commands=["cat carried.txt"])
        job = under_test.job([write, read])

        async def scenario() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
            await under_test.backend.prepare(job)
            try:
                first = await run_step(under_test.backend, job, write)
                second = await run_step(under_test.backend, job, read)
            finally:
                await under_test.backend.cleanup(job)
            return first, second

        first, second = asyncio.run(scenario())
        assert first == (0, b"")
        assert second == (0, b"carried over\n")
        assert (job.workspace / "carried.txt").read_text() == "carried over\n"


class TestDefaultNetwork:
    def test_every_backend_names_a_network_that_works_here(
        self, backend_under_test: BackendUnderTest
    ) -> None:
        backend = backend_under_test.backend
        mode = backend.default_network()
        assert isinstance(mode, NetworkMode)
        if backend.name == "docker":
            # This engine runs with --bridge=none: `bridge` would fail, so `job` is chosen;
            # an engine with a bridge network gets `bridge`.
            inspect = ["docker", "network", "inspect", "bridge"]
            has_bridge = subprocess.run(inspect, capture_output=True).returncode == 0
            assert mode is (NetworkMode.BRIDGE if has_bridge else NetworkMode.JOB)
