"""Which backends exist, by name, and which one to use by default.

A new backend is one module and one line in `BACKENDS`; nothing else in the code asks
which backend it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker
import docker.errors

from conveyor.agent.backends.base import Backend, BackendError
from conveyor.agent.backends.docker import DockerBackend
from conveyor.agent.backends.fake import FakeBackend
from conveyor.agent.backends.local import LocalBackend

BACKENDS: dict[str, Callable[..., Backend]] = {
    DockerBackend.name: DockerBackend,
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
    return DockerBackend.name
