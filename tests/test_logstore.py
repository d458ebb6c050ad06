from array import array
from pathlib import Path

from conveyor import logstore
from conveyor.logstore import LineTimes, LogWriter, read_lines


def write_lines(path: Path, count: int, chunk_lines: int = 1000) -> list[bytes]:
    lines = [f"line {i:07d} {'x' * (i % 50)}\n".encode() for i in range(count)]
    with LogWriter(path) as writer:
        for start in range(0, count, chunk_lines):
            writer.append(b"".join(lines[start : start + chunk_lines]))
    return lines


class TestLogWriter:
    def test_stored_bytes_equal_what_was_appended(self, tmp_path: Path) -> None:
        lines = write_lines(tmp_path / "a.log", 5000)
        assert (tmp_path / "a.log").read_bytes() == b"".join(lines)

    def test_counts_lines_including_an_unterminated_last_one(self, tmp_path: Path) -> None:
        with LogWriter(tmp_path / "a.log") as writer:
            writer.append(b"one\ntwo\nthr")
            assert writer.lines == 2
            assert writer.total_lines == 3
            writer.append(b"ee\n")
            assert writer.total_lines == 3

    def test_reopening_continues_the_count(self, tmp_path: Path) -> None:
        write_lines(tmp_path / "a.log", 10)
        with LogWriter(tmp_path / "a.log") as writer:
            assert writer.lines == 10
            writer.append(b"more\n")
            assert writer.lines == 11
        assert read_lines(tmp_path / "a.log", 10, 11) == [b"more\n"]

    def test_index_stays_small(self, tmp_path: Path) -> None:
        write_lines(tmp_path / "a.log", 200_000)
        size = (tmp_path / "a.log").stat().st_size
        index_size = logstore.index_path(tmp_path / "a.log").stat().st_size
        assert index_size <= (size // logstore.INDEX_EVERY_BYTES + 2) * 16


class TestReadLines:
    def test_any_range_equals_the_same_slice_of_the_file(self, tmp_path: Path) -> None:
        lines = write_lines(tmp_path / "a.log", 50_000, chunk_lines=777)
        for start, end in [(0, 1), (0, 10), (123, 456), (49_990, 50_000), (30_000, 30_001)]:
            assert read_lines(tmp_path / "a.log", start, end) == lines[start:end]

    def test_open_end_reads_to_the_last_line(self, tmp_path: Path) -> None:
        lines = write_lines(tmp_path / "a.log", 3000)
        assert read_lines(tmp_path / "a.log", 2990) == lines[2990:]

    def test_range_past_the_end_is_empty(self, tmp_path: Path) -> None:
        write_lines(tmp_path / "a.log", 10)
        assert read_lines(tmp_path / "a.log", 10, 20) == []
        assert read_lines(tmp_path / "a.log", 5, 5) == []

    def test_reads_without_an_index_file(self, tmp_path: Path) -> None:
        lines = write_lines(tmp_path / "a.log", 100)
        logstore.index_path(tmp_path / "a.log").unlink()
        assert read_lines(tmp_path / "a.log", 50, 52) == lines[50:52]


BASE = logstore.now_ms() - 60_000
"""A minute ago, in ms since the epoch: the times of these tests' lines count from it
(a sender's clock a little behind this one's, as an agent's may be)."""


class TestLineTimes:
    def test_times_read_back_for_any_range_are_those_appended(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        times = [BASE + 7 * i for i in range(20_000)]
        with LogWriter(path) as writer:
            for start in range(0, 20_000, 999):
                count = min(999, 20_000 - start)
                writer.append(b"x\n" * count, LineTimes.of(times[start : start + count]))
        for start, end in [(0, 1), (0, 10), (123, 4_567), (19_990, 20_000)]:
            assert logstore.read_line_times(path, start, end) == times[start:end]

    def test_range_past_the_last_line_is_cut_short(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        with LogWriter(path) as writer:
            writer.append(b"a\nb\n", LineTimes.of([BASE, BASE + 1]))
        assert logstore.read_line_times(path, 1, 10) == [BASE + 1]
        assert logstore.read_line_times(path, 2, 10) == []

    def test_a_partial_last_line_has_its_time_and_its_rest_adds_none(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        with LogWriter(path) as writer:
            writer.append(b"one\ntw", LineTimes.of([BASE, BASE + 10]))
            assert logstore.read_line_times(path, 0, 5) == [BASE, BASE + 10]
            # The rest of "two" starts no line; "three" starts one.
            writer.append(b"o\nthree\n", LineTimes.of([BASE + 20]))
        assert logstore.read_line_times(path, 0, 5) == [BASE, BASE + 10, BASE + 20]
        assert read_lines(path, 0) == [b"one\n", b"two\n", b"three\n"]

    def test_times_file_holds_one_record_per_line_after_a_header(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        with LogWriter(path) as writer:
            writer.append(b"a\nb\nunterminated", LineTimes.same(BASE, 3))
        assert logstore.times_path(path).stat().st_size == 12 + 3 * 4
        assert path.read_bytes() == b"a\nb\nunterminated"

    def test_lines_appended_without_times_get_the_time_of_appending(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        before = logstore.now_ms()
        with LogWriter(path) as writer:
            writer.append(b"a\nb\n")
        after = logstore.now_ms()
        times = logstore.read_line_times(path, 0, 2)
        assert len(times) == 2
        assert all(time is not None and before <= time <= after for time in times)

    def test_a_resent_batch_whose_head_is_stored_times_its_tail_with_its_last_times(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.log"
        batch, batch_times = b"one\ntwo\nthree\n", [BASE, BASE + 1, BASE + 2]
        with LogWriter(path) as writer:
            # "one\ntw" (two line starts) was stored; the batch comes again whole.
            writer.append(batch[:6], LineTimes.of(batch_times[:2]))
            writer.append(batch[6:], LineTimes.of(batch_times))
        assert logstore.read_line_times(path, 0, 3) == batch_times

    def test_times_counted_from_another_base_are_moved_onto_the_logs(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        with LogWriter(path) as writer:
            writer.append(b"a\n", LineTimes.of([BASE]))
            # A second sender (a retried attempt) counts from its own start.
            writer.append(b"b\nc\n", LineTimes(BASE + 5_000, array("I", [0, 7])))
            writer.append(b"d\ne\n", LineTimes.same(BASE - 3_000, 2))  # a clock behind
        assert logstore.read_line_times(path, 0, 5) == [
            BASE,
            BASE + 5_000,
            BASE + 5_007,
            BASE - 3_000,
            BASE - 3_000,
        ]

    def test_reopened_log_from_before_times_has_unknown_times_then_new_ones(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.log"
        path.write_bytes(b"old 1\nold 2\n")
        with LogWriter(path) as writer:
            writer.append(b"new\n", LineTimes.of([BASE]))
        assert logstore.read_line_times(path, 0, 3) == [None, None, BASE]

    def test_times_file_longer_than_the_log_is_cut_to_its_lines_on_open(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "a.log"
        with LogWriter(path) as writer:
            writer.append(b"a\nb\n", LineTimes.of([BASE, BASE + 1]))
        # As after a crash between writing the times and the lines they time.
        with logstore.times_path(path).open("ab") as times:
            times.write(b"\x05\x00\x00\x00" * 3)
        with LogWriter(path) as writer:
            writer.append(b"c\n", LineTimes.of([BASE + 2]))
        assert logstore.read_line_times(path, 0, 10) == [BASE, BASE + 1, BASE + 2]

    def test_no_times_file_reads_as_no_times(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        path.write_bytes(b"a\n")
        assert logstore.read_line_times(path, 0, 1) == []


class TestFitLineTimes:
    @staticmethod
    def _times(times: LineTimes) -> list[int]:
        return [times.base + offset for offset in times.offsets]

    def test_more_times_than_lines_keeps_the_last(self) -> None:
        fitted = logstore.fit_line_times(LineTimes.of([1, 2, 3]), 2, now=9)
        assert self._times(fitted) == [2, 3]

    def test_fewer_times_than_lines_gives_the_first_lines_now(self) -> None:
        fitted = logstore.fit_line_times(LineTimes(3, array("I", [0])), 3, now=9)
        assert self._times(fitted) == [9, 9, 3]

    def test_no_times_gives_every_line_now(self) -> None:
        assert self._times(logstore.fit_line_times(None, 2, now=9)) == [9, 9]

    def test_no_lines_need_no_times(self) -> None:
        assert self._times(logstore.fit_line_times(LineTimes.of([1, 2]), 0, now=9)) == []


class TestReadTimeRuns:
    def test_lines_with_the_same_time_come_as_one_run(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        with LogWriter(path) as writer:
            writer.append(b"a\nb\nc\n", LineTimes.same(BASE, 3))
            writer.append(b"d\ne\n", LineTimes.of([BASE + 40, BASE + 41]))
        assert logstore.read_time_runs(path, 0, 5) == [(BASE, 3), (BASE + 40, 1), (BASE + 41, 1)]
        assert logstore.read_time_runs(path, 1, 4) == [(BASE, 2), (BASE + 40, 1)]

    def test_lines_of_unknown_time_are_a_run_of_none(self, tmp_path: Path) -> None:
        path = tmp_path / "a.log"
        path.write_bytes(b"old\nold\n")
        with LogWriter(path) as writer:
            writer.append(b"new\n", LineTimes.of([BASE]))
        assert logstore.read_time_runs(path, 0, 9) == [(None, 2), (BASE, 1)]
