"""The server's WebSocket protocol against real clients (the `websockets` library's) over
real HTTP: a message compressed once is sent as it is to the connections that took
per-message deflate with the server's full window and no context takeover, and as its
text to every other connection."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, WebSocket
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect

from conveyor.server.websocket_protocol import PRECOMPRESSED, deflate, frame_head
from tests.fixtures.servers import serve

TEXT = '{"type": "lines", "lines": ["the text"]}'
OTHER = '{"type": "lines", "lines": ["the precompressed bytes"]}'
"""What the test app hands over as the compressed form of TEXT: deliberately another
message, so that a client shows which of the two the server sent."""


def _app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def both_forms(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send(
            {"type": "websocket.send", "text": TEXT, PRECOMPRESSED: deflate(OTHER.encode())}
        )
        await websocket.send_text("a plain message " * 100)
        await websocket.close()

    return app


@pytest.fixture(scope="module")
def ws_url() -> Iterator[str]:
    with serve(_app()) as url:
        yield "ws" + url.removeprefix("http") + "/ws"


class TestSharedDeflateProtocol:
    def test_client_taking_deflate_gets_the_precompressed_bytes_as_they_are(
        self, ws_url: str
    ) -> None:
        with connect(ws_url) as connection:  # offers permessage-deflate, as browsers do
            assert "server_no_context_takeover" in str(
                connection.response.headers["Sec-WebSocket-Extensions"]
            )
            assert connection.recv(timeout=10) == OTHER
            # Messages without a compressed form are compressed by the connection.
            assert connection.recv(timeout=10) == "a plain message " * 100

    def test_client_without_compression_gets_the_text(self, ws_url: str) -> None:
        with connect(ws_url, compression=None) as connection:
            assert "Sec-WebSocket-Extensions" not in connection.response.headers
            assert connection.recv(timeout=10) == TEXT
            assert connection.recv(timeout=10) == "a plain message " * 100

    def test_client_asking_a_smaller_server_window_gets_the_text_compressed_for_it(
        self, ws_url: str
    ) -> None:
        # The shared bytes were made with a 15-bit window: not right for this client.
        smaller = ClientPerMessageDeflateFactory(server_max_window_bits=10)
        with connect(ws_url, compression=None, extensions=[smaller]) as connection:
            assert "server_max_window_bits=10" in str(
                connection.response.headers["Sec-WebSocket-Extensions"]
            )
            assert connection.recv(timeout=10) == TEXT


class TestDeflate:
    def test_payload_inflates_alone_to_the_text(self) -> None:
        text = "".join(f"line {i} of the log\n" for i in range(10_000)).encode()
        payload = deflate(text)
        assert len(payload) < len(text) // 5
        inflater = zlib.decompressobj(-15)
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == text


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
