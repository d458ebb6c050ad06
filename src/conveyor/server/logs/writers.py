"""Open step logs, one writer per file, each behind its own lock.

Appends to one step serialise on that step's lock; appends to different steps run in
parallel. Writers stay open between appends because opening a `LogWriter` counts the
lines of the whole file: reopening per batch would make a long log quadratic to store.
At most `MAX_OPEN_LOGS` stay open; the least recently used idle one is closed first.

Across processes (several server replicas on one data directory) the file itself is
locked with `flock` while appending, and a writer whose idea of the size differs from
the file's (another process appended) is reopened before it writes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conveyor.logstore import LogWriter

MAX_OPEN_LOGS = 256


class _OpenLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.writer: LogWriter | None = None
        self.lock_fd: int | None = None
        """A descriptor of the log file that carries the `flock` between processes."""
        self.closed = False

    def close(self) -> None:
        self.closed = True
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


class OpenLogs:
    """The open step logs of this process."""

    def __init__(self, limit: int = MAX_OPEN_LOGS) -> None:
        self._limit = limit
        self._guard = threading.Lock()
        self._logs: OrderedDict[Path, _OpenLog] = OrderedDict()

    def _entry(self, path: Path) -> _OpenLog:
        with self._guard:
            entry = self._logs.get(path)
            if entry is None:
                entry = _OpenLog(path)
                self._logs[path] = entry
            self._logs.move_to_end(path)
            self._evict_idle()
            return entry

    def _evict_idle(self) -> None:
        # Called with the guard held. An entry whose lock is taken is in use: skip it.
        for candidate in list(self._logs.values()):
            if len(self._logs) <= self._limit:
                return
            if candidate.lock.acquire(blocking=False):
                try:
                    candidate.close()
                    del self._logs[candidate.path]
                finally:
                    candidate.lock.release()

    @contextmanager
    def writing(self, path: Path) -> Iterator[LogWriter]:
        """The writer of `path`, held exclusively (threads and processes) for the block."""
        while True:
            entry = self._entry(path)
            with entry.lock:
                if entry.closed:  # evicted between lookup and lock: look it up again
                    continue
                if entry.lock_fd is not None and not path.exists():
                    # Removed under us (retention cleanup): start a new file.
                    entry.close()
                    entry.closed = False
                if entry.lock_fd is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    entry.lock_fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
                fcntl.flock(entry.lock_fd, fcntl.LOCK_EX)
                try:
                    writer = entry.writer
                    if writer is not None and os.stat(path).st_size != writer.size:
                        writer.close()
                        writer = None
                    if writer is None:
                        writer = entry.writer = LogWriter(path)
                    try:
                        yield writer
                        writer.flush()
                    except BaseException:
                        # Its counters may no longer match the file: reopen next time.
                        entry.writer = None
                        writer.close()
                        raise
                finally:
                    fcntl.flock(entry.lock_fd, fcntl.LOCK_UN)
                return

    def close(self, path: Path) -> None:
        """Close the writer of `path` (the step finished, or its log is being removed)."""
        with self._guard:
            entry = self._logs.pop(path, None)
        if entry is not None:
            with entry.lock:
                entry.close()

    def close_all(self) -> None:
        with self._guard:
            entries = list(self._logs.values())
            self._logs.clear()
        for entry in entries:
            with entry.lock:
                entry.close()
