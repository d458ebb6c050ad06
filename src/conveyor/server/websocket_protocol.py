"""The WebSocket protocol `conveyor server` speaks: uvicorn's, with per-message deflate
(RFC 7692) in a form that lets one compressed message go to many connections.

A live log goes to every viewer of a step as the same messages. Compressing each
message once per connection (what a WebSocket library does) costs as many compressions
as viewers; sending it uncompressed costs as many full copies through the kernel. Here
the server negotiates `server_no_context_takeover` and its full 15-bit window, so a
message it sends is compressed alone, with nothing of the messages before it: the same
compressed bytes are right for every connection that negotiated so. The sender
compresses a message once (`deflate`) and hands it over with the text, in the ASGI
message under `PRECOMPRESSED`; a connection that took the extension writes those bytes
as the frame's payload, any other (no compression, a smaller window asked by the
client, another ASGI server) sends the text as usual. Messages without it are
compressed per connection by the library, as before.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Mapping
from typing import Any, cast

from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.protocol import State
from websockets.server import ServerProtocol

PRECOMPRESSED = "conveyor.deflated"
"""Key of an ASGI `websocket.send` message: its text, compressed by `deflate`."""
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


def frame_head(length: int) -> bytes:
    """The header of a server's (unmasked) final text frame of a compressed message."""
    first = 0x80 | 0x40 | 0x1  # FIN, RSV1 (compressed), text
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


class SharedDeflateProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering per-message deflate with
    `server_no_context_takeover` and writing `PRECOMPRESSED` payloads as they are."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = ServerProtocol(
            extensions=[
                ServerPerMessageDeflateFactory(
                    server_no_context_takeover=True,
                    # What clients send is small (pongs, a close): a small window keeps
                    # each connection's decompressor small.
                    client_max_window_bits=10,
                    compress_settings={"level": LEVEL, "memLevel": 5},
                )
            ],
            max_size=config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )
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
        payload = cast(Mapping[str, Any], message).get(PRECOMPRESSED)
        if (
            payload is None
            or message["type"] != "websocket.send"
            or not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
            or not self._shared_deflate()
        ):
            await super().send(message)
            return
        await self.writable.wait()
        if self.disconnected or self.conn.state is not State.OPEN:
            raise ClientDisconnected()
        self.transport.writelines((frame_head(len(payload)), payload))
