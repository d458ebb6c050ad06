"""Step logs on disk: one file of raw bytes per step plus a sparse line index.

The log file holds exactly the bytes the step printed (after masking). Beside it,
`<name>.idx` holds pairs of little-endian uint64 `(line_number, byte_offset)`, one for
the start of every appended chunk that begins a new line, at most one per
`INDEX_EVERY_BYTES`. Reading lines `[start, end)` seeks to the last indexed point at or
before `start` and scans forward from there, so any range is served without reading
the whole file, and appending costs one `bytes.count` per chunk.

This module imports nothing of conveyor: the agent (for `conveyor exec`) and the
server's log service both use it.
"""

from __future__ import annotations

import bisect
import struct
from pathlib import Path
from typing import BinaryIO

INDEX_EVERY_BYTES = 64 * 1024
_ENTRY = struct.Struct("<QQ")


class LogWriter:
    """Appends to one step's log. Not thread-safe; one writer per log."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._data: BinaryIO = path.open("ab")
        self._index: BinaryIO = index_path(path).open("ab")
        self.size = self._data.tell()
        self.lines = 0 if self.size == 0 else count_lines(path)
        self._ends_with_newline = self.size == 0 or _last_byte(path) == b"\n"
        self._last_indexed = -INDEX_EVERY_BYTES

    def append(self, data: bytes) -> None:
        if not data:
            return
        if self._ends_with_newline and self.size - self._last_indexed >= INDEX_EVERY_BYTES:
            self._index.write(_ENTRY.pack(self.lines, self.size))
            self._last_indexed = self.size
        self._data.write(data)
        self.size += len(data)
        self.lines += data.count(b"\n")
        self._ends_with_newline = data.endswith(b"\n")

    @property
    def total_lines(self) -> int:
        """Lines so far, counting an unterminated last line."""
        return self.lines + (0 if self._ends_with_newline else 1)

    def flush(self) -> None:
        self._data.flush()
        self._index.flush()

    def close(self) -> None:
        self._data.close()
        self._index.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def index_path(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1)


def count_lines(path: Path) -> int:
    total = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            total += chunk.count(b"\n")
    return total


def _load_index(path: Path) -> tuple[list[int], list[int]]:
    lines: list[int] = [0]
    offsets: list[int] = [0]
    try:
        raw = index_path(path).read_bytes()
    except FileNotFoundError:
        return lines, offsets
    for line, offset in _ENTRY.iter_unpack(raw[: len(raw) - len(raw) % _ENTRY.size]):
        if line > lines[-1]:
            lines.append(line)
            offsets.append(offset)
    return lines, offsets


def read_lines(path: Path, start: int, end: int | None = None) -> list[bytes]:
    """Lines `[start, end)` (0-based) with their newlines, as stored."""
    if start < 0 or (end is not None and end <= start):
        return []
    lines, offsets = _load_index(path)
    at = bisect.bisect_right(lines, start) - 1
    line_no, offset = lines[at], offsets[at]
    out: list[bytes] = []
    with path.open("rb") as f:
        f.seek(offset)
        for raw in f:
            if line_no >= start:
                out.append(raw)
                if end is not None and line_no + 1 >= end:
                    break
            line_no += 1
    return out
