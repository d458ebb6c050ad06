"""The agent's side of the agent protocol (`conveyor.protocol.agents`) over httpx.

Transient failures (the server restarting, a dropped connection, 502/503/504) are
retried with growing pauses, so a server restart costs an agent nothing; every other
answer is returned or raised as `ServerRefusedError`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from conveyor.protocol.agents import (
    LEASE_HEADER,
    AgentInfo,
    AgentRegistered,
    ArtifactInfo,
    ClaimRequest,
    ClaimResponse,
    Heartbeat,
    HeartbeatResponse,
    JobReport,
    LogAppended,
    LogChunk,
    StepEnd,
    StepReport,
    UploadStart,
    UploadState,
)

logger = logging.getLogger("conveyor.agent")
Model = TypeVar("Model", bound=BaseModel)
TRANSIENT_STATUS = frozenset({502, 503, 504})
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 5.0
CONNECT_TIMEOUT = 5.0
SHORTEST_TIMEOUT = 2.0


class ServerRefusedError(Exception):
    """The server answered with an error that retrying will not fix."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        try:
            error = response.json().get("error") or {}
        except ValueError:
            error = {}
        self.code: str = str(error.get("code", "http_error"))
        self.detail: Any = error.get("detail")
        message = error.get("message") or response.text[:200]
        super().__init__(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {message}"
        )


class LogGap(Exception):
    """The server holds fewer bytes of a log than the offset sent; resend from `size`."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the server holds {size} bytes of this log")
        self.size = size


class EndpointMissingError(Exception):
    """The server does not know this call (an older version): use the older calls."""


class AgentClient:
    """Calls of one agent, authenticated by its token. `retry_for` bounds how long a
    call keeps retrying transient failures before raising the last one."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        retry_for: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        self.retry_for = retry_for
        self.timeout = timeout
        """Longest wait for an answer (and for each read or write) before the request
        is retried on a new connection; `fit_to_lease` shortens it."""
        self._long_timeout = timeout
        self.ends_steps_with_log = True
        """Whether to send a step's log tail with its end report (`end_step`); off once
        the server turns out not to know that call."""
        self.finishes_with_step_end = True
        """Whether a finish report may carry the end of the job's last step; off once
        the server turns out not to know that field."""
        self._http = httpx.AsyncClient(
            base_url=server_url.rstrip("/") + "/api/v1/agent",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        )

    def fit_to_lease(self, lease_duration: float) -> None:
        """Wait at most a quarter of the lease (and no less than `SHORTEST_TIMEOUT`) for
        an answer. A connection that died without a word (a dead link, a NAT that forgot
        it) otherwise holds a heartbeat until the timeout, and one that outlasts the
        lease costs the agent its jobs; a retry on a new connection gets through as soon
        as the link is back."""
        self.timeout = min(self._long_timeout, max(SHORTEST_TIMEOUT, lease_duration / 4))
        self._http.timeout = httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT)

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: BaseModel | dict[str, Any] | None = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        lease_id: str | None = None,
        read_timeout: float | None = None,
        content_type: str = "application/octet-stream",
        retry_for: float | None = None,
    ) -> httpx.Response:
        headers = {LEASE_HEADER: lease_id} if lease_id else {}
        if content is not None:
            headers["Content-Type"] = content_type
        body = json.model_dump(mode="json") if isinstance(json, BaseModel) else json
        timeout = (
            httpx.Timeout(self.timeout, read=read_timeout, connect=CONNECT_TIMEOUT)
            if read_timeout
            else httpx.USE_CLIENT_DEFAULT
        )
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + (self.retry_for if retry_for is None else retry_for)
        pause = FIRST_PAUSE
        while True:
            try:
                response = await self._http.request(
                    method,
                    path,
                    json=body,
                    content=content,
                    params=params,
                    headers=headers,
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                if loop.time() + pause > give_up_at:
                    raise
                logger.warning("%s %s failed (%s); retrying in %.1fs", method, path, exc, pause)
            else:
                if response.status_code not in TRANSIENT_STATUS:
                    return response
                if loop.time() + pause > give_up_at:
                    raise ServerRefusedError(response)
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)

    async def _model(self, model: type[Model], response: httpx.Response) -> Model:
        if response.status_code >= 400:
            raise ServerRefusedError(response)
        return model.model_validate(response.json())

    async def register(self, info: AgentInfo) -> AgentRegistered:
        return await self._model(AgentRegistered, await self._call("POST", "/register", json=info))

    async def claim(self, free_slots: int, wait: float) -> ClaimResponse:
        response = await self._call(
            "POST",
            "/claim",
            json=ClaimRequest(free_slots=free_slots, wait=wait),
            # The server holds the answer up to `wait` when there is nothing to give.
            read_timeout=wait + self.timeout,
        )
        return await self._model(ClaimResponse, response)

    async def heartbeat(
        self, beat: Heartbeat, *, retry_for: float | None = None
    ) -> HeartbeatResponse:
        """`retry_for` (default: the client's) bounds the retries of this beat: a caller
        that beats on a timer gives up on a beat when the next one is due."""
        response = await self._call("POST", "/heartbeat", json=beat, retry_for=retry_for)
        return await self._model(HeartbeatResponse, response)

    async def append_log(
        self, job_id: int, lease_id: str, index: int, offset: int, data: bytes | LogChunk
    ) -> LogAppended:
        """Send log bytes (and, in a `LogChunk`, their lines' times) at `offset`;
        raises `LogGap` when the server holds fewer."""
        chunk = data if isinstance(data, LogChunk) else LogChunk(data)
        media_type, body = chunk.encode()
        response = await self._call(
            "PUT",
            f"/jobs/{job_id}/steps/{index}/log",
            content=body,
            params={"offset": offset},
            lease_id=lease_id,
            content_type=media_type,
        )
        _raise_log_gap(response)
        return await self._model(LogAppended, response)

    async def end_step(
        self,
        job_id: int,
        lease_id: str,
        index: int,
        report: StepReport,
        offset: int,
        chunk: LogChunk | None,
    ) -> LogAppended:
        """A step's log tail (from `offset`) and its end report in one call; raises
        `LogGap` as `append_log` does (nothing was applied then), and
        `EndpointMissingError` when the server is older than this call."""
        response = await self._call(
            "POST",
            f"/jobs/{job_id}/steps/{index}/end",
            json=StepEnd.of(report, offset, chunk),
            lease_id=lease_id,
        )
        if response.status_code in (404, 405) and not _has_error_shape(response):
            # Not our error shape: the route itself is unknown (a server before it).
            self.ends_steps_with_log = False
            raise EndpointMissingError(response.request.url.path)
        _raise_log_gap(response)
        return await self._model(LogAppended, response)

    async def report_step(self, job_id: int, lease_id: str, index: int, report: StepReport) -> None:
        response = await self._call(
            "POST", f"/jobs/{job_id}/steps/{index}", json=report, lease_id=lease_id
        )
        if response.status_code >= 400:
            raise ServerRefusedError(response)

    async def finish(self, job_id: int, lease_id: str, report: JobReport) -> None:
        """The job's final report. With `report.step_end`, raises `LogGap` as `end_step`
        does, and `EndpointMissingError` when the server is older than that field
        (nothing was applied in either case)."""
        # Without a step end, the field is left out: a server before it refuses it.
        body = report.model_dump(mode="json", exclude=None if report.step_end else {"step_end"})
        response = await self._call("POST", f"/jobs/{job_id}/finish", json=body, lease_id=lease_id)
        if report.step_end is not None:
            if response.status_code == 422 and "step_end" in response.text:
                # A server before the field: its model forbids fields it does not know.
                self.finishes_with_step_end = False
                raise EndpointMissingError("step_end in a finish report")
            _raise_log_gap(response)
        if response.status_code >= 400:
            raise ServerRefusedError(response)

    async def start_upload(self, job_id: int, lease_id: str, spec: UploadStart) -> UploadState:
        response = await self._call("POST", f"/jobs/{job_id}/uploads", json=spec, lease_id=lease_id)
        return await self._model(UploadState, response)

    async def upload_state(self, upload_id: str) -> UploadState:
        return await self._model(UploadState, await self._call("GET", f"/uploads/{upload_id}"))

    async def upload_chunk(
        self, upload_id: str, offset: int, data: bytes, *, retry_for: float | None = None
    ) -> UploadState:
        """Write `data` at `offset`. With `retry_for=0` a failure is raised at once, for a
        caller that asks `upload_state` where to go on rather than resending blindly."""
        response = await self._call(
            "PUT",
            f"/uploads/{upload_id}",
            content=data,
            params={"offset": offset},
            retry_for=retry_for,
        )
        return await self._model(UploadState, response)

    async def complete_upload(self, upload_id: str) -> ArtifactInfo:
        # The server hashes the whole upload before it answers: the long timeout.
        response = await self._call(
            "POST", f"/uploads/{upload_id}/complete", read_timeout=self._long_timeout
        )
        return await self._model(ArtifactInfo, response)


def _has_error_shape(response: httpx.Response) -> bool:
    """Whether the body is Conveyor's `{"error": {...}}` (a route's own answer)."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def _raise_log_gap(response: httpx.Response) -> None:
    """`LogGap` when the server answered that it holds fewer bytes than were sent at."""
    if response.status_code == 409:
        detail = _error_detail(response)
        if isinstance(detail, dict) and isinstance(detail.get("size"), int):
            raise LogGap(detail["size"])


def _error_detail(response: httpx.Response) -> Any:
    try:
        return (response.json().get("error") or {}).get("detail")
    except ValueError:
        return None
