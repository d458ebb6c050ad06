"""Server benchmark: a real `conveyor server` process, real HTTP and WebSocket.

    python bench/server.py [--runs 50] [--queued 200] [--viewers 100] [--lines 100000]
                           [--database-url URL] [--only latency,throughput,viewers]

Prints, side by side:
(a) latency from trigger (the API call) to run success, one-step `true` pipeline on the
    local backend, median and p95, against running `true` raw (target: median < 100 ms,
    git resolution included);
(b) runs completed per second: N one-step runs queued while no agent runs, then the
    server restarted with 4 embedded agent slots (target: >= 40/s on 2 cores);
(c) 100 WebSocket viewers of one job all receiving 100,000 lines, against the time to
    store them with no viewer (target: < 2x);
(d) the server's resident memory idle and after the runs (target: < 80 MiB idle), and
    that of its embedded agent, a child process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from datetime import datetime
from pathlib import Path

import httpx
import uvloop
import websockets

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.test",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.test",
}


def make_repo(root: Path, name: str, pipeline: str) -> str:
    path = root / name
    path.mkdir(parents=True)
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True, env=env)
    (path / ".conveyor.yml").write_text(pipeline)
    subprocess.run(["git", "add", "."], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=path, check=True, env=env)
    return path.as_uri()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return kib / 1024


class Server:
    def __init__(self, data_dir: Path, agents: int, database_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ}
        if database_url:
            env["CONVEYOR_DATABASE_URL"] = database_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "server", "--port", str(self.port),
             "--data-dir", str(data_dir), "--agents", str(agents), "--backend", "local"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.password: str | None = None
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            seen.append(line)
            if not line:
                raise SystemExit("server exited during start:\n" + "".join(seen[-30:]))
            found = re.search(r"password '([^']+)'", line)
            if found:
                self.password = found.group(1)
            if "Uvicorn running on" in line:
                break
        # Keep reading its output so that the pipe never fills and blocks the server.
        threading.Thread(target=self._read_rest, daemon=True).start()

    def _read_rest(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def rss_mib(self) -> float:
        return _rss_mib(self.process.pid)

    def agent_rss_mib(self) -> float:
        """The embedded agent: the server's child processes (`conveyor agent`)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return sum(_rss_mib(int(pid)) for pid in children.read_text().split())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def sign_in(url: str, password: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, timeout=60)
    client.post("/api/v1/session", json={"name": "admin", "password": password}).raise_for_status()
    token = client.post("/api/v1/user/tokens", json={"name": "bench"}).json()["token"]
    client.headers["Authorization"] = f"Bearer {token}"
    client.cookies.clear()
    return client, token


async def wait_for_end(url: str, job_id: int, token: str) -> tuple[str, int]:
    ws_url = url.replace("http://", "ws://") + f"/jobs/{job_id}/ws?token={token}"
    lines = 0
    # Compression as a browser asks for it (permessage-deflate), decoded in full.
    async with websockets.connect(ws_url, max_size=None) as ws:
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "lines":
                lines += len(message["lines"])
            elif message["type"] == "end":
                return message["status"], lines


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


PHASES = (
    "trigger call (resolve, read pipeline, store)",
    "queued -> claimed",
    "claimed -> step started (checkout, start)",
    "step ran",
    "step ended -> run finished (reports)",
)


def bench_latency(server: Server, api: httpx.Client, token: str, repo: str, runs: int) -> None:
    api.post("/api/v1/projects", json={"name": "latency", "git_url": repo}).raise_for_status()
    took: list[float] = []
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    for i in range(runs + 3):
        started = time.perf_counter()
        run = api.post("/api/v1/projects/latency/runs", json={"branch": "main"}).json()
        answered = time.perf_counter() - started
        status, _ = asyncio.run(wait_for_end(server.url, run["jobs"][0]["id"], token))
        elapsed = time.perf_counter() - started
        if status != "success":
            raise SystemExit(f"run {run['number']} ended {status}")
        if i >= 3:  # the first runs warm the mirror and the agent's caches
            took.append(elapsed)
            detail = api.get(f"/api/v1/runs/{run['id']}").json()
            job = detail["jobs"][0]
            step = job["steps"][0]
            at = {
                key: datetime.fromisoformat(value).timestamp()
                for key, value in (
                    ("queued", job["queued_at"]),
                    ("claimed", job["started_at"]),
                    ("step_started", step["started_at"]),
                    ("step_finished", step["finished_at"]),
                    ("finished", detail["finished_at"]),
                )
            }
            phases["trigger call (resolve, read pipeline, store)"].append(answered)
            phases["queued -> claimed"].append(at["claimed"] - at["queued"])
            phases["claimed -> step started (checkout, start)"].append(
                at["step_started"] - at["claimed"]
            )
            phases["step ran"].append(at["step_finished"] - at["step_started"])
            phases["step ended -> run finished (reports)"].append(
                at["finished"] - at["step_finished"]
            )
    raw = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["true"], check=True)
        raw.append(time.perf_counter() - started)
    median, p95 = statistics.median(took) * 1000, percentile(took, 95) * 1000
    print(f"(a) trigger -> success, {runs} one-step runs (local backend)")
    print(f"    conveyor   median {median:7.1f} ms   p95 {p95:7.1f} ms   (target: median < 100 ms)")
    print(
        f"    raw `true` median {statistics.median(raw) * 1000:7.1f} ms   "
        f"p95 {percentile(raw, 95) * 1000:7.1f} ms"
    )
    print("    where the time goes (medians; the client then sees the end over WebSocket):")
    for name, values in phases.items():
        print(f"      {name:48s} {statistics.median(values) * 1000:7.1f} ms")


def bench_throughput(
    root: Path, repo: str, queued: int, database_url: str | None, password: str | None
) -> float:
    """`password`: the admin's, from the first server; on a database given by URL,
    which that server set up, this one makes no new admin."""
    data = root / "throughput"
    server = Server(data, agents=0, database_url=database_url)
    admin_password = server.password or password
    assert admin_password
    api, _ = sign_in(server.url, admin_password)
    api.post("/api/v1/projects", json={"name": "many", "git_url": repo}).raise_for_status()
    started = time.perf_counter()
    ids = [
        api.post("/api/v1/projects/many/runs", json={"branch": "main"}).json()["id"]
        for _ in range(queued)
    ]
    trigger_rate = queued / (time.perf_counter() - started)
    server.stop()
    server = Server(data, agents=4, database_url=database_url)
    api = httpx.Client(base_url=server.url, timeout=60, headers=api.headers)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        page = api.get("/api/v1/runs", params={"project": "many", "status": "queued"}).json()
        running = api.get("/api/v1/runs", params={"project": "many", "status": "running"}).json()
        if page["total"] == 0 and running["total"] == 0:
            break
        time.sleep(0.5)
    runs = [api.get(f"/api/v1/runs/{i}").json() for i in ids]
    bad = [r["status"] for r in runs if r["status"] != "success"]
    if bad:
        raise SystemExit(f"{len(bad)} runs did not succeed: {bad[:5]}")
    first = min(datetime.fromisoformat(r["started_at"]) for r in runs)
    last = max(datetime.fromisoformat(r["finished_at"]) for r in runs)
    seconds = (last - first).total_seconds()
    rss_after = server.rss_mib()
    server.stop()
    print(f"(b) {queued} queued one-step runs, 4 embedded agent slots")
    print(
        f"    {queued / seconds:7.1f} runs/s completed ({seconds:.2f} s from first start to last"
        f" end; target >= 40/s); triggering ran at {trigger_rate:.0f}/s"
    )
    return rss_after


Decoded = tuple[str, int, int, int]
"""A message's type and, for lines, its step, first line and number of lines."""


def decode_compressed(payload: bytes) -> Decoded:
    """A message compressed alone (RFC 7692: the sync flush's last 4 bytes left out)."""
    inflater = zlib.decompressobj(-15)
    message = json.loads(inflater.decompress(payload + b"\x00\x00\xff\xff"))
    if message["type"] == "lines":
        return "lines", message["step"], message["start"], len(message["lines"])
    return message["type"], 0, 0, 0


_LINES_HEAD = re.compile(rb'\{"type": "lines", "step": (\d+), "start": (\d+), "lines": \[')


WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455's constant for the handshake's Sec-WebSocket-Accept."""


class LightViewer(asyncio.Protocol):
    """A light viewer for (c), on the bare WebSocket protocol: the 99 viewers beside the
    one that decodes everything (`wait_for_end`) must not be what is measured, and they
    share the 2 cores with the server. `json.loads` of every message took 1.4 s for 100
    viewers of 100,000 lines; the websockets library's frame reader, copying every
    payload twice, about 0.15 s. This one copies nothing: each lines message's lines are
    counted as it arrives, two unescaped quotes per line in the chunks the socket gave
    (after the array only `"time_runs"` has quotes); a message with a backslash, where
    a quote may be escaped, is decoded instead. Each message must start at the line after
    the previous one of its step (no gap, no duplicate). Pings are answered; server
    frames are never masked, this client's are.

    Like a browser, it asks for permessage-deflate. A compressed message is inflated
    and decoded the first time any viewer gets those bytes (`inflated`, shared by the
    viewers of one trial; the server says `server_no_context_takeover`, so a message
    inflates alone or the check fails): the viewers who get the same bytes got the
    same lines, and 99 inflations of every message in this one process would measure
    this client, not the server (a browser inflates on its own machine)."""

    def __init__(self, target: str, host: str, inflated: dict[bytes, Decoded]) -> None:
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate\r\n"
            f"Sec-WebSocket-Key: {self.key.decode()}\r\n\r\n"
        ).encode()
        self._inflated = inflated
        self._compressed = False  # the message being received
        self.lines = 0
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._handshake: bytes | None = b""
        self._header = bytearray()
        self._remaining = -1  # payload bytes left in the current frame; -1: in a header
        self._final = self._control = self._deflate = False
        self._parts: list[memoryview] = []  # the message so far, as views of the chunks
        self._control_parts: list[memoryview] = []
        self._quotes = 0
        self._escaped = False
        self._next_line: dict[int, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(SystemExit(f"a viewer's connection ended early: {exc}"))

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except SystemExit as failure:
            if not self.done.done():
                self.done.set_exception(failure)
            assert self._transport is not None
            self._transport.close()

    def _received(self, data: bytes) -> None:
        at = 0
        if self._handshake is not None:
            self._handshake += data
            end = self._handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._handshake[:end], self._handshake[end + 4 :]
            self._handshake = None
            # RFC 6455 fixes SHA-1 here; it proves nothing secret.
            accept = base64.b64encode(hashlib.sha1(self.key + WEBSOCKET_GUID).digest())  # noqa: S324
            if (
                not head.startswith(b"HTTP/1.1 101")
                or b"Sec-WebSocket-Accept: " + accept not in head
            ):
                raise SystemExit(f"the WebSocket handshake failed: {head.decode()}")
            self._deflate = b"permessage-deflate" in head.lower()
        size = len(data)
        while at < size:
            if self._remaining < 0:
                at = self._read_header(data, at)
                continue
            end = min(size, at + self._remaining)
            self._payload(data, at, end)
            self._remaining -= end - at
            at = end
            if self._remaining == 0:
                self._frame_ended()

    def _read_header(self, data: bytes, at: int) -> int:
        """Take header bytes from `data[at:]`; returns where they end."""
        header = self._header
        while at < len(data):
            header.append(data[at])
            at += 1
            if len(header) < 2:
                continue
            if header[1] & 0x80:
                raise SystemExit("the server sent a masked frame")
            length = header[1] & 0x7F
            extra = 2 if length == 126 else 8 if length == 127 else 0
            if len(header) < 2 + extra:
                continue
            if extra:
                length = int.from_bytes(header[2:], "big")
            self._final = bool(header[0] & 0x80)
            self._control = header[0] & 0x0F >= 0x8
            self._opcode = header[0] & 0x0F
            if not self._control and self._opcode != 0:  # a message's first frame
                self._compressed = bool(header[0] & 0x40)
                if self._compressed and not self._deflate:
                    raise SystemExit("a compressed frame without permessage-deflate")
            header.clear()
            self._remaining = length
            if length == 0:
                self._frame_ended()
            return at
        return at

    def _payload(self, data: bytes, start: int, end: int) -> None:
        if self._control:
            self._control_parts.append(memoryview(data)[start:end])
            return
        self._parts.append(memoryview(data)[start:end])
        if self._compressed:
            return
        self._quotes += data.count(b'"', start, end)
        self._escaped = self._escaped or data.find(b"\\", start, end) >= 0

    def _frame_ended(self) -> None:
        self._remaining = -1
        if self._control:
            payload = b"".join(self._control_parts)
            self._control_parts = []
            if self._opcode == 0x9:
                self._send(0xA, payload)
            elif self._opcode == 0x8:
                raise SystemExit(f"the server closed the stream early: {payload!r}")
            return
        if self._final:
            parts, quotes, escaped = self._parts, self._quotes, self._escaped
            self._parts, self._quotes, self._escaped = [], 0, False
            self._message(parts, quotes, escaped)

    def _message(self, parts: list[memoryview], quotes: int, escaped: bool) -> None:
        if self._compressed:
            payload = b"".join(parts)
            decoded = self._inflated.get(payload)
            if decoded is None:
                decoded = self._inflated[payload] = decode_compressed(payload)
            kind, step, start, count = decoded
            if kind == "end":
                self._end()
            elif kind == "lines":
                self._lines(step, start, count)
            return
        first = bytes(parts[0][:100]) if parts else b""
        head = _LINES_HEAD.match(first)
        if head is None or escaped:
            message = json.loads(b"".join(parts))
            if message["type"] == "end":
                self._end()
                return
            if message["type"] != "lines":
                return
            step, start, count = message["step"], message["start"], len(message["lines"])
        else:
            step, start = int(head.group(1)), int(head.group(2))
            # Quotes before the array: those of the head's own keys and values.
            count = (quotes - first.count(b'"', 0, head.end()) - 2) // 2
        self._lines(step, start, count)

    def _end(self) -> None:
        self._send(0x8, (1000).to_bytes(2, "big"))
        self.done.set_result(self.lines)

    def _lines(self, step: int, start: int, count: int) -> None:
        if start != self._next_line.get(step, 0):
            raise SystemExit(
                f"step {step}: a message starts at {start}, not {self._next_line.get(step, 0)}"
            )
        self._next_line[step] = start + count
        self.lines += count

    def _send(self, opcode: int, payload: bytes) -> None:
        assert self._transport is not None and len(payload) < 126  # control frames only
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[at % 4] for at, byte in enumerate(payload))
        self._transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


async def count_lines_received(
    url: str, job_id: int, token: str, inflated: dict[bytes, Decoded]
) -> int:
    host = url.removeprefix("http://")
    name, port = host.split(":")
    loop = asyncio.get_running_loop()
    transport, viewer = await loop.create_connection(
        lambda: LightViewer(f"/jobs/{job_id}/ws?token={token}", host, inflated), name, int(port)
    )
    try:
        return await viewer.done
    finally:
        transport.close()


async def viewers_receive(url: str, job_id: int, token: str, viewers: int) -> list[int]:
    # One viewer still decodes every message in full, as a real client does.
    checked = asyncio.ensure_future(wait_for_end(url, job_id, token))
    inflated: dict[bytes, Decoded] = {}
    light = [count_lines_received(url, job_id, token, inflated) for _ in range(viewers - 1)]
    counts = await asyncio.gather(*light)
    status, lines = await checked
    if status != "success":
        raise SystemExit(f"the chatty run ended {status}")
    return [lines, *counts]


TRIALS = 7
"""(c) is timed this many times each way, a time to store then a time to view in turn
(this VM's speed changes by half for seconds at a time: both halves of a pair see the
same), and the medians compared. The first trial on a fresh server is the slowest (its
pool threads, buffers and code paths are cold)."""


def bench_viewers(
    server: Server, api: httpx.Client, token: str, repo: str, viewers: int, lines: int
) -> None:
    api.post("/api/v1/projects", json={"name": "chatty", "git_url": repo}).raise_for_status()
    store_times: list[float] = []
    views: list[tuple[float, list[int]]] = []
    stored = 0
    for _ in range(TRIALS):
        seconds, stored = _store_once(server, api, token)
        store_times.append(seconds)
        views.append(_view_once(server, api, token, viewers))
    view_times = [seconds for seconds, _ in views]
    complete = min(sum(1 for count in counts if count == stored) for _, counts in views)
    store_seconds, view_seconds = statistics.median(store_times), statistics.median(view_times)
    print(f"(c) {viewers} WebSocket viewers of one job printing {lines:,} lines")
    print(
        f"    stored with no viewer      {store_seconds:6.2f} s   (median of {_list(store_times)})"
    )
    print(
        f"    all {complete}/{viewers} viewers got all {stored:,} lines"
        f" in {view_seconds:6.2f} s   {view_seconds / store_seconds:.2f}x (target < 2x)"
        f"   (median of {_list(view_times)})"
    )


def _list(seconds: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in seconds)


def _store_once(server: Server, api: httpx.Client, token: str) -> tuple[float, int]:
    """No viewer: the time from the job's start to its end is the time to produce and
    store the lines. Returns it and the lines stored."""
    run = api.post("/api/v1/projects/chatty/runs", json={"branch": "main"}).json()
    status, stored = asyncio.run(wait_for_end(server.url, run["jobs"][0]["id"], token))
    if status != "success":
        raise SystemExit(f"the chatty run ended {status}")
    job = api.get(f"/api/v1/runs/{run['id']}").json()["jobs"][0]
    seconds = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    return seconds, stored


def _view_once(
    server: Server, api: httpx.Client, token: str, viewers: int
) -> tuple[float, list[int]]:
    """All viewers connect as the run is triggered; the clock runs from the job's start
    to the last viewer's end message. Returns the time and the lines each viewer got."""
    run = api.post("/api/v1/projects/chatty/runs", json={"branch": "main"}).json()
    counts = uvloop.run(viewers_receive(server.url, run["jobs"][0]["id"], token, viewers))
    done = time.time()
    job = api.get(f"/api/v1/runs/{run['id']}").json()["jobs"][0]
    return done - datetime.fromisoformat(job["started_at"]).timestamp(), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--queued", type=int, default=200)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--only",
        default="latency,throughput,viewers",
        help="comma-separated parts to run (latency, throughput, viewers); memory is always shown",
    )
    args = parser.parse_args()
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = parts - {"latency", "throughput", "viewers"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-server-"))
    try:
        run_parts(root, args, parts)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def machine_state() -> str:
    """How fast this machine wakes a process and runs Python, right now: the figures
    above move with both (this VM's wake-up latency has been seen between 10 and 85 us,
    for the same code; (a) and (b) wait on many wake-ups, (c) on the CPU)."""
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    child = os.fork()
    if child == 0:
        for _ in range(2_000):
            os.read(to_child, 1)
            os.write(from_child, b"x")
        os._exit(0)
    started = time.perf_counter()
    for _ in range(2_000):
        os.write(from_parent, b"x")
        os.read(to_parent, 1)
    round_trip = (time.perf_counter() - started) / 2_000
    os.waitpid(child, 0)
    for fd in (to_child, from_parent, to_parent, from_child):
        os.close(fd)
    started = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i * i
    loop = time.process_time() - started
    return (
        f"pipe round trip between two processes {round_trip * 1e6:.0f} us;"
        f" a million-step Python loop {loop * 1000:.0f} ms"
    )


def run_parts(root: Path, args: argparse.Namespace, parts: set[str]) -> None:
    quick = make_repo(root, "quick", "steps: [{name: t, commands: ['true']}]\n")
    chatty = make_repo(
        root, "chatty",
        f"steps: [{{name: t, commands: ['seq -f \"line %.0f of the log\" 1 {args.lines}']}}]\n",
    )  # fmt: skip
    print(f"database: {args.database_url or 'SQLite (default)'}")
    print(f"this machine now: {machine_state()}")
    server = Server(root / "main", agents=4, database_url=args.database_url)
    assert server.password
    time.sleep(2)
    idle = server.rss_mib()
    idle_agent = server.agent_rss_mib()
    api, token = sign_in(server.url, server.password)
    try:
        if "latency" in parts:
            bench_latency(server, api, token, quick, args.runs)
        if "viewers" in parts:
            bench_viewers(server, api, token, chatty, args.viewers, args.lines)
        after = server.rss_mib()
    finally:
        server.stop()
    rss_after_queue = (
        bench_throughput(root, quick, args.queued, args.database_url, server.password)
        if "throughput" in parts
        else None
    )
    print("(d) server resident memory")
    print(
        f"    idle {idle:6.1f} MiB (target < 80 MiB); after (a)+(c) {after:6.1f} MiB;"
        + (f" after (b) {rss_after_queue:6.1f} MiB" if rss_after_queue is not None else "")
    )
    print(
        f"    the embedded agent's own process (conveyor agent, 4 slots) idle {idle_agent:6.1f} MiB"
    )


if __name__ == "__main__":
    main()
