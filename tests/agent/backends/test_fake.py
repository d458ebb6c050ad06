"""The fake backend: its tiny command language and its record of calls."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conveyor.agent.backends.base import BackendError
from conveyor.agent.backends.fake import FakeBackend, FakeCall, FakeCallKind, expand_variables
from conveyor.pipeline.plan import StepPlan

from .harness import invocation, make_job, run_step


def run_commands(
    tmp_path: Path, commands: list[str], env: dict[str, str] | None = None
) -> tuple[int, bytes]:
    step = StepPlan(name="fake-step", commands=commands)
    job = make_job(tmp_path, [step])
    return asyncio.run(run_step(FakeBackend(), job, step, env))


class TestExpandVariables:
    def test_both_forms_are_expanded_and_unknown_names_become_empty(self) -> None:
        env = {"NAME": "ada", "SUFFIX": "-ci"}
        assert expand_variables("hi $NAME${SUFFIX}! [$MISSING]", env) == "hi ada-ci! []"


class TestCommands:
    def test_echo_prints_its_text_with_variables(self, tmp_path: Path) -> None:
        env = {"NUMBER": "7", "NAME": "app"}
        result = run_commands(tmp_path, ["echo build ${NUMBER} of $NAME"], env)
        assert result == (0, b"build 7 of app\n")

    def test_exit_ends_the_step_with_its_code_and_runs_nothing_after(self, tmp_path: Path) -> None:
        assert run_commands(tmp_path, ["echo before", "exit 42", "echo after"]) == (42, b"before\n")

    def test_exit_with_a_word_fails_like_sh(self, tmp_path: Path) -> None:
        assert run_commands(tmp_path, ["exit soon"]) == (2, b"fake: exit: soon: not a number\n")

    def test_fail_exits_with_one(self, tmp_path: Path) -> None:
        assert run_commands(tmp_path, ["fail", "echo after"]) == (1, b"")

    def test_other_commands_are_announced_and_succeed(self, tmp_path: Path) -> None:
        assert run_commands(tmp_path, ["make test", "echo done"]) == (0, b"fake: make test\ndone\n")

    def test_sleep_waits_for_the_time_given(self, tmp_path: Path) -> None:
        began = time.monotonic()
        assert run_commands(tmp_path, ["sleep 0.3", "echo awake"]) == (0, b"awake\n")
        assert time.monotonic() - began >= 0.3


class TestRecordedCalls:
    def test_every_call_is_recorded_in_order(self, tmp_path: Path) -> None:
        first = StepPlan(name="first", commands=["echo 1"])
        second = StepPlan(name="second", commands=["sleep 30"])
        job = make_job(tmp_path, [first, second])
        backend = FakeBackend()

        async def scenario() -> int:
            await backend.prepare(job)
            await run_step(backend, job, first)
            process = await backend.start(job, invocation(second))
            await process.stop(5)
            await backend.cleanup(job)
            return await process.wait()

        assert asyncio.run(scenario()) == 143
        assert backend.calls == [
            FakeCall(FakeCallKind.PREPARE, job.key),
            FakeCall(FakeCallKind.START, job.key, "first"),
            FakeCall(FakeCallKind.START, job.key, "second"),
            FakeCall(FakeCallKind.STOP, job.key, "second"),
            FakeCall(FakeCallKind.CLEANUP, job.key),
        ]
        assert backend.running_steps(job.key) == []


class TestPrepareError:
    def test_configured_infrastructure_fault_is_raised_as_backend_error(
        self, tmp_path: Path
    ) -> None:
        job = make_job(tmp_path, [StepPlan(name="s", commands=["echo never"])])
        backend = FakeBackend(prepare_error="image busybox is not on this Docker engine")
        with pytest.raises(BackendError, match="not on this Docker engine"):
            asyncio.run(backend.prepare(job))
