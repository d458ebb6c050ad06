"""The server's WebSocket protocol against real clients (the `websockets` library's, and
a bare socket for what is on the wire) over real HTTP: the frame writer it puts in each
connection's scope sends a message compressed once as it is to the connections that
took per-message deflate with the server's full window and no context takeover, and as
its text, uncompressed, to every other connection; the ASGI interface works as before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from starlette.routing import WebSocketRoute
from uvicorn.protocols.utils import ClientDisconnected
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect

from conveyor.server.websocket_protocol import (
    FRAME_WRITER,
    FrameWriter,
    SharedDeflateProtocol,
    deflate,
    frame_head,
)
from tests.fixtures.rawwebsocket import inflate, raw_websocket
from tests.fixtures.servers import serve

TEXT = '{"type": "lines", "lines": ["the text"]}'
OTHER = '{"type": "lines", "lines": ["the precompressed bytes"]}'
"""What the test app hands over as the compressed form of TEXT: deliberately another
message, so that a client shows which of the two the server sent."""
PLAIN = "a message without a compressed form " * 20
THROUGH_ASGI = "a message sent through ASGI " * 20


def _app(after_close: list[str]) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def both_forms(websocket: WebSocket) -> None:
        await websocket.accept()
        write: FrameWriter = websocket.scope["extensions"][FRAME_WRITER]
        await write(TEXT, deflate(OTHER.encode()))
        await write(PLAIN, None)
        await websocket.send_text(THROUGH_ASGI)
        # Then wait for the client to go, and write again.
        message = await websocket.receive()
        assert message["type"] == "websocket.disconnect"
        for _ in range(100):
            try:
                await write(PLAIN, None)
            except ClientDisconnected:
                after_close.append("ClientDisconnected")
                return
            await asyncio.sleep(0.01)
        after_close.append("wrote to a closed connection")

    return app


@pytest.fixture(scope="module")
def after_close() -> list[str]:
    return []


@pytest.fixture(scope="module")
def base_url(after_close: list[str]) -> Iterator[str]:
    with serve(_app(after_close)) as url:
        yield url


@pytest.fixture
def ws_url(base_url: str) -> str:
    return "ws" + base_url.removeprefix("http") + "/ws"


def _frames_on_the_wire(base_url: str, count: int) -> list[tuple[int, bytes]]:
    """The first byte and payload of the first `count` frames of /ws."""
    with raw_websocket(base_url, "/ws", 10) as read_frame:
        return [read_frame() for _ in range(count)]


class TestFrameWriter:
    def test_client_taking_deflate_gets_the_precompressed_bytes_as_they_are(
        self, ws_url: str
    ) -> None:
        with connect(ws_url) as connection:  # offers permessage-deflate, as browsers do
            assert "server_no_context_takeover" in str(
                connection.response.headers["Sec-WebSocket-Extensions"]
            )
            assert connection.recv(timeout=10) == OTHER
            assert connection.recv(timeout=10) == PLAIN
            assert connection.recv(timeout=10) == THROUGH_ASGI

    def test_on_the_wire_shared_bytes_compressed_plain_text_not_asgi_compressed(
        self, base_url: str
    ) -> None:
        (first, shared), (second, plain), (third, through_asgi) = _frames_on_the_wire(base_url, 3)
        assert (first, shared) == (0xC1, deflate(OTHER.encode()))  # FIN, RSV1, text
        assert (second, plain) == (0x81, PLAIN.encode())  # FIN, text: as it is
        # Through ASGI, the library compresses for the connection.
        assert third == 0xC1
        assert inflate(through_asgi) == THROUGH_ASGI.encode()

    def test_client_without_compression_gets_the_text(self, ws_url: str) -> None:
        with connect(ws_url, compression=None) as connection:
            assert "Sec-WebSocket-Extensions" not in connection.response.headers
            assert connection.recv(timeout=10) == TEXT
            assert connection.recv(timeout=10) == PLAIN
            assert connection.recv(timeout=10) == THROUGH_ASGI

    def test_client_asking_a_smaller_server_window_gets_the_text(self, ws_url: str) -> None:
        # The shared bytes were made with a 15-bit window: not right for this client.
        smaller = ClientPerMessageDeflateFactory(server_max_window_bits=10)
        with connect(ws_url, compression=None, extensions=[smaller]) as connection:
            assert "server_max_window_bits=10" in str(
                connection.response.headers["Sec-WebSocket-Extensions"]
            )
            assert connection.recv(timeout=10) == TEXT
            assert connection.recv(timeout=10) == PLAIN

    def test_writing_after_the_client_left_raises_client_disconnected(
        self, ws_url: str, after_close: list[str]
    ) -> None:
        after_close.clear()
        with connect(ws_url) as connection:
            for _ in range(3):
                connection.recv(timeout=10)
        for _ in range(500):
            if after_close:
                break
            asyncio.run(asyncio.sleep(0.01))
        assert after_close == ["ClientDisconnected"]


class TestLogLines:
    def test_accepted_line_is_at_debug_level_and_the_library_says_nothing(
        self, ws_url: str
    ) -> None:
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("conveyor.websocket")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            loggers[0].setLevel(logging.INFO)
            with connect(ws_url + "?token=abc") as connection:
                connection.recv(timeout=10)
            loggers[0].setLevel(logging.DEBUG)
            with connect(ws_url + "?token=def") as connection:
                connection.recv(timeout=10)
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(handler)
                logger.setLevel(level)
        lines = [(record.levelno, record.getMessage()) for record in records]
        accepted = [(level, text) for level, text in lines if "[accepted]" in text]
        assert len(accepted) == 1
        assert accepted[0][0] == logging.DEBUG
        assert accepted[0][1].endswith(' - "WebSocket /ws?token=def" [accepted]')
        assert not [text for _, text in lines if text in ("connection open", "connection closed")]


class TestDeflate:
    def test_payload_inflates_alone_to_the_text(self) -> None:
        text = "".join(f"line {i} of the log\n" for i in range(10_000)).encode()
        payload = deflate(text)
        assert len(payload) < len(text) // 5
        assert inflate(payload) == text


class TestFrameHead:
    @pytest.mark.parametrize(
        ("length", "head"),
        [
            (0, b"\xc1\x00"),
            (125, b"\xc1\x7d"),
            (126, b"\xc1\x7e\x00\x7e"),
            (65_535, b"\xc1\x7e\xff\xff"),
            (65_536, b"\xc1\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        ],
    )
    def test_final_compressed_text_frame_with_each_length_form(
        self, length: int, head: bytes
    ) -> None:
        assert frame_head(length) == head

    def test_uncompressed_frame_has_rsv1_clear(self) -> None:
        assert frame_head(300, compressed=False) == b"\x81\x7e\x01\x2c"


class TestRoutingDirectly:
    def test_a_direct_route_skips_the_middleware_and_others_do_not(self) -> None:
        passed: list[str] = []

        async def direct(websocket: WebSocket) -> None:
            await websocket.accept()
            # The same scope as through the application: its app and path parameters.
            assert websocket.app is app
            await websocket.send_text(f"direct {websocket.path_params['name']}")
            await websocket.close()

        route = WebSocketRoute("/direct/{name}", direct)
        app = FastAPI()
        app.router.routes.append(route)

        @app.websocket("/routed")
        async def routed(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_text("routed")
            await websocket.close()

        def recording(inner: Any) -> Any:
            async def middleware(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "websocket":
                    passed.append(scope["path"])
                await inner(scope, receive, send)

            return middleware

        app.add_middleware(recording)
        protocol = SharedDeflateProtocol.routing_directly(app, [route])
        with serve(app, ws=protocol) as url:
            base = "ws" + url.removeprefix("http")
            with connect(base + "/direct/ada") as connection:
                assert connection.recv(timeout=10) == "direct ada"
            with connect(base + "/routed") as connection:
                assert connection.recv(timeout=10) == "routed"
            with pytest.raises(InvalidStatus):  # not the route's: refused by the app
                connect(base + "/direct/ada/more")
        assert passed == ["/routed", "/direct/ada/more"]
