"""Backends by name, and the default choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.agent.backends.base import BackendError
from conveyor.agent.backends.docker import DockerBackend
from conveyor.agent.backends.fake import FakeBackend
from conveyor.agent.backends.local import LocalBackend
from conveyor.agent.backends.registry import (
    BACKENDS,
    available_backends,
    create_backend,
    default_backend_name,
)


class TestAvailableBackends:
    def test_lists_every_registered_backend(self) -> None:
        assert sorted(available_backends()) == ["docker", "fake", "local"]
        assert available_backends() == list(BACKENDS)


class TestCreateBackend:
    @pytest.mark.parametrize(
        ("name", "backend_class"),
        [("local", LocalBackend), ("docker", DockerBackend), ("fake", FakeBackend)],
    )
    def test_name_gives_the_backend_of_that_name(self, name: str, backend_class: type) -> None:
        backend = create_backend(name)
        assert isinstance(backend, backend_class)
        assert backend.name == name

    def test_options_are_passed_to_the_backend(self) -> None:
        backend = create_backend("fake", prepare_error="engine gone")
        assert isinstance(backend, FakeBackend)

    def test_unknown_name_lists_the_known_ones(self) -> None:
        with pytest.raises(
            BackendError, match=r"unknown backend 'kubernetes'.*docker, local, fake"
        ):
            create_backend("kubernetes")

    def test_unknown_option_is_a_backend_error(self) -> None:
        with pytest.raises(BackendError, match="'local' does not take these options"):
            create_backend("local", memory="1g")


class TestDefaultBackendName:
    def test_docker_when_the_engine_answers(self, docker_engine: None) -> None:
        assert default_backend_name() == "docker"

    def test_local_when_no_engine_answers(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
        assert default_backend_name() == "local"
