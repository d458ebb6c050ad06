"""Real HTTP receivers on 127.0.0.1 that record what they are sent: they play Discord,
Slack, webhook targets and forge APIs (the only thing faked: those services are across
the internet). Each answers as the service it plays does (see `Answer` and the
constants below), so the senders meet the answers they will meet in production."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    content_type: str = "text/plain"


def json_answer(status: int, body: Any) -> Answer:
    return Answer(status, json.dumps(body).encode(), "application/json")


# What each service answers on success, per its API reference.
SLACK_OK = Answer(200, b"ok", "text/plain")
DISCORD_SAVED = json_answer(200, {"id": "1", "type": 0, "content": ""})  # wait=true
FORGE_CREATED = json_answer(201, {"id": 1, "state": "pending"})


@dataclass
class Received:
    method: str
    path: str
    """The request target as sent: path and query."""
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes

    @property
    def route(self) -> str:
        """The path without the query."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    """Error codes to answer first, in order; then `answer`."""
    answer: Answer = SLACK_OK
    redirect_to: str | None = None
    received: threading.Event = field(default_factory=threading.Event)
    """Set at each request (tests that wait for a background duty wait on it)."""


@contextmanager
def receiver(
    statuses: list[int] | None = None,
    redirect_to: str | None = None,
    answer: Answer = SLACK_OK,
) -> Iterator[Receiver]:
    state = Receiver(url="", statuses=list(statuses or []), answer=answer, redirect_to=redirect_to)

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.requests.append(
                Received(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )

        def _reply(self, answer: Answer) -> None:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def do_POST(self) -> None:
            self._record()
            try:
                if state.redirect_to is not None:
                    self.send_response(307)
                    self.send_header("Location", state.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif state.statuses:
                    self._reply(Answer(state.statuses.pop(0), b"failed"))
                else:
                    self._reply(state.answer)
            finally:
                state.received.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
