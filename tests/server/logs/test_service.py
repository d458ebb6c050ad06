"""The log service on a real database (SQLite and PostgreSQL) and real files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from conveyor.agent.masking import MASK
from conveyor.logstore import read_lines
from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.db.engine import create_session_factory
from conveyor.server.logs import service
from conveyor.server.models.step import Step
from tests.server.logs.records import add_run


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


def _stored(settings: Settings, step: Step) -> bytes:
    return service.log_file(settings, step).read_bytes()


class TestAppend:
    def test_batches_in_order_are_stored_byte_for_byte(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        first = service.append(db_session, settings, step, 0, b"one\ntw", {})
        second = service.append(db_session, settings, step, 6, b"o\nthree\n", {})
        db_session.commit()
        assert (first.size, first.lines) == (6, 2)
        assert (second.size, second.lines) == (14, 3)
        assert _stored(settings, step) == b"one\ntwo\nthree\n"
        db_session.refresh(step)
        assert (step.log_byte_size, step.log_line_count) == (14, 3)

    def test_duplicate_batch_is_ignored_and_answers_the_held_size(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        service.append(db_session, settings, step, 0, b"a\nb\n", {})
        again = service.append(db_session, settings, step, 0, b"a\nb\n", {})
        inner = service.append(db_session, settings, step, 2, b"b\n", {})
        assert again.size == inner.size == 4
        assert _stored(settings, step) == b"a\nb\n"

    def test_batch_overlapping_the_end_appends_only_its_new_tail(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        service.append(db_session, settings, step, 0, b"alpha\nbe", {})
        result = service.append(db_session, settings, step, 6, b"beta\ngamma\n", {})
        assert result.size == len(b"alpha\nbeta\ngamma\n")
        assert _stored(settings, step) == b"alpha\nbeta\ngamma\n"

    def test_batch_past_the_end_is_a_gap_error_with_the_held_size(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        service.append(db_session, settings, step, 0, b"12345", {})
        with pytest.raises(service.LogGapError) as caught:
            service.append(db_session, settings, step, 9, b"more\n", {})
        assert caught.value.status_code == 409
        assert caught.value.detail == {"size": 5}
        assert "resend from byte 5" in caught.value.message
        assert _stored(settings, step) == b"12345"

    def test_unmasked_secret_is_stored_as_sent_so_agent_offsets_hold(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        sent = b"token=hunter2hunter2\n"
        result = service.append(db_session, settings, step, 0, sent, {"T": "hunter2hunter2"})
        assert result.size == len(sent)
        assert _stored(settings, step) == sent

    def test_agents_racing_on_one_step_store_the_stream_exactly_once(
        self, db_session: Session, settings: Settings, migrated_engine: Engine
    ) -> None:
        # Four senders push the same stream of batches (as a retrying agent would);
        # without the per-step lock their writes would interleave or repeat.
        records = add_run(db_session)
        step_id = records.steps[0].id
        batches = [f"line {i:05d} {'x' * (i % 50)}\n".encode() for i in range(150)]
        factory = create_session_factory(migrated_engine)
        write_options = dialect.write_transaction_options(migrated_engine)
        failures: list[BaseException] = []

        def send() -> None:
            try:
                with factory() as session:
                    offset = 0
                    for batch in batches:
                        # As the agent API does: a writer from the first statement.
                        session.connection(execution_options=write_options)
                        step = session.get(Step, step_id)
                        assert step is not None
                        service.append(session, settings, step, offset, batch, {})
                        session.commit()
                        offset += len(batch)
            except BaseException as error:  # reported below, in the test's thread
                failures.append(error)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert _stored(settings, records.steps[0]) == b"".join(batches)
        db_session.expire_all()
        step = db_session.get(Step, step_id)
        assert step is not None
        assert step.log_line_count == 150
        assert step.log_byte_size == len(b"".join(batches))


class TestWriteMessage:
    def test_message_starts_on_a_line_of_its_own(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        service.append(db_session, settings, step, 0, b"partial", {})
        service.write_message(db_session, settings, step, ".conveyor.yml:3:5: expected a list")
        db_session.commit()
        assert _stored(settings, step) == b"partial\n.conveyor.yml:3:5: expected a list\n"
        db_session.refresh(step)
        assert step.log_line_count == 2


class TestReadRange:
    def test_ranges_of_a_200k_line_log_equal_the_file_lines(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        text = b"".join(f"{i} {'.' * (i % 97)}\n".encode() for i in range(200_000))
        offset = 0
        for start in range(0, len(text), 1 << 20):  # 1 MiB batches, cut mid-line
            chunk = text[start : start + (1 << 20)]
            service.append(db_session, settings, step, offset, chunk, {})
            offset += len(chunk)
        expected = text.split(b"\n")[:-1]
        for start, end in [(0, 10), (65_536, 65_600), (123_456, 133_456), (199_990, None)]:
            got = service.read_range(settings, step, start, end)
            assert [line.rstrip(b"\n") for line in got] == expected[start:end]
        assert read_lines(service.log_file(settings, step), 199_999) == [expected[-1] + b"\n"]

    def test_one_read_returns_at_most_the_page_limit(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        data = b"x\n" * (service.MAX_LINES_PER_READ + 5)
        service.append(db_session, settings, step, 0, data, {})
        assert len(service.read_range(settings, step, 0, None)) == service.MAX_LINES_PER_READ

    def test_step_without_a_log_reads_as_no_lines(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[1]
        assert service.read_range(settings, step, 0, 100) == []

    def test_inverted_range_is_refused(self, db_session: Session, settings: Settings) -> None:
        step = add_run(db_session).steps[0]
        with pytest.raises(service.InvalidLogRangeError):
            service.read_range(settings, step, 5, 2)


class TestMaskingWhenServed:
    def test_secret_spanning_two_lines_is_masked_on_both_and_lines_stay_apart(self) -> None:
        masker = service.masker_for({"KEY": "first-line\nsecond-line"})
        lines = [b"before\n", b"first-line\n", b"second-line\n", b"after\n"]
        masked = service.mask_lines(lines, masker)
        assert masked == [b"before\n", MASK + b"\n", MASK + b"\n", b"after\n"]

    def test_text_lines_replace_invalid_utf8_and_drop_line_endings(self) -> None:
        assert service.line_text(b"caf\xc3\xa9 \xff\r\n") == "café \ufffd"

    def test_raw_log_is_masked_and_its_length_is_the_bytes_sent(
        self, db_session: Session, settings: Settings
    ) -> None:
        step = add_run(db_session).steps[0]
        data = b"".join(f"{i} pw=s3cr3t-value\n".encode() for i in range(100_000))
        service.append(db_session, settings, step, 0, data, {})
        raw = service.raw_log(settings, step, {"PW": "s3cr3t-value"})
        body = b"".join(raw.chunks())
        assert body == data.replace(b"s3cr3t-value", MASK)
        assert raw.length() == len(body)
