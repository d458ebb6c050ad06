from __future__ import annotations

import pytest

from conveyor.pipeline import parse_duration


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90s", 90),
            ("10m", 600),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("1d2h3m4s", 93_784),
            ("1h 30m", 5400),
            ("45", 45),
            ("2.5", 2.5),
            (45, 45),
            (0.5, 0.5),
        ],
    )
    def test_reads_units_and_plain_seconds(self, text: str | int | float, seconds: float) -> None:
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["ten minutes", "10x", "m10", "30m1h", "", "1h1h"])
    def test_rejects_text_that_is_not_a_duration_with_an_example(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"expected a duration such as 90s, 10m or 1h"):
            parse_duration(text)

    @pytest.mark.parametrize("value", [0, -5, "0s", float("inf")])
    def test_rejects_durations_that_are_not_positive(self, value: str | float) -> None:
        with pytest.raises(ValueError, match="more than zero"):
            parse_duration(value)

    def test_rejects_booleans(self) -> None:
        with pytest.raises(ValueError, match="found true"):
            parse_duration(True)
