from __future__ import annotations

import base64
import time

import pytest

from conveyor.agent.masking import MASK, Masker


class TestMask:
    def test_secret_in_a_line_is_masked(self) -> None:
        masker = Masker({"TOKEN": "hunter2-token"})
        assert masker.mask(b"login with hunter2-token now\n") == b"login with ******** now\n"

    def test_every_occurrence_is_masked(self) -> None:
        masker = Masker({"TOKEN": "s3cr3t"})
        chunk = b"s3cr3t\na s3cr3t b s3cr3ts3cr3t\nend s3cr3t\n"
        assert masker.mask(chunk) == b"********\na ******** b ****************\nend ********\n"

    def test_every_secret_of_the_masker_is_masked(self) -> None:
        masker = Masker({"USER": "deploy-user", "PASSWORD": "correct horse"})
        chunk = b"deploy-user:correct horse\n"
        assert masker.mask(chunk) == b"********:********\n"

    def test_chunk_without_a_secret_is_returned_as_is(self) -> None:
        masker = Masker({"TOKEN": "hunter2-token"})
        chunk = b"nothing to see here\n" * 10
        assert masker.mask(chunk) is chunk

    def test_empty_masker_returns_the_chunk_itself(self) -> None:
        masker = Masker({})
        chunk = b"any output at all\n"
        assert masker.mask(chunk) is chunk

    def test_longer_secret_wins_over_a_secret_it_starts_with(self) -> None:
        masker = Masker({"SHORT": "password", "LONG": "password123"})
        assert masker.mask(b"x password123 y password z\n") == b"x ******** y ******** z\n"

    def test_secret_contained_in_another_is_masked_with_it(self) -> None:
        masker = Masker({"OUTER": "abc-inner-xyz", "INNER": "inner"})
        assert masker.mask(b"abc-inner-xyz inner\n") == b"******** ********\n"

    def test_overlapping_secrets_are_masked_as_one_stretch(self) -> None:
        # Neither secret may leak its tail: "abcdef" then "defghi" overlap in "def".
        masker = Masker({"FIRST": "abcdef", "SECOND": "defghi"})
        assert masker.mask(b"<abcdefghi>\n") == b"<********>\n"
        assert masker.mask(b"<defghi abcdef>\n") == b"<******** ********>\n"

    def test_chain_of_overlaps_is_masked_to_its_end(self) -> None:
        masker = Masker({"A": "aaaabbbb", "B": "bbbbcccc", "C": "ccccdddd"})
        assert masker.mask(b"aaaabbbbccccdddd!\n") == b"********!\n"

    def test_multiline_secret_is_masked_whole(self) -> None:
        key = "-----BEGIN KEY-----\nMIIBVwIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----"
        masker = Masker({"KEY": key})
        assert masker.mask(f"key:\n{key}\ndone\n".encode()) == b"key:\n********\ndone\n"

    def test_each_line_of_a_multiline_secret_is_masked_on_its_own(self) -> None:
        key = "-----BEGIN KEY-----\nMIIBVwIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----\n"
        masker = Masker({"KEY": key})
        # The chunk holds only the middle of the key, as a chunk of lines may.
        assert masker.mask(b"hkiG9w0BAQEFAASC\n") == b"********\n"
        assert masker.mask(b"+ echo MIIBVwIBADANBgkq\n") == b"+ echo ********\n"

    def test_lines_of_a_multiline_secret_with_crlf_are_masked_without_the_cr(self) -> None:
        masker = Masker({"CERT": "first-line\r\nsecond-line\r\n"})
        assert masker.mask(b"second-line\r\n") == b"********\r\n"

    def test_short_lines_of_a_multiline_secret_are_not_masked_alone(self) -> None:
        masker = Masker({"KEY": "abc\nlong-enough-line"})
        assert masker.mask(b"abc\nlong-enough-line\n") == b"********\n"
        assert masker.mask(b"abc is everywhere\n") == b"abc is everywhere\n"

    @pytest.mark.parametrize(
        "encode",
        [
            base64.standard_b64encode,
            lambda raw: base64.standard_b64encode(raw).rstrip(b"="),
            base64.urlsafe_b64encode,
            lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="),
        ],
        ids=["standard", "standard-unpadded", "urlsafe", "urlsafe-unpadded"],
    )
    def test_base64_form_of_the_secret_is_masked(self, encode: object) -> None:
        # Chosen so both alphabets differ (+/ vs -_) and padding is needed.
        secret = "ab>>>?cd~~~"
        raw = secret.encode()
        assert callable(encode)
        encoded: bytes = encode(raw)
        assert base64.standard_b64encode(raw) != base64.urlsafe_b64encode(raw)
        assert base64.standard_b64encode(raw).endswith(b"=")
        masker = Masker({"TOKEN": secret})
        assert masker.mask(b"Authorization: Basic " + encoded + b"\n") == (
            b"Authorization: Basic ********\n"
        )

    def test_regex_metacharacters_in_a_secret_match_only_themselves(self) -> None:
        secret = r"a.b*c+(d)[e]$^|\z?"
        masker = Masker({"WEIRD": secret})
        assert masker.mask(b"v=" + secret.encode() + b";\n") == b"v=********;\n"
        # As a regex "a.b*c+" would match these; as a literal it must not.
        assert masker.mask(b"aXbbbcc(d)e\n") == b"aXbbbcc(d)e\n"

    def test_non_utf8_bytes_around_a_secret_are_kept(self) -> None:
        masker = Masker({"TOKEN": "hunter2-token"})
        chunk = b"\xff\xfe\x80hunter2-token\xc3\x28\x00\n"
        assert masker.mask(chunk) == b"\xff\xfe\x80********\xc3\x28\x00\n"

    def test_non_ascii_secret_is_masked_in_its_utf8_form(self) -> None:
        masker = Masker({"PHRASE": "pässwörd-ß"})
        assert masker.mask("x pässwörd-ß y\n".encode()) == b"x ******** y\n"

    def test_values_under_four_characters_are_not_masked(self) -> None:
        masker = Masker({"FLAG": "on", "DIGIT": "1", "THREE": "abc", "EMPTY": ""})
        chunk = b"on 1 abc\n"
        assert masker.mask(chunk) is chunk

    def test_four_characters_are_enough_to_be_masked(self) -> None:
        masker = Masker({"PIN": "4711"})
        assert masker.mask(b"pin 4711\n") == b"pin ********\n"

    def test_surrounding_whitespace_does_not_count_towards_the_minimum(self) -> None:
        masker = Masker({"PADDED": "  ab  "})
        chunk = b"  ab  \n"
        assert masker.mask(chunk) is chunk

    def test_secrets_too_short_to_mask_are_named(self) -> None:
        masker = Masker({"FLAG": "on", "TOKEN": "long-enough", "EMPTY": ""})
        assert masker.unmaskable == ["FLAG"]


class TestMaskThroughput:
    def test_100_mb_of_100_byte_lines_with_5_secrets(self) -> None:
        secrets = {
            "GITHUB": "ghp_aB3dE6fG9hJ2kL5mN8pQ1rS4tU7vW0xY3z",
            "AWS": "AKIAIOSFODNN7EXAMPLE",
            "PASSWORD": "hunter2-password",
            "DSN": "postgres://ci:pw@db/app",
            "PIN": "s3cr3t!",
        }
        masker = Masker(secrets)
        plain = (
            b"2024-05-01 12:00:00 INFO compiling src/module/file.c with -O2 -Wall into build ok\n"
        )
        plain = plain[:99].ljust(99, b".") + b"\n"
        leaky = b"export TOKEN=hunter2-password".ljust(99, b" ") + b"\n"
        # 64 KiB chunks of complete lines, one line in 100 holding a secret.
        chunk = b"".join(leaky if index % 100 == 0 else plain for index in range(655))
        expected = chunk.replace(b"hunter2-password", MASK)
        chunks = 100_000_000 // len(chunk)
        started = time.perf_counter()
        for _ in range(chunks):
            masked = masker.mask(chunk)
        elapsed = time.perf_counter() - started
        print(f"\nmasking: {chunks * len(chunk) / 1e6:.0f} MB, 5 secrets, {elapsed:.2f} s")
        assert masked == expected
