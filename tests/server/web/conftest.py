"""A real `conveyor server` process (embedded agent, local backend, data dir in tmp)
and the Debian Chromium driven by Playwright.

Without Chromium (or Playwright) the browser tests skip with the reason; under CI=true
they fail instead, since CI installs both.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@dataclass
class UiServer:
    url: str
    process: subprocess.Popen[str]
    password: str
    output: list[str] = field(default_factory=list)

    def api(self, name: str = "admin", password: str | None = None) -> httpx.Client:
        """An HTTP client signed in (session cookie) as `name`."""
        client = httpx.Client(base_url=self.url, timeout=60)
        answer = client.post(
            "/api/v1/session", json={"name": name, "password": password or self.password}
        )
        assert answer.status_code == 200, answer.text
        return client


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _drain(process: subprocess.Popen[str], output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    data_dir = tmp_path_factory.mktemp("ui-data")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "server", "--port", str(port),
         "--data-dir", str(data_dir), "--agents", "3", "--backend", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # The notification test sends to a receiver on this machine.
        env={**os.environ, "CONVEYOR_OUTBOUND_ALLOW": '["127.0.0.1/32"]'},
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    password = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        found = re.search(r"password '([^']+)'", line)
        if found:
            password = found.group(1)
        if "Uvicorn running on" in line:
            break
    assert password, "".join(output)
    # Keep reading what the server prints: a full pipe would stop it mid-write.
    threading.Thread(target=_drain, args=(process, output), daemon=True).start()
    server = UiServer(f"http://127.0.0.1:{port}", process, password, output)
    yield server
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


def sign_in(page: Any, server: UiServer, name: str = "admin", password: str | None = None) -> None:
    page.goto(server.url + "/ui/sign-in")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password or server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/ui/sign-in).*$"))


@pytest.fixture
def admin_page(browser: Any, ui_server: UiServer) -> Iterator[Any]:
    """A page signed in as the first administrator, 1280 px wide."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    sign_in(page, ui_server)
    yield page
    context.close()
