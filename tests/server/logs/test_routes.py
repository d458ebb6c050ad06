"""The log API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from array import array

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.agent.client import AgentClient, LogGap
from conveyor.agent.masking import MASK
from conveyor.logstore import now_ms
from conveyor.protocol.agents import LOG_CHUNK_MEDIA_TYPE, LogChunk
from conveyor.server.config import Settings
from conveyor.server.logs import service
from conveyor.server.models.membership import Role
from conveyor.server.models.project import Visibility
from conveyor.server.models.step import Step
from tests.server.agents.queue import add_agent, add_project, agent_headers, claim, queue_job
from tests.server.conftest import add_user, sign_in
from tests.server.logs.records import Records, add_member, add_run, add_secret

pytestmark = pytest.mark.usefixtures("clean_data_dir")


def _log(session: Session, settings: Settings, records: Records, data: bytes) -> None:
    service.append(session, settings, records.steps[0], 0, data, {})
    session.commit()


def _error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


class TestReadLogLines:
    def test_range_returns_text_lines_and_the_total(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        _log(db_session, server_settings, records, b"zero\none\ntwo\nthr\xffee\nfour\n")
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log?start=1&end=4")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body.pop("times") == service.read_times(server_settings, records.steps[0], 1, 3)
        assert body == {"start": 1, "lines": ["one", "two", "thr\ufffdee"], "total": 5}

    def test_secrets_of_the_project_are_masked_when_read(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        add_secret(db_session, server_settings, records.project, "TOKEN", "tok-123456")
        _log(db_session, server_settings, records, b"using tok-123456 now\n")
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log")
        assert response.json()["lines"] == [f"using {MASK.decode()} now"]

    def test_inverted_range_is_422_with_the_error_shape(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session)
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log?start=5&end=1")
        assert _error_code(response, 422) == "invalid_log_range"

    def test_unknown_step_is_404(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        assert _error_code(http.get("/api/v1/steps/999999/log"), 404) == "step_not_found"


class TestLogPermissions:
    def test_anonymous_is_401(self, http: httpx.Client, db_session: Session) -> None:
        records = add_run(db_session)
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log")
        assert _error_code(response, 401) == "not_authenticated"

    def test_viewer_of_the_project_may_read(self, http: httpx.Client, db_session: Session) -> None:
        records = add_run(db_session)
        add_member(db_session, add_user(db_session, "vic"), records.project, Role.VIEWER)
        sign_in(http, "vic")
        assert http.get(f"/api/v1/steps/{records.steps[0].id}/log").status_code == 200
        assert http.get(f"/api/v1/steps/{records.steps[0].id}/log/raw").status_code == 200

    def test_maintainer_of_another_project_is_403(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session)
        other = add_run(db_session, "other")
        add_member(db_session, add_user(db_session, "mo"), other.project, Role.MAINTAINER)
        sign_in(http, "mo")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log")
        assert _error_code(response, 403) == "permission_denied"
        raw = http.get(f"/api/v1/steps/{records.steps[0].id}/log/raw")
        assert _error_code(raw, 403) == "permission_denied"

    def test_signed_in_user_reads_a_public_project(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session, visibility=Visibility.PUBLIC)
        add_user(db_session, "pat")
        sign_in(http, "pat")
        assert http.get(f"/api/v1/steps/{records.steps[0].id}/log").status_code == 200


class TestDownloadRawLog:
    def test_whole_log_is_an_attachment_with_its_length_and_masked(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        add_secret(db_session, server_settings, records.project, "PW", "pass-word-1")
        data = b"".join(f"{i} pass-word-1 \xfe\n".encode("latin-1") for i in range(50_000))
        data += b"no newline at the end"
        _log(db_session, server_settings, records, data)
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log/raw")
        assert response.status_code == 200
        expected = data.replace(b"pass-word-1", MASK)
        assert response.content == expected
        assert response.headers["content-length"] == str(len(expected))
        assert response.headers["content-type"].startswith("text/plain")
        assert (
            response.headers["content-disposition"] == 'attachment; filename="demo-7-build-0.log"'
        )

    def test_step_without_log_downloads_empty(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session)
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[1].id}/log/raw")
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == "0"


class TestLineTimesFromTheAgent:
    """The agent's client sends batches with their lines' times to the agent API over
    real HTTP; the line-range API gives the times back beside the lines."""

    STARTED = now_ms() - 5_000

    @staticmethod
    def _claimed(http: httpx.Client, session: Session) -> tuple[str, int, str, int]:
        """A job of one step claimed by a new agent: its token, job id, lease, step id;
        and the admin "ada" to read it. Every row is written before the server writes
        (the claim): on SQLite, this session must not read, then write, meanwhile."""
        add_user(session, "ada", is_admin=True)
        project = add_project(session, "timed")
        job = queue_job(session, project)
        _, token = add_agent(session, "worker")
        claimed = claim(http, token)["jobs"]
        assert isinstance(claimed, list) and len(claimed) == 1
        step_id = session.scalars(select(Step.id).where(Step.job_id == job.id)).one()
        return token, job.id, claimed[0]["lease_id"], step_id

    @staticmethod
    def _send(
        url: str, token: str, job: int, lease: str, offset: int, data: bytes | LogChunk
    ) -> int:
        async def send() -> int:
            client = AgentClient(url, token, retry_for=5)
            try:
                return (await client.append_log(job, lease, 0, offset, data)).size
            finally:
                await client.close()

        return asyncio.run(send())

    def _read(self, http: httpx.Client, step_id: int) -> dict[str, object]:
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{step_id}/log")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    def test_times_sent_with_the_lines_come_back_with_the_range(
        self, http: httpx.Client, db_session: Session, server_url: str
    ) -> None:
        token, job, lease, step_id = self._claimed(http, db_session)
        first = LogChunk(b"one\ntw", self.STARTED, array("I", [0, 250]))
        size = self._send(server_url, token, job, lease, 0, first)
        # The rest of "two" starts no line; "three" starts one, 1.5 s after the step.
        self._send(
            server_url,
            token,
            job,
            lease,
            size,
            LogChunk(b"o\nthree\n", self.STARTED, array("I", [1_500])),
        )
        body = self._read(http, step_id)
        assert body["lines"] == ["one", "two", "three"]
        assert body["times"] == [self.STARTED, self.STARTED + 250, self.STARTED + 1_500]

    def test_resend_from_the_held_size_after_a_gap_keeps_times_on_their_lines(
        self, http: httpx.Client, db_session: Session, server_url: str
    ) -> None:
        token, job, lease, step_id = self._claimed(http, db_session)
        self._send(
            server_url, token, job, lease, 0, LogChunk(b"a\nb", self.STARTED, array("I", [0, 10]))
        )
        with pytest.raises(LogGap) as gap:
            self._send(
                server_url, token, job, lease, 9, LogChunk(b"d\n", self.STARTED, array("I", [30]))
            )
        assert gap.value.size == 3
        # The agent resends from byte 3 ("a\nb" held): the whole batch it had from byte
        # 2 on, overlapping what the server holds, with the times of all its lines.
        resent = LogChunk(b"b\nc\nd\n", self.STARTED, array("I", [10, 20, 30]))
        self._send(server_url, token, job, lease, 2, resent)
        body = self._read(http, step_id)
        assert body["lines"] == ["a", "b", "c", "d"]
        assert body["times"] == [self.STARTED + offset for offset in (0, 10, 20, 30)]

    def test_an_agent_sending_bytes_alone_gets_the_arrival_times(
        self, http: httpx.Client, db_session: Session, server_url: str
    ) -> None:
        token, job, lease, step_id = self._claimed(http, db_session)
        before = now_ms()
        self._send(server_url, token, job, lease, 0, b"old\nagent\n")
        after = now_ms()
        times = self._read(http, step_id)["times"]
        assert isinstance(times, list) and len(times) == 2
        assert all(before <= time <= after for time in times)

    def test_a_cut_short_chunk_is_refused_with_422_and_stores_nothing(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        token, job, lease, step_id = self._claimed(http, db_session)
        _, body = LogChunk(b"line\n", self.STARTED, array("I", [0])).encode()
        response = http.put(
            f"/api/v1/agent/jobs/{job}/steps/0/log?offset=0",
            content=body[:18],
            headers={**agent_headers(token, lease), "Content-Type": LOG_CHUNK_MEDIA_TYPE},
        )
        assert _error_code(response, 422) == "invalid_log_chunk"
        assert "line times" in response.json()["error"]["message"]
        db_session.expire_all()
        step = db_session.get(Step, step_id)
        assert step is not None and step.log_byte_size == 0
