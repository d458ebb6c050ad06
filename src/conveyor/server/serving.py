"""Serving the app with uvicorn, as `conveyor server` does: a stop that does not wait
out the agents' long polls, an access log that shows no secrets and no agent chatter,
and a heap whose start-up part the garbage collector leaves alone."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from conveyor.server.config import Settings
from conveyor.server.logs import routes as logs_routes
from conveyor.server.websocket_protocol import SharedDeflateProtocol

GRACEFUL_SHUTDOWN_SECONDS = 5
EVENT_LOOP = "asyncio"
"""Python's own event loop, not uvloop (which uvicorn would pick when installed): the
same server CPU and figures in `bench/server.py` (a), (b) and (c), measured in turn on
this machine, and 2.4 MiB less idle memory (its library, its four worker threads)."""
_SECRET_QUERY = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s\"]*", re.IGNORECASE)
_AGENT_PROTOCOL = "/api/v1/agent/"
_WEBSOCKET_CHATTER = frozenset({"connection open", "connection closed"})


def redact_query(text: str) -> str:
    """`text` (a path with its query, or a log line) with token values hidden: a
    WebSocket viewer may pass its token as `?token=` (browsers cannot set headers)."""
    return _SECRET_QUERY.sub(r"\1[hidden]", text)


class AccessLogFilter(logging.Filter):
    """Hides tokens in uvicorn's access and WebSocket lines, and leaves out the agent
    protocol's successful calls (claims, heartbeats, log batches: many per second
    with busy agents, and nothing a person reads); its failures are kept. Leaves out
    the WebSocket library's "connection open" and "connection closed" too: two lines
    per log viewer that say neither who nor what (uvicorn's "[accepted]" line does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _WEBSOCKET_CHATTER and not record.args:
            return False
        args = record.args
        if not isinstance(args, tuple):
            return True
        if len(args) == 5 and isinstance(args[2], str) and args[2].startswith(_AGENT_PROTOCOL):
            status = args[4]
            if isinstance(status, int) and status < 400:
                return False
        record.args = tuple(redact_query(arg) if isinstance(arg, str) else arg for arg in args)
        return True


class _Server(uvicorn.Server):
    """Sets `app.state.stopping` as soon as a stop is asked, so that waiting claims
    answer at once instead of holding the stop for the graceful timeout."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What the start made (modules, routes, models: most of the heap) lives as long
        # as the server. Frozen, a full collection no longer walks it: 7 ms instead of
        # 70 ms here, each time one falls in the middle of requests.
        gc.collect()
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        stopping: asyncio.Event = self.app.state.stopping
        if self.loop is not None:
            # A signal handler may run in the middle of the loop's own work.
            self.loop.call_soon_threadsafe(stopping.set)
        super().handle_exit(sig, frame)


def websocket_protocol(app: FastAPI) -> type[SharedDeflateProtocol]:
    """The WebSocket protocol to serve `app` with: per-message deflate, with a log
    message compressed once for all its viewers, and the log streams' routes (those
    `app` has) taken straight to them."""
    direct = [route for route in logs_routes.websocket_routes if route in app.router.routes]
    return SharedDeflateProtocol.routing_directly(app, direct)


def serve(app: FastAPI, settings: Settings) -> None:
    access_filter = AccessLogFilter()
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(access_filter)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        # Agents long-poll for up to 30 s; they are answered at once on a stop (see
        # `_Server`), so this bounds only slow downloads and log viewers.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ws=websocket_protocol(app),
        loop=EVENT_LOOP,
    )
    _Server(config, app).run()
