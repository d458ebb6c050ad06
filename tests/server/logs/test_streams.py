"""Live logs over a real WebSocket (the `websockets` client) against a real uvicorn
server, on SQLite and PostgreSQL: backlog, live lines and end, no gap, no duplicate."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conveyor.logstore import LineTimes
from conveyor.protocol.status import Status
from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.db.base import utcnow
from conveyor.server.events import Event, EventBus
from conveyor.server.logs import service, streams
from conveyor.server.logs.routes import CHECK_REMEMBERED_SECONDS
from conveyor.server.models.agent import Agent
from conveyor.server.models.job import Job
from conveyor.server.models.membership import Role
from conveyor.server.models.step import Step
from conveyor.server.runs import state
from conveyor.server.users import service as users_service
from conveyor.server.websocket_protocol import deflate
from tests.fixtures.databases import as_writer
from tests.fixtures.rawwebsocket import inflate, raw_websocket
from tests.fixtures.servers import serve
from tests.server.conftest import add_user, sign_in
from tests.server.logs.records import Records, add_member, add_run

pytestmark = pytest.mark.usefixtures("clean_data_dir")

RECEIVE_TIMEOUT = 20.0
BASE = 1_795_000_000_000
"""When the first line of a step started (ms since the epoch) in these tests."""


def _token(session: Session, name: str = "ada", *, is_admin: bool = True) -> str:
    user = add_user(session, name, is_admin=is_admin)
    as_writer(session)
    created = users_service.create_api_token(session, user, "ws")
    session.commit()
    return created.plaintext


def _ws_url(server_url: str, path: str) -> str:
    return "ws" + server_url.removeprefix("http") + path


def _receive_all(connection: ClientConnection) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = json.loads(connection.recv(timeout=RECEIVE_TIMEOUT))
        messages.append(message)
        if message["type"] in ("end", "error"):
            return messages


def _lines_of(messages: list[dict[str, Any]], step_id: int, first: int) -> list[str]:
    """The streamed lines of one step, checking that each message starts exactly where
    the previous one ended (no gap, no duplicate) and carries its lines' times (those
    `Agentlike` gives: line n started at `BASE + n`)."""
    lines: list[str] = []
    for message in messages:
        if message["type"] == "lines" and message["step"] == step_id:
            start = message["start"]
            assert start == first + len(lines), "a gap or a duplicate"
            times = [time for time, count in message["time_runs"] for _ in range(count)]
            assert times == [BASE + n for n in range(start, start + len(message["lines"]))]
            lines.extend(message["lines"])
    return lines


def _stored_text(settings: Settings, session: Session, step_id: int) -> list[str]:
    step = session.get(Step, step_id)
    assert step is not None
    return service.log_file(settings, step).read_bytes().decode().split("\n")


class Agentlike:
    """Writes a step's log the way an agent does: batches of bytes cut anywhere, at
    byte offsets, each request its own committed transaction on the server's sessions
    (so the server's event bus hears of it)."""

    def __init__(self, app: FastAPI, settings: Settings, step_id: int) -> None:
        self.factory: sessionmaker[Session] = app.state.session_factory
        self.write_options = dialect.write_transaction_options(app.state.engine)
        self.settings = settings
        self.step_id = step_id
        self.offset = 0
        self.lines_started = 0
        self.at_line_start = True

    def _in_transaction(self, work: Callable[[Session, Step], None]) -> None:
        with self.factory() as session:
            session.connection(execution_options=self.write_options)
            step = session.get(Step, self.step_id)
            assert step is not None
            work(session, step)
            session.commit()

    def send(self, data: bytes) -> None:
        """Append `data`, with the times of the lines that start in it: line n of the
        log started at `BASE + n` ms."""
        starts = data.count(b"\n") - data.endswith(b"\n") + self.at_line_start if data else 0
        times = LineTimes.of([BASE + self.lines_started + k for k in range(starts)])

        def append(session: Session, step: Step) -> None:
            self.offset = service.append(
                session, self.settings, step, self.offset, data, {}, times
            ).size

        self._in_transaction(append)
        self.lines_started += starts
        self.at_line_start = data.endswith(b"\n") if data else self.at_line_start

    def start(self) -> None:
        self._in_transaction(lambda session, step: state.start_step(session, step))

    def finish(self, status: Status = Status.SUCCESS) -> None:
        self._in_transaction(lambda session, step: state.finish_step(session, step, status))


def _in_job(app: FastAPI, job_id: int, change: Callable[[Session, Job], None]) -> None:
    """`change` the job in a transaction of the server's own sessions (so its events
    go out), as the server's services would."""
    factory: sessionmaker[Session] = app.state.session_factory
    with factory() as session:
        session.connection(execution_options=dialect.write_transaction_options(app.state.engine))
        job = session.get(Job, job_id)
        assert job is not None
        change(session, job)
        session.commit()


def _add_agent(session: Session) -> int:
    agent_row = Agent(name="a1")
    session.add(agent_row)
    session.commit()
    return agent_row.id


def _start_job(app: FastAPI, job_id: int, agent_id: int) -> None:
    """The agent claimed the job: one more attempt runs."""
    _in_job(app, job_id, lambda session, job: state.start_job(
        session, job, agent_id=agent_id, lease_id=f"lease-{job.attempts}",
        lease_expires_at=utcnow() + timedelta(minutes=5),
    ))  # fmt: skip


def _numbered(first: int, count: int) -> bytes:
    return b"".join(f"line {i} {'=' * (i % 40)}\n".encode() for i in range(first, first + count))


def _finished_step(
    session: Session, app: FastAPI, settings: Settings, index: int, lines: int
) -> tuple[Records, str, int]:
    """A run whose step `index` stored `lines` numbered lines and finished; with an
    admin's token and that step's id."""
    records = add_run(session)
    token = _token(session)
    step_id = records.steps[index].id
    agent = Agentlike(app, settings, step_id)
    agent.start()
    agent.send(_numbered(0, lines))
    agent.finish()
    return records, token, step_id


def _send_in_random_batches(agent: Agentlike, data: bytes, seed: int) -> None:
    chooser = random.Random(seed)
    at = 0
    while at < len(data):
        size = chooser.randint(1, 20_000)
        agent.send(data[at : at + size])
        at += size


class TestFollowStep:
    @pytest.mark.parametrize("offset", [0, 1_234])
    def test_lines_received_while_appended_equal_the_stored_lines(
        self,
        offset: int,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
    ) -> None:
        records = add_run(db_session)
        token = _token(db_session)
        step_id = records.steps[0].id
        agent = Agentlike(server_app, server_settings, step_id)
        agent.start()
        _send_in_random_batches(agent, _numbered(0, 3_000), seed=1)  # the backlog
        url = _ws_url(
            server_url,
            f"/api/v1/runs/{records.run.id}/logs/ws?step={step_id}&offset={offset}&token={token}",
        )

        def keep_writing() -> None:
            _send_in_random_batches(agent, _numbered(3_000, 30_000), seed=2)
            agent.send(b"last line without newline")
            agent.finish(Status.FAILURE)

        writer = threading.Thread(target=keep_writing)
        with connect(url) as connection:
            writer.start()
            messages = _receive_all(connection)
        writer.join()

        assert messages[0]["type"] == "status"
        assert messages[0]["step"] == step_id
        assert messages[-1] == {"type": "end", "status": "failure"}
        stored = _stored_text(server_settings, db_session, step_id)
        assert stored[-1] == "last line without newline"
        assert _lines_of(messages, step_id, offset) == stored[offset:]

    def test_many_viewers_joining_at_different_times_all_get_every_line(
        self,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
    ) -> None:
        records = add_run(db_session)
        token = _token(db_session)
        step_id = records.steps[0].id
        agent = Agentlike(server_app, server_settings, step_id)
        agent.start()
        url = _ws_url(
            server_url, f"/api/v1/runs/{records.run.id}/logs/ws?step={step_id}&token={token}"
        )
        results: dict[int, list[dict[str, Any]]] = {}
        failures: list[BaseException] = []
        joined = threading.Barrier(4)

        def view(number: int) -> None:
            try:
                with connect(url) as connection:
                    connection.recv(timeout=RECEIVE_TIMEOUT)  # the status: attached
                    joined.wait(timeout=RECEIVE_TIMEOUT)
                    results[number] = _receive_all(connection)
            except BaseException as error:
                failures.append(error)

        viewers = [threading.Thread(target=view, args=(n,)) for n in range(3)]
        for viewer in viewers:
            viewer.start()
        _send_in_random_batches(agent, _numbered(0, 2_000), seed=3)
        joined.wait(timeout=RECEIVE_TIMEOUT)
        _send_in_random_batches(agent, _numbered(2_000, 20_000), seed=4)
        agent.finish()
        for viewer in viewers:
            viewer.join()
        assert failures == []
        stored = _stored_text(server_settings, db_session, step_id)[:-1]  # ends with "\n"
        for messages in results.values():
            assert _lines_of(messages, step_id, 0) == stored
            assert messages[-1] == {"type": "end", "status": "success"}

    def test_finished_step_sends_its_backlog_then_the_end(
        self,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
    ) -> None:
        records, token, step_id = _finished_step(db_session, server_app, server_settings, 1, 12_000)
        url = _ws_url(
            server_url,
            f"/api/v1/runs/{records.run.id}/logs/ws?job={records.job.id}&index=1&token={token}",
        )
        with connect(url) as connection:
            messages = _receive_all(connection)
        lines = _lines_of(messages, step_id, 0)
        assert lines == [f"line {i} {'=' * (i % 40)}" for i in range(12_000)]
        # Batched: a few thousand lines per message, not one message per line.
        assert len([m for m in messages if m["type"] == "lines"]) <= 4
        assert messages[-1] == {"type": "end", "status": "success"}


class TestFollowJob:
    def test_cicd_path_streams_every_step_in_order_then_the_job_end(
        self,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
    ) -> None:
        records = add_run(db_session, steps=3)
        token = _token(db_session)
        agent_id = _add_agent(db_session)
        url = _ws_url(server_url, f"/jobs/{records.job.id}/ws?token={token}")

        def run_job() -> None:
            _start_job(server_app, records.job.id, agent_id)
            for step in records.steps[:2]:
                agent = Agentlike(server_app, server_settings, step.id)
                agent.start()
                _send_in_random_batches(agent, _numbered(0, 2_000), seed=step.index)
                agent.finish()
            _in_job(  # the third step: skipped
                server_app,
                records.job.id,
                lambda session, job: state.finish_job(session, job, Status.SUCCESS),
            )

        worker = threading.Thread(target=run_job)
        with connect(url) as connection:
            worker.start()
            messages = _receive_all(connection)
        worker.join()
        expected = [f"line {i} {'=' * (i % 40)}" for i in range(2_000)]
        assert _lines_of(messages, records.steps[0].id, 0) == expected
        assert _lines_of(messages, records.steps[1].id, 0) == expected
        steps_in_order = [m["step"] for m in messages if m["type"] == "lines"]
        assert steps_in_order == sorted(steps_in_order)
        finals = [
            (m["step"], m["status"])
            for m in messages
            if m["type"] == "status" and "index" not in m and Status(m["status"]).finished
        ]
        assert finals == [
            (records.steps[0].id, "success"),
            (records.steps[1].id, "success"),
            (records.steps[2].id, "skipped"),
        ]
        assert messages[-1] == {"type": "end", "status": "success"}

    def test_viewers_woken_together_share_their_look_for_the_next_step(
        self,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """After the last step, each viewer waits for the job's end and looks again at
        every change of the run: viewers woken by the same change make one query."""
        records = add_run(db_session, steps=1)
        token = _token(db_session)
        agent_id = _add_agent(db_session)
        looks: list[int] = []
        original = streams.LogStreams._job_step

        def counted(self: streams.LogStreams, job_id: int, index: int) -> Any:
            looks.append(index)
            return original(self, job_id, index)

        monkeypatch.setattr(streams.LogStreams, "_job_step", counted)

        _start_job(server_app, records.job.id, agent_id)
        agent = Agentlike(server_app, server_settings, records.steps[0].id)
        agent.start()
        agent.send(_numbered(0, 10))
        viewers = 20
        url = _ws_url(server_url, f"/jobs/{records.job.id}/ws?token={token}")
        with contextlib.ExitStack() as stack:
            connections = [stack.enter_context(connect(url)) for _ in range(viewers)]
            for connection in connections:  # every viewer follows the step
                while json.loads(connection.recv(timeout=RECEIVE_TIMEOUT))["type"] != "lines":
                    pass
            agent.finish()
            # Each viewer now waits for the job: its step is gone and the job runs.
            deadline = time.monotonic() + RECEIVE_TIMEOUT
            while looks.count(1) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            bus: EventBus = server_app.state.event_bus
            for _ in range(3):  # changes of the run that are not yet its end
                bus.publish([Event(topic=f"run:{records.run.id}", kind="status")])
                time.sleep(0.1)
            _in_job(
                server_app,
                records.job.id,
                lambda session, job: state.finish_job(session, job, Status.SUCCESS),
            )
            for connection in connections:
                assert _receive_all(connection)[-1] == {"type": "end", "status": "success"}
        # Without sharing: a look per viewer at each wake-up (20 x 5 here at least).
        assert 1 <= looks.count(1) <= 8, looks


class TestRequeuedJob:
    """A job put back in the queue (its agent was lost) runs again under a new attempt,
    whose log begins empty: viewers are told (`restart`) and get the new lines from 0."""

    def _requeue_once_seen(
        self, connection: ClientConnection, lines: int, app: FastAPI, job_id: int, agent_id: int
    ) -> None:
        """Once the viewer got `lines` lines live, the job goes back to the queue (its
        agent lost) and is claimed again: attempt 2 runs."""
        seen = 0
        while seen < lines:
            message = json.loads(connection.recv(timeout=RECEIVE_TIMEOUT))
            seen += len(message.get("lines", []))
        _in_job(app, job_id, lambda session, job: state.requeue_job(
            session, job, reason="agent lost"
        ))  # fmt: skip
        _start_job(app, job_id, agent_id)

    @staticmethod
    def _restarts(messages: list[dict[str, Any]]) -> list[int]:
        return [i for i, m in enumerate(messages) if m["type"] == "restart"]

    def test_a_step_viewer_gets_the_new_attempts_log_from_line_0(
        self,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
    ) -> None:
        records = add_run(db_session, steps=1)
        token = _token(db_session)
        agent_id = _add_agent(db_session)
        step_id, job_id = records.steps[0].id, records.job.id
        _start_job(server_app, job_id, agent_id)
        first = Agentlike(server_app, server_settings, step_id)
        first.start()
        first.send(_numbered(0, 300))
        url = _ws_url(
            server_url, f"/api/v1/runs/{records.run.id}/logs/ws?step={step_id}&token={token}"
        )
        with connect(url) as connection:
            self._requeue_once_seen(connection, 300, server_app, job_id, agent_id)
            second = Agentlike(server_app, server_settings, step_id)
            second.start()
            _send_in_random_batches(second, _numbered(0, 1_000), seed=5)
            second.finish()
            messages = _receive_all(connection)
        [restart] = self._restarts(messages)
        assert messages[restart] == {"type": "restart", "step": step_id, "attempt": 2}
        after = messages[restart + 1 :]
        assert _lines_of(after, step_id, 0) == [f"line {i} {'=' * (i % 40)}" for i in range(1_000)]
        assert after[-1] == {"type": "end", "status": "success"}
        # A viewer who comes now reads the new attempt's log, without a restart.
        with connect(url) as connection:
            again = _receive_all(connection)
        assert not self._restarts(again)
        assert len(_lines_of(again, step_id, 0)) == 1_000

    def test_a_job_viewer_begins_again_with_the_first_step(
        self,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
    ) -> None:
        records = add_run(db_session, steps=2)
        token = _token(db_session)
        agent_id = _add_agent(db_session)
        first_step, second_step = (step.id for step in records.steps)
        job_id = records.job.id
        _start_job(server_app, job_id, agent_id)
        done = Agentlike(server_app, server_settings, first_step)
        done.start()
        done.send(_numbered(0, 50))
        done.finish()
        running = Agentlike(server_app, server_settings, second_step)
        running.start()
        running.send(_numbered(0, 20))
        url = _ws_url(server_url, f"/jobs/{job_id}/ws?token={token}")
        with connect(url) as connection:
            self._requeue_once_seen(connection, 70, server_app, job_id, agent_id)
            for step_id, count in ((first_step, 400), (second_step, 30)):
                agent = Agentlike(server_app, server_settings, step_id)
                agent.start()
                agent.send(_numbered(0, count))
                agent.finish()
            _in_job(
                server_app,
                job_id,
                lambda session, job: state.finish_job(session, job, Status.SUCCESS),
            )
            messages = _receive_all(connection)
        [restart] = self._restarts(messages)
        assert messages[restart] == {"type": "restart", "step": second_step, "attempt": 2}
        after = messages[restart + 1 :]
        assert _lines_of(after, first_step, 0) == [f"line {i} {'=' * (i % 40)}" for i in range(400)]
        assert len(_lines_of(after, second_step, 0)) == 30
        assert after[-1] == {"type": "end", "status": "success"}


class TestStreamPermissions:
    def _refusal(self, url: str) -> tuple[dict[str, Any], int | None]:
        """The error message of a refused stream and the close code that follows it."""
        with connect(url) as connection:
            message = json.loads(connection.recv(timeout=RECEIVE_TIMEOUT))
            with pytest.raises(ConnectionClosed) as closed:
                connection.recv(timeout=RECEIVE_TIMEOUT)
        return message, None if closed.value.rcvd is None else closed.value.rcvd.code

    def test_anonymous_is_refused_with_4401(self, db_session: Session, server_url: str) -> None:
        records = add_run(db_session)
        url = _ws_url(
            server_url, f"/api/v1/runs/{records.run.id}/logs/ws?step={records.steps[0].id}"
        )
        message, code = self._refusal(url)
        assert message["type"] == "error"
        assert message["error"]["code"] == "not_authenticated"
        assert code == 4401

    def test_identical_requests_at_once_are_all_refused_when_the_check_refuses(
        self, db_session: Session, server_url: str
    ) -> None:
        # Identical requests in flight together share one check: its refusal must
        # reach every one of them.
        records = add_run(db_session)
        url = _ws_url(server_url, f"/jobs/{records.job.id}/ws?token=not-a-token")
        answers: list[tuple[dict[str, Any], int | None]] = []
        ready = threading.Barrier(8)

        def ask() -> None:
            ready.wait(timeout=RECEIVE_TIMEOUT)
            answers.append(self._refusal(url))

        askers = [threading.Thread(target=ask) for _ in range(8)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join()
        assert [(m["error"]["code"], code) for m, code in answers] == [("invalid_token", 4401)] * 8

    def test_a_check_answers_identical_requests_for_a_second_and_then_no_more(
        self, db_session: Session, server_url: str
    ) -> None:
        records = add_run(db_session)
        with db_session.begin():
            job = db_session.get(Job, records.job.id)
            assert job is not None
            state.finish_job(db_session, job, Status.CANCELLED)
        user = add_user(db_session, "tia")
        add_member(db_session, user, records.project, Role.VIEWER)
        created = users_service.create_api_token(db_session, user, "ws")
        db_session.commit()
        url = _ws_url(server_url, f"/jobs/{records.job.id}/ws?token={created.plaintext}")
        with connect(url) as connection:
            assert _receive_all(connection)[-1] == {"type": "end", "status": "cancelled"}
        users_service.delete_api_token(db_session, user, created.token.id)
        db_session.commit()
        revoked_at = time.monotonic()
        # Within the second, the same request is answered by the check before the token
        # was deleted; after it, it is checked again and refused.
        with connect(url) as connection:
            messages = _receive_all(connection)
        if time.monotonic() - revoked_at < CHECK_REMEMBERED_SECONDS:
            assert messages[-1] == {"type": "end", "status": "cancelled"}
        time.sleep(CHECK_REMEMBERED_SECONDS + 0.2)
        message, code = self._refusal(url)
        assert (message["error"]["code"], code) == ("invalid_token", 4401)

    def test_member_of_another_project_is_refused_with_4403(
        self, db_session: Session, server_url: str
    ) -> None:
        records = add_run(db_session)
        other = add_run(db_session, "other")
        token = _token(db_session, "mo", is_admin=False)
        user = users_service.get_user_by_name(db_session, "mo")
        add_member(db_session, user, other.project, Role.MAINTAINER)
        url = _ws_url(server_url, f"/jobs/{records.job.id}/ws?token={token}")
        message, code = self._refusal(url)
        assert message["error"]["code"] == "permission_denied"
        assert code == 4403

    def test_viewer_follows_with_the_session_cookie(
        self, db_session: Session, server_url: str, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        add_member(db_session, add_user(db_session, "vic"), records.project, Role.VIEWER)
        with httpx.Client(base_url=server_url) as client:
            cookie = sign_in(client, "vic").headers["set-cookie"].split(";")[0]
        with db_session.begin():
            job = db_session.get(Job, records.job.id)
            assert job is not None
            state.finish_job(db_session, job, Status.CANCELLED)
        url = _ws_url(server_url, f"/jobs/{records.job.id}/ws")
        with connect(url, additional_headers={"Cookie": cookie}) as connection:
            messages = _receive_all(connection)
        assert messages[-1] == {"type": "end", "status": "cancelled"}

    def test_unknown_run_is_refused_with_4404(self, db_session: Session, server_url: str) -> None:
        token = _token(db_session)
        message, code = self._refusal(
            _ws_url(server_url, f"/api/v1/runs/999999/logs/ws?step=1&token={token}")
        )
        assert message["error"]["code"] == "run_not_found"
        assert code == 4404

    @pytest.mark.parametrize(
        ("path", "name", "where"),
        [
            ("/jobs/{job}/ws?offset=-1", "offset", "query"),
            ("/jobs/{job}/ws?index=first", "index", "query"),
            ("/jobs/{job}/ws?offset=99999999999", "offset", "query"),
            ("/jobs/seven/ws", "job_id", "path"),
            ("/api/v1/runs/{run}/logs/ws?job={job}&offset=1.5", "offset", "query"),
            ("/api/v1/runs/{run}/logs/ws?step=%20", "step", "query"),
            ("/api/v1/runs/x1/logs/ws?step=1", "run_id", "path"),
        ],
    )
    def test_bad_parameter_is_refused_with_4422_naming_it(
        self, db_session: Session, server_url: str, path: str, name: str, where: str
    ) -> None:
        records = add_run(db_session)
        token = _token(db_session)
        target = path.format(job=records.job.id, run=records.run.id)
        separator = "&" if "?" in target else "?"
        message, code = self._refusal(_ws_url(server_url, f"{target}{separator}token={token}"))
        assert message["error"]["code"] == "invalid_input"
        assert f"{where} parameter {name} must be a whole number" in message["error"]["message"]
        assert message["error"]["detail"]["loc"] == [where, name]
        assert code == 4422


def _compressed_messages(server_url: str, path: str) -> list[tuple[bool, bytes]]:
    """The payloads of a stream's messages as a client asking for permessage-deflate
    gets them, each with whether it is compressed. Every message must be final; reads
    until the end message."""
    payloads = []
    with raw_websocket(server_url, path, RECEIVE_TIMEOUT) as read_frame:
        while True:
            first, payload = read_frame()
            # A final text frame: compressed (RSV1) or sent as it is.
            assert first in (0xC1, 0x81), hex(first)
            compressed = first == 0xC1
            payloads.append((compressed, payload))
            if json.loads(inflate(payload) if compressed else payload)["type"] == "end":
                return payloads


class TestCompressedOnceForAllViewers:
    def test_lines_messages_are_the_followers_compressed_bytes_for_every_viewer(
        self,
        db_session: Session,
        server_app: FastAPI,
        server_settings: Settings,
        server_url: str,
    ) -> None:
        records, token, step_id = _finished_step(db_session, server_app, server_settings, 0, 12_000)
        path = f"/api/v1/runs/{records.run.id}/logs/ws?step={step_id}&token={token}"
        first, second = (_compressed_messages(server_url, path) for _ in range(2))
        texts = [inflate(payload) if compressed else payload for compressed, payload in first]
        assert [json.loads(text)["type"] for text in texts][-1] == "end"
        lines_payloads = [
            payload
            for (compressed, payload), text in zip(first, texts, strict=True)
            if json.loads(text)["type"] == "lines"
        ]
        assert len(lines_payloads) >= 2
        assert all(compressed for compressed, payload in first if payload in lines_payloads)
        # Made by `deflate` once (the connection's own compressor, at another memory
        # level, would give other bytes), and the same bytes for both viewers.
        assert all(payload == deflate(inflate(payload)) for payload in lines_payloads)
        assert set(lines_payloads) <= {payload for _, payload in second}
        streamed = [
            line for payload in lines_payloads for line in json.loads(inflate(payload))["lines"]
        ]
        assert streamed == [f"line {i} {'=' * (i % 40)}" for i in range(12_000)]


class TestUnderAnotherWebSocketProtocol:
    def test_streams_send_text_through_asgi_without_the_frame_writer(
        self, db_session: Session, server_app: FastAPI, server_settings: Settings
    ) -> None:
        # uvicorn's own protocol puts no frame writer in the scope: the stream sends
        # its messages as text through ASGI (compressed per connection by the library).
        records, token, step_id = _finished_step(db_session, server_app, server_settings, 0, 7_000)
        with serve(create_app(server_settings), ws="websockets-sansio") as url:
            path = f"/api/v1/runs/{records.run.id}/logs/ws?step={step_id}&token={token}"
            with connect(_ws_url(url, path)) as connection:
                messages = _receive_all(connection)
        assert _lines_of(messages, step_id, 0) == [
            f"line {i} {'=' * (i % 40)}" for i in range(7_000)
        ]
        assert messages[-1] == {"type": "end", "status": "success"}
