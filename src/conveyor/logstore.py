"""Step logs on disk: one file of raw bytes per step, a sparse line index, and the
time of every line.

The log file holds exactly the bytes the step printed (after masking). Beside it,
`<name>.idx` holds pairs of little-endian uint64 `(line_number, byte_offset)`, one for
the start of every appended chunk that begins a new line, at most one per
`INDEX_EVERY_BYTES`. Reading lines `[start, end)` seeks to the last indexed point at or
before `start` and scans forward from there, so any range is served without reading
the whole file, and appending costs one `bytes.count` per chunk.

`<name>.times` holds when each line started (when its first byte was read), so the
log itself stays byte-identical to what the step printed:

    header   4 bytes b"CVT1", int64 little-endian: the base, in ms since the epoch
    records  one int32 little-endian per line, in line order: ms after the base
             (before it, for a clock behind the one that set the base), or
             UNKNOWN_TIME (a line stored before times were kept)

A record is written when its line STARTS, so an unterminated last line has one, and
the bytes that finish it add none: the file holds `total_lines` records. Fixed-size
records make line `n`'s time a seek to `12 + 4 n`, so a range costs what it returns.
Records are written (and flushed) before the bytes of their lines, so a reader that
sees a line in the log finds its time; a writer that opens a log whose times file
disagrees with it (a crash between the two writes, a log from before times were
kept) pads or truncates the times file to match the lines.

This module imports nothing of conveyor: the agent (for `conveyor exec`) and the
server's log service both use it.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

INDEX_EVERY_BYTES = 64 * 1024
_ENTRY = struct.Struct("<QQ")
TIMES_MAGIC = b"CVT1"
_TIMES_HEADER = struct.Struct("<4sq")
_TIME = struct.Struct("<i")
UNKNOWN_TIME = -(2**31)
"""The record of a line whose time is not known."""
_EARLIEST_TIME = UNKNOWN_TIME + 1
_LATEST_TIME = 2**31 - 1
"""The furthest from the base a time can be stored (24 days); further ones are clamped."""
# Records go through `array` (machine-sized, machine-ordered) to avoid one Python int
# per line on the way; "i" is 32 bits wherever CPython runs.
_RECORD_TYPE = "i"
_BIG_ENDIAN_HOST = sys.byteorder == "big"


def now_ms() -> int:
    """This machine's clock in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LineTimes:
    """When each of some lines started: `base` (ms since the epoch) plus one offset in
    ms per line, in line order. Offsets stay in an `array`, never a Python int per
    line: an agent's batch arrives as one (`LogChunk.line_offsets_ms`), and when its
    base is the log's own the records are its bytes."""

    base: int
    offsets: array[int]

    @classmethod
    def of(cls, times: Sequence[int]) -> LineTimes:
        """From one time per line, ms since the epoch."""
        base = min(times, default=0)
        return cls(base, array(_RECORD_TYPE, [at - base for at in times]))

    @classmethod
    def same(cls, at: int, count: int) -> LineTimes:
        """`count` lines that all started at `at`."""
        return cls(at, array(_RECORD_TYPE, [0]) * count)

    def __len__(self) -> int:
        return len(self.offsets)


def fit_line_times(times: LineTimes | None, count: int, now: int) -> LineTimes:
    """Exactly `count` times for the `count` lines that start in a chunk of bytes.

    `times` are those its sender gave: when there are more (a resent batch whose head
    is already stored), the LAST ones belong to the stored tail; when there are fewer
    (an older sender gives none), the lines without one get `now`, the arrival."""
    if times is None or not len(times):
        return LineTimes.same(now, max(count, 0))
    if len(times) >= count:
        return LineTimes(times.base, times.offsets[len(times) - count :])
    # Rare (a sender that counted fewer lines than it sent): one object per line is fine.
    pad = array(_RECORD_TYPE, [_clamped(now - times.base)]) * (count - len(times))
    return LineTimes(times.base, pad + array(_RECORD_TYPE, times.offsets))


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
        self._times_base = _match_times_to_lines(times_path(path), self.total_lines)
        self._times: BinaryIO = times_path(path).open("ab")

    def line_starts_in(self, data: bytes) -> int:
        """How many lines start in `data` appended now: one after each newline that is
        not its last byte, and one at its first byte if the log ends with a newline."""
        if not data:
            return 0
        return (
            data.count(b"\n")
            - (1 if data.endswith(b"\n") else 0)
            + (1 if self._ends_with_newline else 0)
        )

    def append(self, data: bytes, line_times: LineTimes | None = None) -> None:
        """Append `data`. `line_times`: when each line that starts in `data` started
        (see `fit_line_times` for a count that does not match; None: now)."""
        if not data:
            return
        starts = self.line_starts_in(data)
        if starts:
            self._write_times(fit_line_times(line_times, starts, now_ms()))
        if self._ends_with_newline and self.size - self._last_indexed >= INDEX_EVERY_BYTES:
            self._index.write(_ENTRY.pack(self.lines, self.size))
            self._last_indexed = self.size
        self._data.write(data)
        self.size += len(data)
        self.lines += data.count(b"\n")
        self._ends_with_newline = data.endswith(b"\n")

    def _write_times(self, times: LineTimes) -> None:
        if self._times_base is None:
            self._times_base = times.base
            self._times.write(_TIMES_HEADER.pack(TIMES_MAGIC, times.base))
        shift = times.base - self._times_base
        offsets = times.offsets
        records = array(_RECORD_TYPE)
        if shift == 0 and offsets.itemsize == records.itemsize:
            # The usual case (an agent's batches all count from the step's start): the
            # offsets are the records. An offset past 2**31 ms (24 days) would wrap.
            records.frombytes(offsets.tobytes())
        elif offsets and min(offsets) == max(offsets):
            records.append(_clamped(offsets[0] + shift))
            records *= len(offsets)
        else:
            records.extend(_clamped(offset + shift) for offset in offsets)
        if _BIG_ENDIAN_HOST:  # records are little-endian on every host
            records.byteswap()
        self._times.write(records.tobytes())
        # Before the bytes of these lines, so a reader never sees a line without a time.
        self._times.flush()

    @property
    def total_lines(self) -> int:
        """Lines so far, counting an unterminated last line."""
        return self.lines + (0 if self._ends_with_newline else 1)

    def flush(self) -> None:
        self._times.flush()
        self._data.flush()
        self._index.flush()

    def close(self) -> None:
        self._times.close()
        self._data.close()
        self._index.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clamped(offset: int) -> int:
    return min(max(offset, _EARLIEST_TIME), _LATEST_TIME)


def index_path(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def times_path(path: Path) -> Path:
    return path.with_name(path.name + ".times")


def _read_times_base(f: BinaryIO) -> int | None:
    header = f.read(_TIMES_HEADER.size)
    if len(header) < _TIMES_HEADER.size:
        return None
    magic, base = _TIMES_HEADER.unpack(header)
    return int(base) if magic == TIMES_MAGIC else None


def _match_times_to_lines(path: Path, lines: int) -> int | None:
    """Make the times file at `path` hold one record per line of a log of `lines`
    lines; returns its base (None: no header yet, so no records either)."""
    try:
        with path.open("rb") as f:
            base = _read_times_base(f)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        base, size = None, 0
    if base is None:
        if size:
            # Not a times file of ours (cut short before its header was whole): times
            # are lost, the log is not.
            path.unlink()
        if lines == 0:
            return None
        base = now_ms()
        with path.open("wb") as f:
            f.write(_TIMES_HEADER.pack(TIMES_MAGIC, base))
        size = _TIMES_HEADER.size
    records = (size - _TIMES_HEADER.size) // _TIME.size
    if records > lines:
        os.truncate(path, _TIMES_HEADER.size + lines * _TIME.size)
    elif records < lines or (size - _TIMES_HEADER.size) % _TIME.size:
        os.truncate(path, _TIMES_HEADER.size + records * _TIME.size)
        with path.open("ab") as f:
            f.write(_TIME.pack(UNKNOWN_TIME) * (lines - records))
    return base


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


def read_line_times(path: Path, start: int, end: int) -> list[int | None]:
    """When lines `[start, end)` of the log at `path` started, in ms since the epoch
    (None: not known). Shorter than asked when the log has fewer lines; empty when it
    has no times file. Reads only the records asked for."""
    if start < 0 or end <= start:
        return []
    try:
        f = times_path(path).open("rb")
    except FileNotFoundError:
        return []
    with f:
        base = _read_times_base(f)
        if base is None:
            return []
        f.seek(_TIMES_HEADER.size + start * _TIME.size)
        raw = f.read((end - start) * _TIME.size)
    records = array(_RECORD_TYPE)
    records.frombytes(raw[: len(raw) - len(raw) % _TIME.size])
    if _BIG_ENDIAN_HOST:
        records.byteswap()
    return [None if record == UNKNOWN_TIME else base + record for record in records]


TimeRun = tuple[int | None, int]
"""`(time, count)`: `count` lines in a row that started at `time` (ms since the epoch;
None: not known)."""


def read_time_runs(path: Path, start: int, end: int) -> list[TimeRun]:
    """When lines `[start, end)` started, as runs of lines with the same time: a
    batch of lines read at once is one run, so a long range costs its runs, not a
    Python object per line. Covers fewer lines when the log has fewer (or no times
    file)."""
    if start < 0 or end <= start:
        return []
    try:
        f = times_path(path).open("rb")
    except FileNotFoundError:
        return []
    with f:
        base = _read_times_base(f)
        if base is None:
            return []
        f.seek(_TIMES_HEADER.size + start * _TIME.size)
        raw = f.read((end - start) * _TIME.size)
    records = array(_RECORD_TYPE)
    records.frombytes(raw[: len(raw) - len(raw) % _TIME.size])
    if _BIG_ENDIAN_HOST:
        records.byteswap()
    return [
        (None if record == UNKNOWN_TIME else base + record, len(list(same)))
        for record, same in itertools.groupby(records)
    ]
