"""How stored log bytes become lines messages: the fast JSON path gives exactly what
serialising the lines does, and every path gives the lines `text_lines` gives."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conveyor.agent.masking import MASK
from conveyor.server.logs import service
from conveyor.server.logs.streams import (
    BYTES_PER_MESSAGE,
    LINES_PER_MESSAGE,
    NO_SECRETS,
    StepSource,
    encode,
    lines_json,
    text_lines,
)
from conveyor.server.websocket_protocol import deflate


class TestLinesJson:
    def test_random_plain_bytes_give_what_serialising_their_lines_gives(self) -> None:
        pick = random.Random(7).choice
        alphabet = [b"a", b" ", b"\t", b"\x1b", b"[", b"\n", b"\n", b"~", b"0", b"'"]
        for _ in range(5_000):
            data = b"".join(
                pick(alphabet) for _ in range(random.Random(len(_ * "x")).randint(0, 40))
            )
            made = lines_json(data)
            assert made is not None, data
            parts, count = made
            lines = text_lines(data, NO_SECRETS)
            assert b"".join(parts).decode() == json.dumps(lines)
            assert count == len(lines)

    @pytest.mark.parametrize(
        ("data", "lines"),
        [
            (b"", []),
            (b"\n", [""]),
            (b"a\n\n", ["a", ""]),
            (b"a\nunterminated", ["a", "unterminated"]),
            (b"\x1b[31mred\x1b[0m\tx\n", ["\x1b[31mred\x1b[0m\tx"]),
        ],
    )
    def test_edges(self, data: bytes, lines: list[str]) -> None:
        made = lines_json(data)
        assert made is not None
        parts, count = made
        assert (b"".join(parts).decode(), count) == (json.dumps(lines), len(lines))

    @pytest.mark.parametrize(
        "data",
        [
            b'say "hi"\n',
            b"C:\\path\n",
            b"progress\r\n",
            "caf\u00e9\n".encode(),
            b"\x00\n",
            b"\x7f\n",
        ],
    )
    def test_bytes_that_need_more_care_are_left_to_serialising(self, data: bytes) -> None:
        assert lines_json(data) is None


def _source(tmp_path: Path, secrets: dict[str, str]) -> StepSource:
    return StepSource(
        step_id=3,
        run_id=1,
        job_id=2,
        index=0,
        name="t",
        path=tmp_path / "missing.log",  # no times file: every line's time is unknown
        masker=service.masker_for(secrets),
    )


class TestEncode:
    def test_messages_hold_every_line_once_in_order_masked_and_compressed(
        self, tmp_path: Path
    ) -> None:
        # Plain lines (the fast path), then some that need escaping (serialised), and a
        # secret in every line.
        quoted = 'said "hi" '
        lines = [
            f"{i} {quoted if i > 40_000 and i % 7 == 0 else ''}pw=s3cr3t-value {'x' * (i % 50)}"
            for i in range(60_000)
        ]
        data = "".join(f"{line}\n" for line in lines).encode()
        messages = encode(_source(tmp_path, {"PW": "s3cr3t-value"}), 10, data)
        assert len(messages) > 1
        got: list[str] = []
        for message in messages:
            body = json.loads(message.text)
            assert body["type"] == "lines"
            assert body["step"] == 3
            assert body["start"] == 10 + len(got) == message.start
            assert len(body["lines"]) == message.count <= LINES_PER_MESSAGE
            assert len(message.text) <= 2 * BYTES_PER_MESSAGE
            assert body["time_runs"] == [[None, message.count]]
            assert message.deflated == deflate(message.text.encode())
            got.extend(body["lines"])
        assert got == [line.replace("s3cr3t-value", MASK.decode()) for line in lines]
        # Messages of plain lines and messages with lines that needed escaping.
        escaped = [message for message in messages if '\\"' in message.text]
        assert 0 < len(escaped) < len(messages)
