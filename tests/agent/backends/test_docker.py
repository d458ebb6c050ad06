"""The docker backend on the real engine, with the locally built busybox image."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conveyor.agent.backends.base import BackendError, JobContext
from conveyor.agent.backends.docker import (
    JOB_LABEL,
    DockerBackend,
    DockerStepProcess,
    MultiplexedStreamDecoder,
    PullPolicy,
    holder_network_mode,
    network_mode_for_steps,
    remove_leftovers,
    resource_limits,
)
from conveyor.pipeline.plan import ContainerOptions, NetworkMode, ServicePlan, StepKind, StepPlan

from .harness import containers_of_job, invocation, make_job, run_step

HTTP_SERVICE = ServicePlan(
    name="db",
    image="conveyor-test/busybox:latest",
    commands=[
        "mkdir -p /www",
        "echo served by db > /www/index.html",
        "httpd -f -p 8080 -h /www",
    ],
)


def fetch_commands(url: str) -> list[str]:
    """Ask `url` until the service answers (it starts in the background), at most ~5 s."""
    return [
        "for attempt in $(seq 1 50); do",
        # No `wget -T`: this static busybox crashes when it combines it with a host name.
        f"  if wget -q -O - {url}; then exit 0; fi",
        "  sleep 0.1",
        "done",
        "exit 1",
    ]


async def run_job_steps(
    backend: DockerBackend, job: JobContext, steps: list[StepPlan]
) -> list[tuple[int, bytes]]:
    await backend.prepare(job)
    try:
        return [await run_step(backend, job, step) for step in steps]
    finally:
        await backend.cleanup(job)


@pytest.fixture
def docker_client(docker_engine: None) -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


class TestMultiplexedStreamDecoder:
    @staticmethod
    def frame(stream: int, payload: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    def test_frames_of_stdout_and_stderr_are_joined_in_order(self) -> None:
        data = self.frame(1, b"out\n") + self.frame(2, b"err\n") + self.frame(1, b"more")
        assert MultiplexedStreamDecoder().feed(data) == b"out\nerr\nmore"

    def test_frames_split_anywhere_across_reads_decode_the_same(self) -> None:
        data = self.frame(1, b"first line\n") + self.frame(2, b"x" * 300) + self.frame(1, b"end\n")
        expected = b"first line\n" + b"x" * 300 + b"end\n"
        for cut_size in (1, 3, 7, 8, 9, 64):
            decoder = MultiplexedStreamDecoder()
            pieces = [data[i : i + cut_size] for i in range(0, len(data), cut_size)]
            assert b"".join(decoder.feed(piece) for piece in pieces) == expected


class TestArguments:
    def test_bridge_network_puts_the_holder_on_the_bridge(self) -> None:
        assert holder_network_mode(NetworkMode.BRIDGE) == "bridge"
        assert holder_network_mode(NetworkMode.JOB) == "none"
        assert network_mode_for_steps(NetworkMode.BRIDGE, "abc") == "container:abc"

    def test_steps_without_services_get_no_holder(self) -> None:
        assert network_mode_for_steps(NetworkMode.JOB, None) == "none"
        assert network_mode_for_steps(NetworkMode.NONE, None) == "none"
        assert network_mode_for_steps(NetworkMode.BRIDGE, None) == "bridge"

    def test_cpus_become_nano_cpus_and_unset_options_are_left_out(self) -> None:
        assert resource_limits(ContainerOptions(cpus=1.5, memory="256m")) == {
            "nano_cpus": 1_500_000_000,
            "mem_limit": "256m",
        }
        assert resource_limits(ContainerOptions()) == {}


class TestServices:
    def test_step_reaches_a_service_by_name_and_on_localhost(
        self, busybox_image: str, tmp_path: Path
    ) -> None:
        by_name = StepPlan(name="by-name", commands=fetch_commands("http://db:8080/"))
        by_address = StepPlan(name="by-ip", commands=fetch_commands("http://127.0.0.1:8080/"))
        job = make_job(
            tmp_path, [by_name, by_address], image=busybox_image, services=[HTTP_SERVICE]
        )
        results = asyncio.run(run_job_steps(DockerBackend(), job, [by_name, by_address]))
        assert results == [(0, b"served by db\n"), (0, b"served by db\n")]
        assert containers_of_job(job.key) == []

    def test_prepare_starts_a_holder_and_the_services_before_any_step(
        self, busybox_image: str, tmp_path: Path, docker_client: docker.DockerClient
    ) -> None:
        job = make_job(
            tmp_path,
            [StepPlan(name="s", commands=["true"])],
            image=busybox_image,
            services=[HTTP_SERVICE],
        )
        backend = DockerBackend()

        async def scenario() -> list[tuple[str, str]]:
            await backend.prepare(job)
            try:
                summaries = docker_client.api.containers(
                    filters={"label": f"conveyor.job={job.key}"}
                )
                return sorted(
                    (summary["Labels"]["conveyor.role"], summary["State"]) for summary in summaries
                )
            finally:
                await backend.cleanup(job)

        assert asyncio.run(scenario()) == [("holder", "running"), ("service", "running")]
        assert containers_of_job(job.key) == []

    def test_services_on_a_job_without_network_are_refused(
        self, busybox_image: str, tmp_path: Path
    ) -> None:
        step = StepPlan(name="use-db", commands=["true"])
        job = make_job(
            tmp_path, [step], image=busybox_image, network=NetworkMode.NONE, services=[HTTP_SERVICE]
        )
        backend = DockerBackend()

        async def scenario() -> None:
            try:
                await backend.prepare(job)
            finally:
                await backend.cleanup(job)

        with pytest.raises(BackendError, match="without network"):
            asyncio.run(scenario())
        assert containers_of_job(job.key) == []

    def test_step_without_network_has_only_loopback_and_cannot_reach_a_service(
        self, busybox_image: str, tmp_path: Path
    ) -> None:
        service_job = make_job(
            tmp_path / "with-service",
            [StepPlan(name="serve", commands=["true"])],
            image=busybox_image,
            services=[HTTP_SERVICE],
        )
        step = StepPlan(
            name="isolated",
            commands=[
                "ls /sys/class/net",
                "grep -c ' db$' /etc/hosts || true",
                # stderr dropped: Docker does not keep its order against stdout.
                "wget -q -O - http://127.0.0.1:8080/ 2>/dev/null || echo unreachable",
            ],
        )
        isolated_job = make_job(
            tmp_path / "isolated", [step], image=busybox_image, network=NetworkMode.NONE
        )
        backend = DockerBackend()

        async def scenario() -> tuple[int, bytes]:
            await backend.prepare(service_job)
            try:
                return (await run_job_steps(backend, isolated_job, [step]))[0]
            finally:
                await backend.cleanup(service_job)

        code, output = asyncio.run(scenario())
        assert code == 0
        interfaces, db_entries, *_, last = output.decode().splitlines()
        assert (interfaces, db_entries, last) == ("lo", "0", "unreachable")


class TestContainerOptions:
    def test_limits_user_and_shm_size_apply_to_step_containers(
        self, busybox_image: str, tmp_path: Path
    ) -> None:
        options = ContainerOptions(
            memory="64m", cpus=0.5, shm_size="16m", user="1234:1234", pids_limit=50
        )
        step = StepPlan(
            name="limits",
            commands=[
                # cgroup v2 files first, v1 as the fallback: the engine here may be either.
                "cat /sys/fs/cgroup/memory.max 2>/dev/null"
                " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
                "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
                "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                "id -u",
                "df -k /dev/shm | tail -n 1 | awk '{print $2}'",
            ],
        )
        job = make_job(tmp_path, [step], image=busybox_image, container=options)
        [(code, output)] = asyncio.run(run_job_steps(DockerBackend(), job, [step]))
        assert code == 0, output
        memory, pids, cpu, user, shm_kib = output.decode().splitlines()
        assert memory == str(64 * 1024 * 1024)
        assert pids == "50"
        assert cpu.split()[0] == "50000"  # half of the default 100000 µs period
        assert user == "1234"
        assert shm_kib == str(16 * 1024)


class TestImages:
    def test_missing_image_fails_prepare_quickly_when_the_pull_fails(
        self, docker_engine: None, tmp_path: Path
    ) -> None:
        # The image names a registry on a closed loopback port: the pull is really tried
        # and fails at once, and no query leaves this machine.
        image = f"127.0.0.1:9/conveyor-test/absent-{uuid.uuid4().hex[:8]}:1"
        job = make_job(tmp_path, [StepPlan(name="s", commands=["true"])], image=image)
        backend = DockerBackend(pull=PullPolicy.MISSING)

        async def scenario() -> None:
            try:
                await backend.prepare(job)
            finally:
                await backend.cleanup(job)

        began = time.monotonic()
        with pytest.raises(BackendError) as raised:
            asyncio.run(scenario())
        assert time.monotonic() - began < 25
        message = str(raised.value)
        assert f"image {image} is not on this Docker engine and could not be pulled" in message
        assert "change `image:`" in message

    def test_missing_image_with_pulling_off_says_so(
        self, docker_engine: None, tmp_path: Path
    ) -> None:
        image = f"conveyor-test/absent-{uuid.uuid4().hex[:8]}:1"
        job = make_job(tmp_path, [StepPlan(name="s", commands=["true"])], image=image)
        with pytest.raises(BackendError) as raised:
            asyncio.run(DockerBackend(pull="never").prepare(job))
        message = str(raised.value)
        assert f"image {image} is not on this Docker engine, and pulling is off" in message
        assert "CONVEYOR_DOCKER_PULL=never" in message

    def test_unknown_pull_policy_is_refused(self) -> None:
        with pytest.raises(BackendError, match="'sometimes'"):
            DockerBackend(pull="sometimes")

    def test_step_without_any_image_is_refused(self, docker_engine: None, tmp_path: Path) -> None:
        job = make_job(tmp_path, [StepPlan(name="imageless", commands=["true"])])
        with pytest.raises(BackendError, match=r"'imageless' .* has no image"):
            asyncio.run(DockerBackend().prepare(job))

    def test_step_image_overrides_the_job_image(self, busybox_image: str, tmp_path: Path) -> None:
        step = StepPlan(name="own-image", image=busybox_image, commands=["echo from step image"])
        job = make_job(tmp_path, [step], image="conveyor-test/never-used:1")
        backend = DockerBackend()

        async def scenario() -> tuple[int, bytes]:
            try:
                return await run_step(backend, job, step)
            finally:
                await backend.cleanup(job)

        assert asyncio.run(scenario()) == (0, b"from step image\n")


class TestEngine:
    def test_unreachable_engine_says_how_to_start_it(self, tmp_path: Path) -> None:
        job = make_job(tmp_path, [StepPlan(name="s", commands=["true"])], image="any")
        backend = DockerBackend(base_url=f"unix://{tmp_path}/no-docker.sock")
        with pytest.raises(BackendError, match=r"does not answer.*dockerd"):
            asyncio.run(backend.prepare(job))
        asyncio.run(backend.cleanup(job))  # nothing was made; nothing to fail on


class TestOutputAndLabels:
    def test_stderr_and_stdout_are_merged_and_output_dir_is_mounted(
        self, busybox_image: str, tmp_path: Path
    ) -> None:
        step = StepPlan(
            name="mixed",
            commands=["echo out-1", "echo err-1 >&2", "echo kept > /output/result.txt", "pwd"],
        )
        job = make_job(tmp_path, [step], image=busybox_image)
        [(code, output)] = asyncio.run(run_job_steps(DockerBackend(), job, [step]))
        # Docker copies stdout and stderr separately: their relative order is not kept.
        assert code == 0
        assert sorted(output.decode().splitlines()) == ["/workspace", "err-1", "out-1"]
        assert output.decode().replace("err-1\n", "") == "out-1\n/workspace\n"
        assert (job.output / "result.txt").read_text() == "kept\n"

    def test_step_containers_carry_job_role_and_extra_labels(
        self, busybox_image: str, tmp_path: Path, docker_client: docker.DockerClient
    ) -> None:
        step = StepPlan(name="labelled", commands=["sleep 30"])
        base = make_job(tmp_path, [step], image=busybox_image)
        job = JobContext(
            key=base.key,
            plan=base.plan,
            workspace=base.workspace,
            output=base.output,
            labels={"conveyor.run": "42"},
        )
        backend = DockerBackend()

        async def scenario() -> dict[str, str]:
            await backend.prepare(job)
            try:
                process = await backend.start(job, invocation(step))
                assert isinstance(process, DockerStepProcess)
                labels: dict[str, str] = docker_client.api.inspect_container(process.container_id)[
                    "Config"
                ]["Labels"]
                await process.stop(0)
                return labels
            finally:
                await backend.cleanup(job)

        labels = asyncio.run(scenario())
        assert labels["conveyor.job"] == job.key
        assert labels["conveyor.role"] == "step"
        assert labels["conveyor.run"] == "42"
        assert containers_of_job(job.key) == []


class TestRemoveLeftovers:
    def test_labelled_containers_of_crashed_runs_are_removed(
        self, busybox_image: str, docker_client: docker.DockerClient
    ) -> None:
        marker = uuid.uuid4().hex
        key = f"crashed-{marker[:8]}"
        for _ in range(2):
            docker_client.api.create_container(
                busybox_image,
                command=["sleep", "60"],
                labels={JOB_LABEL: key, "conveyor.test": marker},
            )
        # Scoped to this test's containers, so that jobs of tests running beside it live.
        only_these = {"conveyor.test": marker}
        assert remove_leftovers(docker_client, older_than=3600, labels=only_these) == 0
        assert len(containers_of_job(key)) == 2
        assert remove_leftovers(docker_client, labels=only_these) == 2
        assert containers_of_job(key) == []


class TestImageBuild:
    @pytest.fixture
    def image_tag(self, docker_client: docker.DockerClient) -> Iterator[str]:
        tag = f"conveyor-test/built-{uuid.uuid4().hex[:10]}:1"
        yield tag
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)

    def test_dockerfile_is_built_into_the_tag_and_usable_by_the_next_step(
        self, busybox_image: str, tmp_path: Path, image_tag: str
    ) -> None:
        build = StepPlan(
            name="build", kind=StepKind.IMAGE_BUILD, dockerfile="Dockerfile", image_tag=image_tag
        )
        use = StepPlan(name="use", image=image_tag, commands=["cat /built"])
        job = make_job(tmp_path, [build, use], image=busybox_image)
        (job.workspace / "Dockerfile").write_text(
            f"FROM {busybox_image}\nRUN echo built > /built\n"
        )
        backend = DockerBackend()

        async def scenario() -> list[tuple[int, bytes]]:
            # `use` needs an image that only `build` makes: prepare must not demand it.
            await backend.prepare(job)
            try:
                return [await run_step(backend, job, build), await run_step(backend, job, use)]
            finally:
                await backend.cleanup(job)

        (build_code, build_log), used = asyncio.run(scenario())
        assert build_code == 0, build_log
        assert b"Successfully tagged " + image_tag.encode() in build_log
        assert used == (0, b"built\n")

    def test_failing_build_exits_non_zero_with_the_error_in_the_output(
        self, busybox_image: str, tmp_path: Path, image_tag: str
    ) -> None:
        build = StepPlan(name="build", kind=StepKind.IMAGE_BUILD, image_tag=image_tag)
        job = make_job(tmp_path, [build], image=busybox_image)
        (job.workspace / "Dockerfile").write_text(
            f"FROM {busybox_image}\nRUN echo breaking && exit 7\n"
        )
        backend = DockerBackend()

        async def scenario() -> tuple[int, bytes]:
            try:
                return await run_step(backend, job, build)
            finally:
                await backend.cleanup(job)

        code, output = asyncio.run(scenario())
        assert code == 1
        assert b"breaking" in output
        assert b"returned a non-zero code: 7" in output
