"""Which backends exist, by name, and which one to use by default.

A new backend is one module and one line in `BACKENDS`; nothing else in the code asks
which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.agent.backends.base import Backend, BackendError
from conveyor.agent.backends.fake import FakeBackend
from conveyor.agent.backends.local import LocalBackend

DOCKER = "docker"


def _docker_backend(**options: Any) -> Backend:
    # Imported on use: the docker SDK (with requests and urllib3) adds about 10 MiB to
    # every agent and server, also those that run on another backend.
    from conveyor.agent.backends.docker import DockerBackend

    return DockerBackend(**options)


BACKENDS: dict[str, Callable[..., Backend]] = {
    DOCKER: _docker_backend,
    LocalBackend.name: LocalBackend,
    FakeBackend.name: FakeBackend,
}
"""Backend classes by name; each is called with the options `create_backend` gets."""

ENGINE_PROBE_SECONDS = 2


def available_backends() -> list[str]:
    """The names `create_backend` accepts, in the order they are registered."""
    return list(BACKENDS)


def create_backend(name: str, **options: Any) -> Backend:
    """A new backend of the given name, made with the backend's own options."""
    try:
        backend_class = BACKENDS[name]
    except KeyError:
        known = ", ".join(available_backends())
        raise BackendError(f"unknown backend {name!r}; the known backends are: {known}") from None
    try:
        return backend_class(**options)
    except TypeError as exc:
        raise BackendError(f"backend {name!r} does not take these options: {exc}") from exc


def default_backend_name() -> str:
    """ "docker" when a Docker engine answers within about 2 seconds, else "local"."""
    import docker  # imported on use, as in `_docker_backend`
    import docker.errors

    try:
        client = docker.from_env(timeout=ENGINE_PROBE_SECONDS)
    except docker.errors.DockerException:
        return LocalBackend.name
    try:
        client.ping()
    except (docker.errors.DockerException, OSError):
        return LocalBackend.name
    finally:
        client.close()
    return DOCKER
