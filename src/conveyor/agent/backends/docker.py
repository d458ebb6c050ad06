"""The docker backend: one container per step on a shared, bind-mounted workspace.

The docker SDK is synchronous; every blocking call runs in a thread (`asyncio.to_thread`)
and a step's output is read by a thread of its own that hands chunks to the event loop.
Per step the engine sees the same round trips as `docker run --rm`: create, attach,
start, wait, remove. Images are checked once per job.

Networks (`JobContext.network`):

- `none`: steps have no network; services are refused.
- `job`: when the job has services, a small "holder" container owns one network
  namespace without outside access (`network_mode=none`), with every service name
  mapped to 127.0.0.1; services and steps join it (`network_mode=container:<holder>`),
  so steps reach services by name and on 127.0.0.1. Without services there is nothing
  to share, so steps simply get `network_mode=none` and no holder is made.
- `bridge`: the same, but the holder (or, without services, each step) sits on Docker's
  default bridge network and so reaches the outside.

Every container carries the labels `conveyor.job=<key>` and
`conveyor.role=step|service|holder` (plus `JobContext.labels`), which `cleanup` and
`remove_leftovers` use to find them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import docker
import docker.errors
from docker.utils.socket import read as read_socket

from conveyor.agent.backends.base import (
    BackendError,
    JobContext,
    StepInvocation,
    StepPaths,
)
from conveyor.pipeline.plan import ContainerOptions, NetworkMode, StepKind, StepPlan

JOB_LABEL = "conveyor.job"
ROLE_LABEL = "conveyor.role"

READ_CHUNK_SIZE = 64 * 1024

HOLDER_SCRIPT = 'trap "exit 0" TERM; while :; do sleep 3600 & wait; done'
"""Keeps the holder alive doing nothing, and lets it end at once on `docker stop`."""

_ENGINE_HELP = (
    "start it (`sudo systemctl start docker`, or `dockerd &`), point DOCKER_HOST at a "
    "running engine, or run the job with the local backend"
)


class ContainerRole(StrEnum):
    STEP = "step"
    SERVICE = "service"
    HOLDER = "holder"


def container_labels(job: JobContext, role: ContainerRole) -> dict[str, str]:
    return {**job.labels, JOB_LABEL: job.key, ROLE_LABEL: role.value}


def network_mode_for_steps(network: NetworkMode, holder_id: str | None) -> str:
    """The `network_mode` of step and service containers of a job."""
    if holder_id is not None:
        return f"container:{holder_id}"
    return "bridge" if network is NetworkMode.BRIDGE else "none"


def holder_network_mode(network: NetworkMode) -> str:
    if network is NetworkMode.NONE:
        raise ValueError("a job without network has no holder")
    return "bridge" if network is NetworkMode.BRIDGE else "none"


def resource_limits(options: ContainerOptions) -> dict[str, Any]:
    """`create_host_config` arguments for the pipeline's container options that are set."""
    limits: dict[str, Any] = {}
    if options.memory is not None:
        limits["mem_limit"] = options.memory
    if options.cpus is not None:
        limits["nano_cpus"] = round(options.cpus * 1_000_000_000)
    if options.shm_size is not None:
        limits["shm_size"] = options.shm_size
    if options.pids_limit is not None:
        limits["pids_limit"] = options.pids_limit
    return limits


class MultiplexedStreamDecoder:
    """Turns Docker's multiplexed attach stream (8-byte frame headers: stream, 0, 0, 0,
    big-endian size) into the plain bytes of stdout and stderr, in the order written.

    Works on chunks of any size and any split, so the reader can ask the socket for
    large blocks; the cost is per frame (one write of the step), never per line.
    """

    _HEADER_SIZE = 8

    def __init__(self) -> None:
        self._header = bytearray()
        self._remaining = 0

    def feed(self, data: bytes) -> bytes:
        payload = bytearray()
        view = memoryview(data)
        position = 0
        while position < len(data):
            if self._remaining == 0:
                missing = self._HEADER_SIZE - len(self._header)
                self._header += view[position : position + missing]
                position += missing
                if len(self._header) < self._HEADER_SIZE:
                    break
                self._remaining = int.from_bytes(self._header[4:8], "big")
                self._header.clear()
                continue
            taken = min(self._remaining, len(data) - position)
            payload += view[position : position + taken]
            position += taken
            self._remaining -= taken
        return bytes(payload)


class _ThreadToLoopChannel:
    """Chunks handed from a reader thread to the event loop, ended by `close`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.done = asyncio.Event()

    def send(self, chunk: bytes) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._close_in_loop)

    def _close_in_loop(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self._queue.put_nowait(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk


class DockerStepProcess:
    """A step running in its own container; removed once it has ended."""

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        attach_socket: Any,
        stop_timeout: float | None,
    ) -> None:
        self.container_id = container_id
        self._client = client
        self._socket = attach_socket
        self._raw_socket: socket.socket = getattr(attach_socket, "_sock", attach_socket)
        self._stop_timeout = stop_timeout
        self._exit_code: int | None = None
        self._wait_lock = asyncio.Lock()
        self._channel = _ThreadToLoopChannel(asyncio.get_running_loop())
        threading.Thread(
            target=self._read_attach_stream, name=f"docker-output-{container_id[:12]}", daemon=True
        ).start()

    def output(self) -> AsyncIterator[bytes]:
        return self._channel.chunks()

    async def wait(self) -> int:
        async with self._wait_lock:
            if self._exit_code is None:
                # The attach stream ends when the container does; waiting for it first
                # means no output is lost to the removal of the container.
                await self._channel.done.wait()
                self._exit_code = await asyncio.to_thread(self._wait_and_remove)
            return self._exit_code

    async def stop(self, grace: float) -> None:
        if self._exit_code is not None:
            return
        seconds = self._stop_timeout if self._stop_timeout is not None else grace
        try:
            # The engine sends SIGTERM, waits, then SIGKILLs; its timeout is whole seconds.
            await asyncio.to_thread(
                self._client.api.stop, self.container_id, timeout=math.ceil(seconds)
            )
        except docker.errors.NotFound:
            return

    def close_output(self) -> None:
        """Stop reading the attach stream (cleanup); the reader thread then ends."""
        # A shutdown, not a close: it wakes a reader blocked on the socket, which a close
        # from another thread would not. (docker-py hands out a SocketIO around it.)
        with contextlib.suppress(OSError):
            self._raw_socket.shutdown(socket.SHUT_RDWR)

    def _read_attach_stream(self) -> None:
        decoder = MultiplexedStreamDecoder()
        try:
            while data := read_socket(self._socket, READ_CHUNK_SIZE):
                if payload := decoder.feed(data):
                    self._channel.send(payload)
        except (OSError, ValueError):
            # The socket was closed by cleanup; the output simply ends.
            pass
        finally:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._channel.close()

    def _wait_and_remove(self) -> int:
        try:
            status: int = self._client.api.wait(self.container_id)["StatusCode"]
        finally:
            _remove_container(self._client, self.container_id)
        return status


class DockerBuildProcess:
    """An image build (`StepKind.IMAGE_BUILD`); its log lines are the step's output.

    A build cannot be interrupted through the SDK: `stop` ends the step at once (exit
    128+15) and stops forwarding output, while the engine finishes that build by itself.
    """

    _STOPPED_EXIT_CODE = 143

    def __init__(self, client: docker.DockerClient, workspace: str, step: StepPlan) -> None:
        assert step.image_tag is not None
        self._client = client
        self._workspace = workspace
        self._dockerfile = step.dockerfile or "Dockerfile"
        self._tag = step.image_tag
        self._exit_code: int | None = None
        self._stopped = False
        self._channel = _ThreadToLoopChannel(asyncio.get_running_loop())
        threading.Thread(target=self._build, name=f"docker-build-{self._tag}", daemon=True).start()

    def output(self) -> AsyncIterator[bytes]:
        return self._channel.chunks()

    async def wait(self) -> int:
        await self._channel.done.wait()
        assert self._exit_code is not None
        return self._exit_code

    async def stop(self, grace: float) -> None:
        if self._channel.done.is_set():
            return
        self._stopped = True
        self._exit_code = self._STOPPED_EXIT_CODE
        self._channel.close()
        await self._channel.done.wait()

    def _build(self) -> None:
        exit_code = 0
        try:
            for record in self._client.api.build(
                path=self._workspace,
                dockerfile=self._dockerfile,
                tag=self._tag,
                decode=True,
                rm=True,
                forcerm=True,
            ):
                if self._stopped:
                    return
                text, failed = _build_record_text(record)
                if failed:
                    exit_code = 1
                if text:
                    self._channel.send(text.encode())
        except (docker.errors.DockerException, OSError) as exc:
            exit_code = 1
            self._channel.send(f"image build failed: {exc}\n".encode())
        finally:
            if not self._stopped:
                self._exit_code = exit_code
                self._channel.close()


def _build_record_text(record: dict[str, Any]) -> tuple[str, bool]:
    """The text a build log record shows, and whether it reports the build's failure."""
    if "error" in record:
        return f"{record['error'].rstrip()}\n", True
    if "stream" in record:
        return str(record["stream"]), False
    if "status" in record:
        progress = f" {record['progress']}" if record.get("progress") else ""
        return f"{record['status']}{progress}\n", False
    return "", False


def _remove_container(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # 409: a removal of this container is already under way (cleanup racing a step).
        if exc.status_code != 409:
            raise


def remove_leftovers(
    client: docker.DockerClient,
    older_than: float | None = None,
    labels: Mapping[str, str] | None = None,
) -> int:
    """Remove containers of conveyor jobs that a crashed agent left behind.

    `older_than`: seconds; only containers created at least that long ago are removed
    (so that the jobs running now are spared). `labels`: only containers that also carry
    all of these (e.g. the labels an agent gives its jobs). Returns how many were removed.
    """
    wanted = [JOB_LABEL, *(f"{name}={value}" for name, value in (labels or {}).items())]
    summaries = client.api.containers(all=True, filters={"label": wanted})
    now = time.time()
    removed = 0
    for summary in summaries:
        if older_than is not None and now - float(summary["Created"]) < older_than:
            continue
        _remove_container(client, summary["Id"])
        removed += 1
    return removed


@dataclass
class _JobState:
    holder_id: str | None = None
    images_present: set[str] = field(default_factory=set)
    steps: list[DockerStepProcess] = field(default_factory=list)


class PullPolicy(StrEnum):
    MISSING = "missing"
    """Pull an image only when the engine lacks it (the default)."""
    NEVER = "never"
    """Never pull: a missing image is an error at once. Tests use it, so that no run
    makes the engine reach for a registry."""


PULL_POLICY_VARIABLE = "CONVEYOR_DOCKER_PULL"


class DockerBackend:
    """Runs each step in a fresh container of the step's (or the job's) image."""

    name: ClassVar[str] = "docker"
    shares_workspace: ClassVar[bool] = True

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 60.0,
        pull_timeout: float = 20.0,
        pull: PullPolicy | str | None = None,
    ) -> None:
        """`base_url`: the engine's address (default: DOCKER_HOST or the local socket).
        `pull_timeout`: seconds a pull may stay silent before it counts as failed.
        `pull`: when to pull images (default: $CONVEYOR_DOCKER_PULL, else `missing`)."""
        policy = pull or os.environ.get(PULL_POLICY_VARIABLE) or PullPolicy.MISSING
        try:
            self._pull_policy = PullPolicy(policy)
        except ValueError:
            raise BackendError(
                f"pull policy {policy!r} (from {PULL_POLICY_VARIABLE} or the options) is not "
                f"one of: {', '.join(PullPolicy)}"
            ) from None
        self._base_url = base_url
        self._timeout = timeout
        self._pull_timeout = pull_timeout
        self._client: docker.DockerClient | None = None
        self._jobs: dict[str, _JobState] = {}

    def default_network(self) -> NetworkMode:
        """`bridge` when the engine has Docker's default bridge network (steps reach the
        outside, as users of other CIs expect), else `job` (an engine started with
        `--bridge=none`, as on hosts without network)."""
        try:
            networks = self._connect().networks.list(names=["bridge"])
        except (BackendError, docker.errors.DockerException):
            return NetworkMode.JOB
        return NetworkMode.BRIDGE if networks else NetworkMode.JOB

    def paths(self, job: JobContext) -> StepPaths:
        return StepPaths(workspace=job.plan.workspace_path, output=job.plan.output_path)

    async def prepare(self, job: JobContext) -> None:
        client = await asyncio.to_thread(self._connect)
        state = self._jobs.setdefault(job.key, _JobState())
        plan = job.plan
        if plan.services and job.network is NetworkMode.NONE:
            raise BackendError(
                f"job {plan.name!r} in {plan.source} has services but runs without network "
                "(network `none`), so no step could reach them; use network `job`, or "
                "remove `services:`"
            )
        images = [self._step_image(job, step) for step in plan.steps if _runs_in_container(step)]
        images += [service.image for service in plan.services]
        # An image that a build step of this job makes cannot be there yet; `start`
        # checks it when the step that uses it comes.
        built_here = {step.image_tag for step in plan.steps if step.kind is StepKind.IMAGE_BUILD}
        for image in dict.fromkeys(image for image in images if image not in built_here):
            await self._ensure_image(client, job, state, image)
        if plan.services:
            await asyncio.to_thread(self._start_services, client, job, state)

    async def start(
        self, job: JobContext, invocation: StepInvocation
    ) -> DockerStepProcess | DockerBuildProcess:
        client = await asyncio.to_thread(self._connect)
        state = self._jobs.setdefault(job.key, _JobState())
        step = invocation.step
        if step.kind is StepKind.IMAGE_BUILD:
            if not step.image_tag:
                raise BackendError(
                    f"image-build step {step.name!r} in {job.plan.source} has no image tag; "
                    "set `image_tag:` on the step"
                )
            return DockerBuildProcess(client, str(job.workspace), step)
        image = self._step_image(job, step)
        await self._ensure_image(client, job, state, image)
        container_id, attach_socket = await asyncio.to_thread(
            self._create_step_container, client, job, state, invocation, image
        )
        process = DockerStepProcess(
            client, container_id, attach_socket, job.plan.container.stop_timeout
        )
        state.steps.append(process)
        return process

    async def cleanup(self, job: JobContext) -> None:
        state = self._jobs.pop(job.key, None)
        if self._client is None:
            return  # never connected: nothing of this job can exist
        client = self._client
        if state is not None:
            for step in state.steps:
                step.close_output()
        summaries = await asyncio.to_thread(
            client.api.containers, all=True, filters={"label": f"{JOB_LABEL}={job.key}"}
        )
        await asyncio.gather(
            *(asyncio.to_thread(_remove_container, client, s["Id"]) for s in summaries)
        )

    def _connect(self) -> docker.DockerClient:
        if self._client is not None:
            return self._client
        try:
            client = self._new_client(self._timeout)
            client.ping()
        except docker.errors.DockerException as exc:
            where = self._base_url or "DOCKER_HOST or the default socket"
            raise BackendError(
                f"the Docker engine at {where} does not answer ({exc}); {_ENGINE_HELP}"
            ) from exc
        self._client = client
        return client

    def _new_client(self, timeout: float) -> docker.DockerClient:
        if self._base_url is not None:
            return docker.DockerClient(base_url=self._base_url, timeout=round(timeout))
        return docker.from_env(timeout=round(timeout))

    @staticmethod
    def _step_image(job: JobContext, step: StepPlan) -> str:
        image = step.image or job.plan.image
        if image is None:
            raise BackendError(
                f"step {step.name!r} of job {job.plan.name!r} in {job.plan.source} has no image; "
                "set `image:` on the pipeline or on the step"
            )
        return image

    async def _ensure_image(
        self, client: docker.DockerClient, job: JobContext, state: _JobState, image: str
    ) -> None:
        if image in state.images_present:
            return
        await asyncio.to_thread(self._ensure_image_blocking, client, job, image)
        state.images_present.add(image)

    def _ensure_image_blocking(
        self, client: docker.DockerClient, job: JobContext, image: str
    ) -> None:
        try:
            client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        if self._pull_policy is PullPolicy.NEVER:
            raise BackendError(
                f"image {image} is not on this Docker engine, and pulling is off "
                f"({PULL_POLICY_VARIABLE}=never); build or load it (`docker build`, "
                f"`docker load`), or change `image:` in {job.plan.source}"
            )
        try:
            self._pull(image)
        except (docker.errors.DockerException, OSError) as exc:
            raise BackendError(
                f"image {image} is not on this Docker engine and could not be pulled: "
                f"{_short_reason(exc)}; build or pull it, or change `image:` in {job.plan.source}"
            ) from exc

    def _pull(self, image: str) -> None:
        # A client of its own with a short timeout: without a registry the pull must fail
        # fast, yet a slow pull that keeps reporting progress may go on.
        pull_client = self._new_client(self._pull_timeout)
        try:
            for record in pull_client.api.pull(image, stream=True, decode=True):
                if "error" in record:
                    raise docker.errors.APIError(str(record["error"]))
        finally:
            pull_client.close()

    def _start_services(
        self, client: docker.DockerClient, job: JobContext, state: _JobState
    ) -> None:
        plan = job.plan
        holder_image = plan.image or plan.services[0].image
        state.holder_id = self._run_detached(
            client,
            job,
            image=holder_image,
            role=ContainerRole.HOLDER,
            entrypoint=["/bin/sh", "-c", HOLDER_SCRIPT],
            environment={},
            host_config=client.api.create_host_config(
                network_mode=holder_network_mode(job.network),
                extra_hosts={service.name: "127.0.0.1" for service in plan.services},
            ),
        )
        for service in plan.services:
            entrypoint = (
                ["/bin/sh", "-c", "\n".join(service.commands)] if service.commands else None
            )
            self._run_detached(
                client,
                job,
                image=service.image,
                role=ContainerRole.SERVICE,
                entrypoint=entrypoint,
                environment=dict(service.env),
                host_config=client.api.create_host_config(
                    network_mode=network_mode_for_steps(job.network, state.holder_id)
                ),
                what=f"service {service.name!r}",
            )

    @staticmethod
    def _run_detached(
        client: docker.DockerClient,
        job: JobContext,
        *,
        image: str,
        role: ContainerRole,
        entrypoint: list[str] | None,
        environment: dict[str, str],
        host_config: dict[str, Any],
        what: str = "the job's network holder",
    ) -> str:
        try:
            created = client.api.create_container(
                image,
                entrypoint=entrypoint,
                environment=environment,
                labels=container_labels(job, role),
                host_config=host_config,
                use_config_proxy=False,
            )
            client.api.start(created["Id"])
        except docker.errors.APIError as exc:
            raise BackendError(
                f"{what} of job {job.plan.name!r} ({image}) could not be started: "
                f"{_short_reason(exc)}; check `services:` in {job.plan.source}"
            ) from exc
        container_id: str = created["Id"]
        return container_id

    def _create_step_container(
        self,
        client: docker.DockerClient,
        job: JobContext,
        state: _JobState,
        invocation: StepInvocation,
        image: str,
    ) -> tuple[str, Any]:
        plan = job.plan
        options = plan.container
        host_config = client.api.create_host_config(
            binds={
                str(job.workspace): {"bind": plan.workspace_path, "mode": "rw"},
                str(job.output): {"bind": plan.output_path, "mode": "rw"},
            },
            network_mode=network_mode_for_steps(job.network, state.holder_id),
            **resource_limits(options),
        )
        try:
            created = client.api.create_container(
                image,
                entrypoint=["/bin/sh", "-c", invocation.script],
                working_dir=plan.workspace_path,
                environment=dict(invocation.env),
                labels=container_labels(job, ContainerRole.STEP),
                host_config=host_config,
                user=options.user or "",
                tty=False,
                stdin_open=False,
                use_config_proxy=False,
            )
        except docker.errors.APIError as exc:
            raise BackendError(
                f"the container of step {invocation.step.name!r} ({image}) could not be "
                f"created: {_short_reason(exc)}; check `image:` and the container options "
                f"in {plan.source}"
            ) from exc
        container_id: str = created["Id"]
        try:
            # Attached before it starts, so not a byte of the step's output is missed.
            attach_socket = client.api.attach_socket(
                container_id, params={"stdout": 1, "stderr": 1, "stream": 1}
            )
            client.api.start(container_id)
        except docker.errors.APIError as exc:
            _remove_container(client, container_id)
            raise BackendError(
                f"the container of step {invocation.step.name!r} ({image}) could not be "
                f"started: {_short_reason(exc)}; check the container options in {plan.source}"
            ) from exc
        return container_id, attach_socket


def _runs_in_container(step: StepPlan) -> bool:
    return step.kind is StepKind.SCRIPT and step.skip_reason is None


def _short_reason(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)
