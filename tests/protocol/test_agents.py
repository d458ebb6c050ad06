"""The agent protocol's log chunk: what the agent encodes is what the server decodes."""

from __future__ import annotations

from array import array

import pytest

from conveyor.protocol.agents import (
    LOG_CHUNK_MEDIA_TYPE,
    RAW_LOG_MEDIA_TYPE,
    InvalidLogChunkError,
    LogChunk,
)

STARTED = 1_795_000_000_000


class TestLogChunk:
    def test_chunk_with_times_decodes_to_the_same_bytes_and_times(self) -> None:
        chunk = LogChunk(b"one\ntwo\nthr", STARTED, array("I", [0, 15, 4_000_000]))
        media_type, body = chunk.encode()
        assert media_type == LOG_CHUNK_MEDIA_TYPE
        decoded = LogChunk.decode(media_type + "; charset=binary", body)
        assert decoded.data == b"one\ntwo\nthr"
        assert decoded.step_started_at_ms == STARTED
        assert list(decoded.line_offsets_ms) == [0, 15, 4_000_000]

    def test_offsets_of_another_type_are_sent_as_uint32_clamped_at_zero(self) -> None:
        _, body = LogChunk(b"a\nb\n", STARTED, array("i", [-5, 9])).encode()
        assert list(LogChunk.decode(LOG_CHUNK_MEDIA_TYPE, body).line_offsets_ms) == [0, 9]

    def test_chunk_without_a_start_is_sent_as_the_bytes_alone(self) -> None:
        assert LogChunk(b"raw\n").encode() == (RAW_LOG_MEDIA_TYPE, b"raw\n")

    def test_a_body_of_another_media_type_is_raw_bytes_without_times(self) -> None:
        body = b"CVLC looks like a header but is a log line\n"
        decoded = LogChunk.decode("application/octet-stream", body)
        assert decoded.data == body
        assert decoded.step_started_at_ms is None

    def test_chunk_with_no_lines_starting_in_it_keeps_its_bytes(self) -> None:
        _, body = LogChunk(b"rest of a line", STARTED).encode()
        decoded = LogChunk.decode(LOG_CHUNK_MEDIA_TYPE, body)
        assert (decoded.data, decoded.step_started_at_ms) == (b"rest of a line", STARTED)
        assert len(decoded.line_offsets_ms) == 0

    @pytest.mark.parametrize("cut", [3, 16, 20])
    def test_a_cut_short_body_is_refused_with_what_it_lacks(self, cut: int) -> None:
        _, body = LogChunk(b"a\nb\n", STARTED, array("I", [1, 2])).encode()
        with pytest.raises(InvalidLogChunkError, match="bytes"):
            LogChunk.decode(LOG_CHUNK_MEDIA_TYPE, body[:cut])

    def test_a_body_without_the_magic_is_refused(self) -> None:
        _, body = LogChunk(b"a\n", STARTED, array("I", [1])).encode()
        with pytest.raises(InvalidLogChunkError, match="must start with"):
            LogChunk.decode(LOG_CHUNK_MEDIA_TYPE, b"XXXX" + body[4:])
