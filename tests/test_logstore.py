from pathlib import Path

from conveyor import logstore
from conveyor.logstore import LogWriter, read_lines


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
