"""The queue queries of the agents repository, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session

from conveyor.server.agents import repository
from tests.server.agents.queue import add_project, minutes_ago, queue_job


def _all_pages(
    session: Session, *, labels: list[str], limit: int, now: datetime | None = None
) -> list[list[int]]:
    pages: list[list[int]] = []
    after: repository.QueuedCandidate | None = None
    while True:
        page = repository.queued_candidates(
            session, labels=labels, now=now or datetime.now(UTC), limit=limit, after=after
        )
        if page:
            pages.append([candidate.job_id for candidate in page])
        if len(page) < limit:
            return pages
        after = page[-1]


class TestQueuedCandidates:
    def test_pages_follow_priority_then_queue_time_then_id_without_gaps_or_repeats(
        self, db_session: Session
    ) -> None:
        project = add_project(db_session, "p")
        tie = minutes_ago(5)
        low_old = queue_job(db_session, project, priority=-1, queued_at=minutes_ago(60))
        tied = [queue_job(db_session, project, queued_at=tie) for _ in range(4)]
        newer = queue_job(db_session, project, queued_at=minutes_ago(1))
        oldest = queue_job(db_session, project, queued_at=minutes_ago(30))
        high = [
            queue_job(db_session, project, priority=7, queued_at=minutes_ago(n)) for n in (1, 2)
        ]
        pages = _all_pages(db_session, labels=[], limit=3)
        expected = [
            high[1].id,
            high[0].id,
            oldest.id,
            *(job.id for job in tied),
            newer.id,
            low_old.id,
        ]
        assert [job_id for page in pages for job_id in page] == expected
        assert [len(page) for page in pages] == [3, 3, 3]

    def test_jobs_waiting_out_a_backoff_are_left_out_until_due(self, db_session: Session) -> None:
        project = add_project(db_session, "p")
        waiting = queue_job(db_session, project, queued_at=minutes_ago(2), commit=False)
        due_at = datetime.now(UTC) + timedelta(seconds=30)
        waiting.claimable_at = due_at
        ready = queue_job(db_session, project, queued_at=minutes_ago(1))
        assert _all_pages(db_session, labels=[], limit=5) == [[ready.id]]
        assert _all_pages(db_session, labels=[], limit=5, now=due_at) == [[waiting.id, ready.id]]

    def test_only_jobs_whose_labels_are_all_the_agents_are_read(self, db_session: Session) -> None:
        project = add_project(db_session, "p")
        both = queue_job(db_session, project, labels=["linux", "arm"], queued_at=minutes_ago(4))
        queue_job(db_session, project, labels=["linux", "gpu"], queued_at=minutes_ago(3))
        one = queue_job(db_session, project, labels=["arm"], queued_at=minutes_ago(2))
        none = queue_job(db_session, project, queued_at=minutes_ago(1))
        assert _all_pages(db_session, labels=["arm", "linux", "x86"], limit=10) == [
            [both.id, one.id, none.id]
        ]
        assert _all_pages(db_session, labels=[], limit=10) == [[none.id]]

    def test_projects_to_skip_are_left_out(self, db_session: Session) -> None:
        full = add_project(db_session, "full", limit=1)
        other = add_project(db_session, "other")
        queue_job(db_session, full, queued_at=minutes_ago(2))
        kept = queue_job(db_session, other, queued_at=minutes_ago(1))
        page = repository.queued_candidates(
            db_session, labels=[], now=datetime.now(UTC), limit=5, skip_projects={full.id}
        )
        assert [candidate.job_id for candidate in page] == [kept.id]

    def test_database_reads_the_page_off_the_queue_index_without_sorting(
        self, db_session: Session
    ) -> None:
        """The claim's cost must not grow with the queue: the page comes in index order,
        so the database stops after `limit` rows instead of sorting the whole queue."""
        project = add_project(db_session, "p")
        first = queue_job(db_session, project)
        statements: list[tuple[str, Any]] = []
        connection = db_session.connection()

        def record(
            _conn: Connection, _cursor: Any, statement: str, parameters: Any, *_: Any
        ) -> None:
            statements.append((statement, parameters))

        event.listen(connection, "before_cursor_execute", record)
        try:
            (cursor,) = repository.queued_candidates(
                db_session, labels=["linux"], now=datetime.now(UTC), limit=4
            )
            repository.queued_candidates(
                db_session, labels=["linux"], now=datetime.now(UTC), limit=4, after=cursor
            )
        finally:
            event.remove(connection, "before_cursor_execute", record)
        assert cursor.job_id == first.id
        assert len(statements) == 2
        for statement, parameters in statements:
            plan = _plan(connection, statement, parameters)
            assert "ix_jobs_queue" in plan, plan
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


def _plan(connection: Connection, statement: str, parameters: Any) -> str:
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(row[-1]) for row in rows)
    # A tiny table is cheaper to scan and sort than to read by index; forbid both, so
    # that the plan shows whether the index can give the order at all.
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    connection.exec_driver_sql("SET LOCAL enable_sort = off")
    rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(str(row[0]) for row in rows)


class TestNextClaimableAt:
    def test_is_the_earliest_future_due_time_of_queued_jobs(self, db_session: Session) -> None:
        project = add_project(db_session, "p")
        now = datetime.now(UTC)
        soon, later, past = (queue_job(db_session, project, commit=False) for _ in range(3))
        soon.claimable_at = now + timedelta(seconds=5)
        later.claimable_at = now + timedelta(seconds=50)
        past.claimable_at = now - timedelta(seconds=5)
        db_session.commit()
        assert repository.next_claimable_at(db_session, now) == now + timedelta(seconds=5)

    def test_is_none_when_every_backoff_already_ended(self, db_session: Session) -> None:
        project = add_project(db_session, "p")
        job = queue_job(db_session, project, commit=False)
        job.claimable_at = datetime.now(UTC) - timedelta(seconds=1)
        db_session.commit()
        assert repository.next_claimable_at(db_session, datetime.now(UTC)) is None
