"""`/metrics` scraped over real HTTP from a live server (SQLite and PostgreSQL) and read
with prometheus-client's own parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from tests.server.agents.queue import add_agent, claim, queue_job
from tests.server.agents.queue import add_project as add_bare_project
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, assert_error, bearer


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class TestMetrics:
    def test_the_queue_runs_and_agents_are_counted(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_bare_project(db_session, "p")
        old = datetime.now(UTC) - timedelta(minutes=3)
        queue_job(db_session, project, queued_at=old)
        queue_job(db_session, project)
        urgent = queue_job(db_session, project, priority=5)
        _, token = add_agent(db_session, "builder")
        (spec,) = claim(http, token)["jobs"]  # type: ignore[misc]
        assert spec["job_id"] == urgent.id
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))

        response = http.get("/metrics", headers=admin)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)
        assert samples[("conveyor_jobs", (("status", "queued"),))] == 2
        assert samples[("conveyor_jobs", (("status", "running"),))] == 1
        assert samples[("conveyor_runs", (("status", "running"),))] == 1
        assert samples[("conveyor_runs", (("status", "queued"),))] == 2
        assert samples[("conveyor_agents", (("status", "online"),))] == 1
        assert samples[("conveyor_agent_slots", (("state", "busy"),))] == 1
        # The oldest job still queued has waited three minutes.
        assert 60 < samples[("conveyor_queue_oldest_seconds", ())] < 600
        assert ("process_resident_memory_bytes", ()) in samples

    def test_only_administrators_scrape(self, http: httpx.Client, db_session: Session) -> None:
        project = add_bare_project(db_session, "q")
        headers = actor_headers(db_session, project)
        assert_error(http.get("/metrics", headers=headers["anonymous"]), 401)
        for actor in ("viewer", "maintainer", "outsider"):
            assert_error(http.get("/metrics", headers=headers[actor]), 403)
        assert http.get("/metrics", headers=headers["admin"]).status_code == 200
