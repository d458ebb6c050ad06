from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.db import dialect
from conveyor.server.db.engine import create_database_engine
from conveyor.server.errors import InvalidInputError
from conveyor.server.models import Job, Membership, Project, Role, Run, User


def _project(session: Session, name: str = "app") -> Project:
    project = Project(name=name, git_url="file:///srv/git/app.git")
    session.add(project)
    session.flush()
    return project


def _run(session: Session, project: Project, number: int) -> Run:
    run = Run(project_id=project.id, number=number, event="manual", commit_sha="a" * 40)
    session.add(run)
    session.flush()
    return run


class TestTimestamps:
    def test_aware_time_in_another_zone_comes_back_as_the_same_instant_in_utc(
        self, db_session: Session
    ) -> None:
        plus_two = timezone(timedelta(hours=2))
        created = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=plus_two)
        db_session.add(User(name="ada", created_at=created))
        db_session.commit()
        db_session.expunge_all()
        stored = db_session.scalars(select(User.created_at).where(User.name == "ada")).one()
        assert stored.tzinfo is UTC
        assert stored == created
        assert stored.hour == 10

    def test_naive_time_is_refused(self, db_session: Session) -> None:
        db_session.add(User(name="bob", created_at=datetime(2026, 3, 1, 12, 0)))
        with pytest.raises(StatementError, match="naive datetime"):
            db_session.flush()

    def test_default_creation_time_is_now_in_utc(self, db_session: Session) -> None:
        before = datetime.now(UTC)
        user = User(name="cy")
        db_session.add(user)
        db_session.commit()
        db_session.expire_all()
        assert before <= user.created_at <= datetime.now(UTC)


class TestConstraints:
    def test_foreign_keys_are_enforced(self, db_session: Session) -> None:
        db_session.add(Membership(user_id=999_999, project_id=999_999, role=Role.VIEWER))
        with pytest.raises(IntegrityError):
            db_session.flush()

    def test_run_number_is_unique_per_project_only(self, db_session: Session) -> None:
        first, second = _project(db_session, "first"), _project(db_session, "second")
        _run(db_session, first, 1)
        _run(db_session, second, 1)
        db_session.flush()
        _run_again = Run(project_id=first.id, number=1, event="manual", commit_sha="b" * 40)
        db_session.add(_run_again)
        with pytest.raises(IntegrityError):
            db_session.flush()

    def test_status_column_refuses_values_outside_the_enum(self, db_session: Session) -> None:
        run = _run(db_session, _project(db_session), 1)
        db_session.commit()
        with pytest.raises(IntegrityError):
            db_session.execute(
                text("UPDATE runs SET status = 'exploded' WHERE id = :id"), {"id": run.id}
            )

    def test_deleting_a_run_deletes_its_jobs(self, db_session: Session) -> None:
        run = _run(db_session, _project(db_session), 1)
        db_session.add(Job(run_id=run.id, name="build", plan={"name": "build", "steps": []}))
        db_session.commit()
        db_session.delete(run)
        db_session.commit()
        assert db_session.scalars(select(Job)).all() == []


class TestJsonAndEnums:
    def test_job_plan_and_status_round_trip(self, db_session: Session) -> None:
        run = _run(db_session, _project(db_session), 1)
        plan = {
            "name": "test",
            "matrix": {"PY": "3.12"},
            "steps": [{"name": "t", "commands": ["true"]}],
        }
        job = Job(run_id=run.id, name="test", plan=plan, labels=["linux", "docker"])
        db_session.add(job)
        db_session.commit()
        db_session.expunge_all()
        stored = db_session.get(Job, job.id)
        assert stored is not None
        assert stored.plan == plan
        assert stored.labels == ["linux", "docker"]
        assert stored.status is Status.QUEUED
        raw = db_session.execute(text("SELECT status FROM jobs")).scalar_one()
        assert raw == "queued"


class TestSqlitePragmas:
    def test_wal_foreign_keys_and_busy_timeout_are_set(self, tmp_path: object) -> None:
        engine = create_database_engine(f"sqlite:///{tmp_path}/pragmas.db")
        try:
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert (
                    connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
                    == dialect.SQLITE_BUSY_TIMEOUT_MS
                )
        finally:
            engine.dispose()

    def test_a_read_session_cannot_write_and_a_pooled_connection_writes_again_after(
        self, tmp_path: object
    ) -> None:
        engine = create_database_engine(f"sqlite:///{tmp_path}/reads.db")
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            reader = engine.execution_options(**dialect.read_transaction_options(engine))
            with reader.connect() as connection, connection.begin():
                assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
                with pytest.raises(OperationalError, match="readonly database"):
                    connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            # The same pooled connection, now for a writer: the setting does not stick.
            writer = engine.execution_options(**dialect.write_transaction_options(engine))
            with writer.begin() as connection:
                connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            with engine.connect() as connection:
                assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
        finally:
            engine.dispose()


class TestDialect:
    def test_plain_postgresql_url_uses_psycopg_3(self) -> None:
        url = dialect.normalize_url("postgresql://u:p@db:5432/conveyor")
        assert url.drivername == "postgresql+psycopg"
        assert dialect.kind_of("postgres://u:p@db/conveyor") is dialect.DatabaseKind.POSTGRESQL

    def test_other_databases_are_refused_with_what_is_supported(self) -> None:
        with pytest.raises(InvalidInputError, match=r"SQLite .* or PostgreSQL"):
            dialect.normalize_url("mysql://u:p@db/conveyor")
