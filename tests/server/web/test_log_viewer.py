"""The run page's log viewer (static/log.js) in a real browser against a real server
process whose embedded agent runs the step: line times on demand."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.fixtures.gitrepos import Repo
from tests.server.web.conftest import UiServer
from tests.server.web.test_views import create_project, trigger, unique, wait_for_run

TIMED_PIPELINE = """\
steps:
  - name: timed
    commands: ["echo early", "sleep 2", "echo late"]
"""


class TestTimestamps:
    def test_toggle_shows_each_lines_time_live_and_after_a_reload(
        self, admin_page: Any, ui_server: UiServer, make_repo: Callable[..., Repo]
    ) -> None:
        page = admin_page
        api = ui_server.api()
        name = unique("timed")
        create_project(api, name, make_repo({".conveyor.yml": TIMED_PIPELINE}))
        before = time.time()
        run_id = trigger(api, name)["id"]
        page.goto(f"{ui_server.url}/ui/runs/{run_id}")
        log = page.locator("details.step[open]").last
        log.locator(".log-row", has_text="early").last.wait_for()
        assert log.locator(".log-row .lts").count() == 0  # off by default

        # On while the step runs: "late" comes over the WebSocket, with its time.
        log.get_by_label("Timestamps").check()
        late = log.locator(".log-row", has_text="late").last.locator(".lts")
        late.wait_for()
        run = wait_for_run(api, run_id)
        after = time.time()
        assert run["status"] == "success", run
        assert re.fullmatch(r"\d\d:\d\d:\d\d", late.inner_text())
        when = datetime.fromisoformat(late.get_attribute("title") or "").timestamp()
        assert before - 1 <= when <= after + 1
        early = log.locator(".log-row", has_text="early").last.locator(".lts")
        early_when = datetime.fromisoformat(early.get_attribute("title") or "").timestamp()
        assert 1.0 <= when - early_when <= 10  # the sleep between the two lines

        # Remembered; the lines (and times) now come from the line-range API.
        page.reload()
        log = page.locator("details.step[open]").last
        stamp = log.locator(".log-row", has_text="late").last.locator(".lts")
        stamp.wait_for()
        assert log.get_by_label("Timestamps").is_checked()
        assert stamp.get_attribute("title") == viewer_title(when)
        log.get_by_label("Timestamps").uncheck()
        assert log.locator(".log-row .lts").count() == 0


def viewer_title(when: float) -> str:
    """The title the viewer gives a line of time `when`: ISO, UTC, milliseconds."""
    return (
        datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
