from __future__ import annotations

import pytest

from conveyor.pipeline import branch_matches
from conveyor.pipeline.globs import GlobSyntaxError, compile_glob


class TestBranchMatches:
    def test_plain_name_matches_only_itself(self) -> None:
        assert branch_matches("main", ["main"])
        assert not branch_matches("main2", ["main"])
        assert not branch_matches("feature/main", ["main"])

    def test_single_star_stays_within_one_segment(self) -> None:
        assert branch_matches("release/1.2", ["release/*"])
        assert not branch_matches("release/1.2/hotfix", ["release/*"])
        assert not branch_matches("release", ["release/*"])

    def test_double_star_crosses_segments(self) -> None:
        assert branch_matches("release/1.2/hotfix", ["release/**"])
        assert branch_matches("team/a/feature/x", ["**/feature/*"])
        assert branch_matches("feature/x", ["**/feature/*"])

    def test_question_mark_and_sets_match_one_character(self) -> None:
        assert branch_matches("v1", ["v?"])
        assert not branch_matches("v/", ["v?"])
        assert branch_matches("hotfix-b", ["hotfix-[abc]"])
        assert not branch_matches("hotfix-d", ["hotfix-[abc]"])
        assert branch_matches("hotfix-d", ["hotfix-[!abc]"])

    def test_any_of_several_patterns_is_enough(self) -> None:
        assert branch_matches("release/2", ["main", "release/*"])
        assert not branch_matches("feature/x", ["main", "release/*"])
        assert not branch_matches("main", [])

    def test_regex_characters_are_literal(self) -> None:
        assert branch_matches("a+b.c", ["a+b.c"])
        assert not branch_matches("aab-c", ["a+b.c"])


class TestCompileGlob:
    def test_unclosed_set_is_a_syntax_error_that_says_how_to_fix_it(self) -> None:
        with pytest.raises(GlobSyntaxError, match=r"never closed; write `\[\[\]`"):
            compile_glob("release/[12")

    def test_empty_pattern_is_a_syntax_error(self) -> None:
        with pytest.raises(GlobSyntaxError, match="cannot be empty"):
            compile_glob("")
