"""How `conveyor server` serves: no tokens in its access log, no agent chatter, and a
garbage collector that leaves the start-up heap alone."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

import uvicorn
from fastapi import FastAPI

from conveyor.server.serving import AccessLogFilter, _Server, redact_query


def access_record(path: str, status: int) -> logging.LogRecord:
    # uvicorn.access's arguments: client, method, path with query, HTTP version, status.
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", status),
        None,
    )


class TestAccessLogFilter:
    def test_token_values_in_a_query_are_hidden(self) -> None:
        record = access_record("/api/v1/runs/3/logs/ws?job=4&token=cvy_abc_SECRET", 200)
        assert AccessLogFilter().filter(record)
        line = record.getMessage()
        assert "SECRET" not in line and "token=[hidden]" in line and "job=4" in line

    def test_websocket_lines_are_redacted_too(self) -> None:
        # uvicorn.error's WebSocket line: client and path with query.
        record = logging.LogRecord(
            "uvicorn.error",
            logging.INFO,
            __file__,
            1,
            '%s - "WebSocket %s" [accepted]',
            ("127.0.0.1:5000", "/jobs/4/ws?access_token=SECRET"),
            None,
        )
        assert AccessLogFilter().filter(record)
        assert "SECRET" not in record.getMessage()

    def test_successful_agent_protocol_calls_are_left_out_and_failures_kept(self) -> None:
        keep = AccessLogFilter()
        assert not keep.filter(access_record("/api/v1/agent/claim", 200))
        assert keep.filter(access_record("/api/v1/agent/jobs/1/finish", 409))
        assert keep.filter(access_record("/api/v1/agents", 200))

    def test_websocket_open_and_close_chatter_is_left_out(self) -> None:
        def websocket_line(message: str) -> logging.LogRecord:
            return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, message, (), None)

        keep = AccessLogFilter()
        assert not keep.filter(websocket_line("connection open"))
        assert not keep.filter(websocket_line("connection closed"))
        assert keep.filter(websocket_line("Application startup complete."))

    def test_redaction_leaves_other_parameters_alone(self) -> None:
        assert redact_query("/x?tokens=1&mytoken=2") == "/x?tokens=1&mytoken=2"
        assert redact_query("/x?Token=a&b=c") == "/x?Token=[hidden]&b=c"


class TestStartup:
    def test_what_the_start_made_is_frozen_out_of_the_collector(self) -> None:
        app = FastAPI()
        app.state.stopping = asyncio.Event()
        server = _Server(uvicorn.Config(app, lifespan="off", log_level="warning"), app)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))

        async def start_and_stop() -> int:
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
                await asyncio.sleep(0.01)
            frozen = gc.get_freeze_count()
            server.should_exit = True
            await serving
            return frozen

        gc.unfreeze()
        try:
            assert asyncio.run(start_and_stop()) > 10_000
        finally:
            gc.unfreeze()  # the rest of the test run collects as usual
            listener.close()
