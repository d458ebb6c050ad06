"""The WebSocket protocol `conveyor server` speaks: uvicorn's, with per-message deflate
(RFC 7692) in a form that lets one compressed message go to many connections.

A live log goes to every viewer of a step as the same messages. Compressing each
message once per connection (what a WebSocket library does) costs as many compressions
as viewers; sending it uncompressed costs as many full copies through the kernel. Here
the server negotiates `server_no_context_takeover` and its full 15-bit window, so a
message it sends is compressed alone, with nothing of the messages before it: the same
compressed bytes are right for every connection that negotiated so.

Each connection puts a `FrameWriter` in its scope's `extensions` (under `FRAME_WRITER`):
the log streams send through it, straight to the transport, a message's text and its
compressed form (`deflate`, made once by the sender); a connection that took the
extension writes the compressed bytes as the frame's payload, any other (no
compression, a smaller window asked by the client) the text as it is, uncompressed.
Everything else (the handshake, other applications' messages, the close) goes through
the ASGI interface as usual, compressed per connection by the library. Under another
ASGI server there is no writer, and the streams send their text through ASGI.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.routing import Match, WebSocketRoute
from uvicorn._types import ASGI3Application, ASGISendEvent, WebSocketAcceptEvent
from uvicorn.config import Config
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_path_with_query_string,
)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

FRAME_WRITER = "conveyor.frame_writer"
"""Key, in a WebSocket scope's `extensions`, of the connection's `FrameWriter`."""


FrameWriter = Callable[[str, bytes | None], Awaitable[None]]
"""`write(text, deflate(text) or None)`: see `SharedDeflateProtocol.write_text`."""


WINDOW_BITS = 15
LEVEL = 1
"""Log text compresses about 8x at level 1 for half the CPU of the default level."""
_SYNC_TAIL = b"\x00\x00\xff\xff"


def deflate(text: bytes) -> bytes:
    """`text` as the payload of a message compressed alone (RFC 7692 section 7.2.1: raw
    DEFLATE ended by a sync flush, without the flush's last four bytes)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -WINDOW_BITS)
    data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[: -len(_SYNC_TAIL)]


def frame_head(length: int, *, compressed: bool = True) -> bytes:
    """The header of a server's (unmasked) final text frame: of a compressed message
    (RSV1 set), or of one sent as it is (RFC 7692 section 6: allowed on a connection
    that negotiated compression)."""
    first = 0x80 | (0x40 if compressed else 0) | 0x1  # FIN, RSV1, text
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


_EXTENSIONS = [
    ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        # What clients send is small (pongs, a close): a small window keeps each
        # connection's decompressor small.
        client_max_window_bits=10,
        compress_settings={"level": LEVEL, "memLevel": 5},
    )
]
_QUIET = logging.getLogger("conveyor.websocket")
_QUIET.setLevel(logging.WARNING)


class SharedDeflateProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering per-message deflate with
    `server_no_context_takeover`, and a `FrameWriter` in each connection's scope."""

    direct_app: Starlette | None = None
    direct_routes: tuple[WebSocketRoute, ...] = ()

    @classmethod
    def routing_directly(
        cls, app: Starlette, routes: Sequence[WebSocketRoute]
    ) -> type[SharedDeflateProtocol]:
        """This protocol, handing the connections that one of `routes` (routes of
        `app`) takes straight to that route, past `app`'s middleware and routing: a
        hundred viewers opening a log at once spend a tenth less of the server's time.
        The routes see the same scope (`app`, path parameters) as through `app`."""
        name = f"Direct{cls.__name__}"
        return type(name, (cls,), {"direct_app": app, "direct_routes": tuple(routes)})

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's handshake, offering our extension instead of its own.
        self.conn.available_extensions = _EXTENSIONS
        # The library's own lines ("connection open", "connection closed": two per log
        # viewer, saying neither who nor what) stay out, and cost nothing to leave out.
        self.conn.logger = _QUIET
        self.conn.debug = False
        self._unwritten: list[bytes] = []
        self._write_scheduled = False
        self._takes_shared: bool | None = None

    def _shared_deflate(self) -> bool:
        """Whether this connection's messages may be compressed once for all."""
        if self._takes_shared is None:
            self._takes_shared = any(
                isinstance(extension, PerMessageDeflate)
                and extension.local_no_context_takeover
                and extension.local_max_window_bits == WINDOW_BITS
                for extension in self.conn.extensions
            )
        return self._takes_shared

    async def send(self, message: ASGISendEvent) -> None:
        self._write_unwritten()  # what `write_text` took goes first
        if (
            message["type"] == "websocket.accept"
            and not self.handshake_complete
            and self.initial_response is None
        ):
            await self._accept(message)
            return
        await super().send(message)

    async def _accept(self, message: WebSocketAcceptEvent) -> None:
        """uvicorn's accept, with its "[accepted]" line at debug level: one line per
        log viewer at info cost about a tenth of the server's work for a viewer (the
        record, the access filter, the write)."""
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(
                '%s - "WebSocket %s" [accepted]',
                get_client_addr(self.scope),
                get_path_with_query_string(self.scope),
            )
        headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in (self.default_headers + list(message.get("headers", [])))
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        del self.response.headers["Date"]  # the server's default headers carry one
        self.response.headers.update(headers)
        if not self.transport.is_closing():
            self.handshake_complete = True
            self.conn.send_response(self.response)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.start_keepalive()

    def handle_close(self, event: Frame) -> None:
        self._write_unwritten()  # before the close frame that answers
        super().handle_close(event)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.handshake_complete:
            return  # refused by the handshake: no application runs
        # The application task is scheduled, not started: it sees the writer.
        writer: FrameWriter = self.write_text
        extensions = cast("dict[str, Any]", self.scope["extensions"])
        extensions[FRAME_WRITER] = writer
        if self.direct_routes:
            self._route_directly()

    def _route_directly(self) -> None:
        scope = cast("dict[str, Any]", self.scope)
        for route in self.direct_routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                scope["app"] = self.direct_app
                self.app = cast("ASGI3Application", route.handle)
                return

    async def write_text(self, text: str, deflated: bytes | None = None) -> None:
        """Send one text message straight to the connection, past the ASGI layers (a
        log stream sends many, each costing a few coroutines and copies there): as
        `deflated` (`deflate(text)`) where this connection takes it, else as it is.
        Raises `ClientDisconnected` once the connection is closing."""
        if not self.writable.is_set():
            await self.writable.wait()
        if self.disconnected or self.close_sent or self.conn.state is not State.OPEN:
            raise ClientDisconnected()
        if deflated is not None and self._shared_deflate():
            self._unwritten += (frame_head(len(deflated)), deflated)
        else:
            data = text.encode()
            self._unwritten += (frame_head(len(data), compressed=False), data)
        if not self._write_scheduled:
            # Frames made in the same turn of the loop (a viewer's queued messages) go
            # to the socket in one call: one system call, not one per message.
            self._write_scheduled = True
            self.loop.call_soon(self._write_unwritten)

    def _write_unwritten(self) -> None:
        self._write_scheduled = False
        frames, self._unwritten = self._unwritten, []
        if frames and self.conn.state is State.OPEN and not self.transport.is_closing():
            self.transport.writelines(frames)
