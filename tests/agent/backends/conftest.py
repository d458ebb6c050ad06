"""The contract suite's parameter: each backend with its way of finding leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import BackendUnderTest, containers_of_job, processes_with_marker


@pytest.fixture(params=["local", "docker", "fake"])
def backend_under_test(request: pytest.FixtureRequest, tmp_path: Path) -> BackendUnderTest:
    name: str = request.param
    if name == "local":
        from conveyor.agent.backends.local import LocalBackend

        return BackendUnderTest(
            LocalBackend(), tmp_path, None, lambda job, marker: processes_with_marker(marker)
        )
    if name == "docker":
        from conveyor.agent.backends.docker import DockerBackend

        image: str = request.getfixturevalue("busybox_image")
        return BackendUnderTest(
            DockerBackend(),
            tmp_path,
            image,
            lambda job, marker: containers_of_job(job.key) + processes_with_marker(marker),
        )
    from conveyor.agent.backends.fake import FakeBackend

    fake = FakeBackend()
    return BackendUnderTest(
        fake,
        tmp_path,
        None,
        lambda job, marker: [repr(step) for step in fake.running_steps(job.key)],
    )
