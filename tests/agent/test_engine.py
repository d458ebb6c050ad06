"""The engine's rules, run for real on the local backend (processes on this host)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conveyor.agent.backends.local import LocalBackend
from conveyor.agent.engine import JobResult, JobRunner, RunFacts, StepResult, format_duration
from conveyor.pipeline.plan import (
    ArchiveFormat,
    ArtifactPlan,
    HashAlgorithm,
    JobPlan,
    NetworkMode,
    ServicePlan,
    StepPlan,
)
from conveyor.protocol.status import Status


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.output: dict[str, bytes] = {}

    async def step_started(self, result: StepResult, step: StepPlan) -> None:
        self.events.append(("started", result.name))

    async def step_output(self, result: StepResult, data: bytes) -> None:
        self.output[result.name] = self.output.get(result.name, b"") + data

    async def step_finished(self, result: StepResult) -> None:
        self.events.append((f"finished:{result.status}", result.name))

    def text(self, step: str) -> str:
        return self.output.get(step, b"").decode()


def run(
    tmp_path: Path,
    steps: list[StepPlan],
    *,
    sink: RecordingSink | None = None,
    cancel_after: float | None = None,
    **plan_fields: object,
) -> tuple[JobResult, RecordingSink, JobRunner]:
    sink = sink or RecordingSink()
    secrets = plan_fields.pop("secrets", None)
    plan = JobPlan(name="job", steps=steps, **plan_fields)  # type: ignore[arg-type]
    runner = JobRunner(
        backend=LocalBackend(),
        plan=plan,
        key=f"t-{uuid.uuid4().hex[:8]}",
        workspace=tmp_path / "ws",
        output=tmp_path / "out",
        facts=RunFacts(
            commit_sha="a" * 40,
            branch="main",
            commit_message="fix: things",
            commit_author="Ada <ada@example.test>",
            repo_url="file:///repo",
            project="demo",
            run_number=7,
            run_id="70",
            job_id="700",
            event="push",
            variables={"EXTRA": "given"},
        ),
        sink=sink,
        secrets=secrets,  # type: ignore[arg-type]
        artifacts_dir=tmp_path / "artifacts",
        network=NetworkMode.NONE,
        stop_grace=1.0,
    )
    (tmp_path / "ws").mkdir(exist_ok=True)

    async def go() -> JobResult:
        if cancel_after is not None:
            asyncio.get_running_loop().call_later(cancel_after, runner.cancel, "tester")
        return await runner.run()

    return asyncio.run(go()), sink, runner


class TestVariables:
    def test_ci_variables_reach_every_step(self, tmp_path: Path) -> None:
        result, sink, _ = run(tmp_path, [StepPlan(name="env", commands=["env | sort"])])
        assert result.status is Status.SUCCESS
        out = sink.text("env")
        for expected in [
            "CI=true",
            "CI_COMMIT_SHA=" + "a" * 40,
            "CI_COMMIT_BRANCH=main",
            "CI_COMMIT_TAG=",
            "CI_COMMIT_MESSAGE=fix: things",
            "CI_COMMIT_AUTHOR=Ada <ada@example.test>",
            "CI_REPO_URL=file:///repo",
            "CI_PROJECT_NAME=demo",
            "CI_RUN_NUMBER=7",
            "CI_RUN_ID=70",
            "CI_JOB_ID=700",
            "CI_EVENT=push",
            f"CI_WORKSPACE={tmp_path / 'ws'}",
            f"CI_OUTPUT_DIR={tmp_path / 'out'}",
            "EXTRA=given",
        ]:
            assert expected in out.splitlines(), expected

    def test_step_env_overrides_job_env_and_does_not_carry_over(self, tmp_path: Path) -> None:
        steps = [
            StepPlan(name="one", commands=["echo A=$A B=$B", "export LEAK=1"], env={"B": "step"}),
            StepPlan(name="two", commands=["echo A=$A B=$B LEAK=${LEAK:-none}"]),
        ]
        result, sink, _ = run(tmp_path, steps, env={"A": "job", "B": "job"})
        assert result.status is Status.SUCCESS
        assert "A=job B=step" in sink.text("one")
        assert "A=job B=job LEAK=none" in sink.text("two")

    def test_files_carry_over_between_steps(self, tmp_path: Path) -> None:
        steps = [
            StepPlan(name="write", commands=["echo kept > note.txt"]),
            StepPlan(name="read", commands=["cat note.txt"]),
        ]
        _, sink, _ = run(tmp_path, steps)
        assert "kept" in sink.text("read")


class TestSecrets:
    def test_secret_reaches_only_steps_that_name_it_and_is_masked(self, tmp_path: Path) -> None:
        steps = [
            StepPlan(name="uses", commands=['echo "token is $TOKEN"'], secrets=["TOKEN"]),
            StepPlan(name="other", commands=['echo "token is ${TOKEN:-unset}"']),
        ]
        result, sink, _ = run(tmp_path, steps, secrets={"TOKEN": "hunter2-very-secret"})
        assert result.status is Status.SUCCESS
        assert "token is ********" in sink.text("uses")
        assert "hunter2" not in sink.text("uses")
        assert "token is unset" in sink.text("other")

    def test_base64_and_multiline_forms_are_masked(self, tmp_path: Path) -> None:
        value = "first-line-secret\nsecond-line-secret"
        b64 = base64.b64encode(value.encode()).decode()
        steps = [
            StepPlan(
                name="leak",
                commands=['printf "%s\\n" "$KEY"', f"echo {b64}"],
                secrets=["KEY"],
            )
        ]
        _, sink, _ = run(tmp_path, steps, secrets={"KEY": value})
        out = sink.text("leak")
        assert "first-line-secret" not in out
        assert "second-line-secret" not in out
        assert b64 not in out

    def test_secret_too_short_to_mask_is_noted(self, tmp_path: Path) -> None:
        steps = [StepPlan(name="uses", commands=['echo "$PIN"'], secrets=["PIN"])]
        result, _, _ = run(tmp_path, steps, secrets={"PIN": "123"})
        assert result.status is Status.SUCCESS
        assert any("PIN" in note and "not masked" in note for note in result.notes)

    def test_missing_secret_is_an_error_that_says_how_to_fix(self, tmp_path: Path) -> None:
        steps = [StepPlan(name="uses", commands=["true"], secrets=["NOPE"])]
        result, sink, _ = run(tmp_path, steps, secrets={})
        assert result.status is Status.ERROR
        assert "NOPE" in sink.text("uses")
        assert "--secret" in sink.text("uses")


class TestOutcomes:
    def test_failed_step_fails_the_job_and_skips_the_rest(self, tmp_path: Path) -> None:
        steps = [
            StepPlan(name="ok", commands=["true"]),
            StepPlan(name="bad", commands=["echo before", "exit 3", "echo never"]),
            StepPlan(name="after", commands=["echo after"]),
        ]
        result, sink, _ = run(tmp_path, steps)
        assert result.status is Status.FAILURE
        assert [s.status for s in result.steps] == [
            Status.SUCCESS,
            Status.FAILURE,
            Status.SKIPPED,
        ]
        assert result.steps[1].exit_code == 3
        assert "never" not in sink.text("bad").replace("echo never", "")
        assert ("started", "after") not in sink.events

    def test_allowed_failure_gives_warning_and_goes_on(self, tmp_path: Path) -> None:
        steps = [
            StepPlan(name="flaky", commands=["exit 1"], allow_failure=True),
            StepPlan(name="next", commands=["echo next ran"]),
        ]
        result, sink, _ = run(tmp_path, steps)
        assert result.status is Status.WARNING
        assert [s.status for s in result.steps] == [Status.WARNING, Status.SUCCESS]
        assert "next ran" in sink.text("next")

    def test_step_skipped_by_when_is_reported_skipped(self, tmp_path: Path) -> None:
        steps = [
            StepPlan(name="deploy", commands=["echo deploying"], skip_reason="branch dev"),
            StepPlan(name="test", commands=["true"]),
        ]
        result, sink, _ = run(tmp_path, steps)
        assert result.status is Status.SUCCESS
        assert result.steps[0].status is Status.SKIPPED
        assert "deploy" not in sink.output

    def test_exit_line_must_match_the_last_output_line(self, tmp_path: Path) -> None:
        steps = [StepPlan(name="ams", commands=["echo working", "echo BUILD OK"], exit_line="DONE")]
        result, sink, _ = run(tmp_path, steps)
        assert result.status is Status.FAILURE
        assert "'DONE'" in sink.text("ams")
        assert "'BUILD OK'" in sink.text("ams")

        steps = [StepPlan(name="ams", commands=["echo working", "echo DONE"], exit_line="DONE")]
        result, _, _ = run(tmp_path, steps)
        assert result.status is Status.SUCCESS

    def test_prepare_fault_is_an_error_and_nothing_runs(self, tmp_path: Path) -> None:
        # The local backend cannot run services: an infrastructure fault, not a failure.
        steps = [StepPlan(name="s", commands=["echo hi"])]
        result, sink, _ = run(
            tmp_path, steps, services=[ServicePlan(name="db", image="postgres:16")]
        )
        assert result.status is Status.ERROR
        assert result.message and "docker" in result.message
        assert result.steps[0].status is Status.SKIPPED
        assert sink.output == {}


def no_process_with(marker: str) -> bool:
    done = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return not any(marker in line and "ps -eo" not in line for line in done.stdout.splitlines())


class TestTimeoutsAndCancel:
    def test_step_timeout_fails_with_a_message_and_kills_the_step(self, tmp_path: Path) -> None:
        marker = f"sleep 31{uuid.uuid4().int % 1000:03d}"
        steps = [StepPlan(name="slow", commands=[f"{marker} & wait"], timeout=1)]
        result, sink, _ = run(tmp_path, steps)
        assert result.status is Status.FAILURE
        assert "timed out after 1s" in sink.text("slow")
        assert no_process_with(marker)

    def test_job_timeout_stops_the_running_step(self, tmp_path: Path) -> None:
        steps = [
            StepPlan(name="a", commands=["true"]),
            StepPlan(name="b", commands=["sleep 30"]),
            StepPlan(name="c", commands=["true"]),
        ]
        result, sink, _ = run(tmp_path, steps, timeout=1.5)
        assert result.status is Status.FAILURE
        assert "job timed out after 1.5s" in sink.text("b")
        assert result.steps[2].status is Status.SKIPPED
        assert result.finished_at - result.started_at < 10

    def test_allowed_failure_covers_a_timeout(self, tmp_path: Path) -> None:
        steps = [StepPlan(name="slow", commands=["sleep 30"], timeout=0.5, allow_failure=True)]
        result, _, _ = run(tmp_path, steps)
        assert result.status is Status.WARNING

    def test_cancel_stops_the_step_and_skips_the_rest(self, tmp_path: Path) -> None:
        marker = f"sleep 32{uuid.uuid4().int % 1000:03d}"
        steps = [
            StepPlan(name="long", commands=["echo started", f"{marker} & wait"]),
            StepPlan(name="never", commands=["true"]),
        ]
        result, sink, _ = run(tmp_path, steps, cancel_after=1.0)
        assert result.status is Status.CANCELLED
        assert [s.status for s in result.steps] == [Status.CANCELLED, Status.SKIPPED]
        assert "cancelled by tester" in sink.text("long")
        assert result.finished_at - result.started_at < 10
        assert no_process_with(marker)

    def test_step_ignoring_sigterm_is_killed_after_the_grace(self, tmp_path: Path) -> None:
        marker = f"sleep 33{uuid.uuid4().int % 1000:03d}"
        steps = [StepPlan(name="stubborn", commands=[f"trap '' TERM; {marker} & wait; wait"])]
        result, _, _ = run(tmp_path, steps, cancel_after=0.5)
        assert result.status is Status.CANCELLED
        assert result.finished_at - result.started_at < 8
        assert no_process_with(marker)


class TestArtifacts:
    def test_matching_files_and_the_output_dir_are_archived_with_hashes(
        self, tmp_path: Path
    ) -> None:
        steps = [
            StepPlan(
                name="build",
                commands=[
                    "mkdir -p dist && echo wheel > dist/pkg.whl",
                    'echo report > "$CI_OUTPUT_DIR/report.txt"',
                ],
            )
        ]
        plan = ArtifactPlan(
            paths=["dist/**"], archive=ArchiveFormat.ZIP, hash=HashAlgorithm.CRC32, name="out"
        )
        result, _, _ = run(tmp_path, steps, artifacts=plan)
        assert result.status is Status.SUCCESS, result.message
        [artifact] = result.artifacts
        assert artifact.path.name == "out.zip"
        import hashlib
        import zipfile
        import zlib

        data = artifact.path.read_bytes()
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
        assert int(artifact.hash or "", 16) == zlib.crc32(data)
        with zipfile.ZipFile(artifact.path) as archive:
            assert sorted(archive.namelist()) == ["dist/pkg.whl", "report.txt"]

    def test_symlink_pointing_outside_is_left_out_and_noted(self, tmp_path: Path) -> None:
        steps = [StepPlan(name="build", commands=["ln -s /etc/passwd leak.txt", "echo ok > a.txt"])]
        result, _, _ = run(tmp_path, steps, artifacts=ArtifactPlan(paths=["*.txt"]))
        assert result.status is Status.SUCCESS, result.message
        assert [a.name for a in result.artifacts] == ["a.txt"]
        assert any("leak.txt" in note for note in result.notes)

    def test_no_artifacts_after_a_failure(self, tmp_path: Path) -> None:
        steps = [StepPlan(name="build", commands=["echo x > a.txt", "exit 1"])]
        result, _, _ = run(tmp_path, steps, artifacts=ArtifactPlan(paths=["*.txt"]))
        assert result.status is Status.FAILURE
        assert result.artifacts == []

    def test_escaping_artifact_path_fails_the_job_with_the_path(self, tmp_path: Path) -> None:
        steps = [StepPlan(name="build", commands=["true"])]
        result, _, _ = run(tmp_path, steps, artifacts=ArtifactPlan(paths=["../secret/*"]))
        assert result.status is Status.FAILURE
        assert result.message and "../secret/*" in result.message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1s"), (1.5, "1.5s"), (90, "90s"), (600, "10m"), (3600, "1h"), (5400, "1h30m")],
)
def test_format_duration_writes_durations_as_pipeline_files_do(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_environment_of_the_agent_does_not_leak_into_steps(tmp_path: Path) -> None:
    os.environ["CONVEYOR_TEST_LEAK"] = "leaked"
    try:
        _, sink, _ = run(tmp_path, [StepPlan(name="env", commands=["env"])])
    finally:
        del os.environ["CONVEYOR_TEST_LEAK"]
    assert "CONVEYOR_TEST_LEAK" not in sink.text("env")
