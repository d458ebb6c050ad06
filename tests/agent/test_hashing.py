"""Digests checked against 7-Zip itself (`7z h -scrc<NAME>`), run as a subprocess."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conveyor.agent.hashing import Hasher, file_digest, file_digests
from conveyor.pipeline.plan import HashAlgorithm

SEVEN_ZIP_NAMES = {
    HashAlgorithm.CRC32: "CRC32",
    HashAlgorithm.CRC64: "CRC64",
    HashAlgorithm.SHA1: "SHA1",
    HashAlgorithm.SHA256: "SHA256",
    HashAlgorithm.BLAKE2: "BLAKE2sp",
}
ALGORITHMS = list(SEVEN_ZIP_NAMES)
# Around the 64-byte block and the 512-byte BLAKE2sp stripe, and a few MB.
SIZES = [0, 1, 63, 64, 65, 511, 512, 513, 1000, 4096 + 7, 3 * 1024 * 1024 + 333]


def require_seven_zip() -> str:
    found = shutil.which("7z")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("7z is not installed (CI=true: install p7zip-full or 7zip)")
        pytest.skip("7z is not installed; install it with: apt-get install 7zip")
    return found


def seven_zip_hashes(algorithm: HashAlgorithm, files: list[Path]) -> dict[str, str]:
    """File name -> digest as `7z h` prints it, for every file (lowercased)."""
    done = subprocess.run(
        [require_seven_zip(), "h", f"-scrc{SEVEN_ZIP_NAMES[algorithm]}", *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    )
    # The table sits between two dashed rules: "<digest> <size> <name>" per file.
    table = re.search(r"^-[- ]+\n(.*?)^-[- ]+$", done.stdout, re.MULTILINE | re.DOTALL)
    assert table is not None, done.stdout
    digests = {}
    for line in table.group(1).splitlines():
        digest, _size, name = line.split(maxsplit=2)
        digests[Path(name).name] = digest.lower()
    assert len(digests) == len(files), done.stdout
    return digests


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("hash-samples")
    generator = random.Random(20240501)
    files = []
    for size in SIZES:
        path = folder / f"size-{size}.bin"
        path.write_bytes(generator.randbytes(size))
        files.append(path)
    return files


@pytest.fixture(scope="module")
def seven_zip_digests(
    sample_files: list[Path],
) -> dict[HashAlgorithm, dict[str, str]]:
    return {algorithm: seven_zip_hashes(algorithm, sample_files) for algorithm in ALGORITHMS}


class TestFileDigest:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    @pytest.mark.parametrize("size", SIZES)
    def test_digest_equals_what_7z_prints(
        self,
        sample_files: list[Path],
        seven_zip_digests: dict[HashAlgorithm, dict[str, str]],
        algorithm: HashAlgorithm,
        size: int,
    ) -> None:
        path = sample_files[SIZES.index(size)]
        assert file_digest(path, algorithm) == seven_zip_digests[algorithm][path.name]

    def test_none_has_no_digest(self, tmp_path: Path) -> None:
        path = tmp_path / "file"
        path.write_bytes(b"content")
        assert file_digest(path, HashAlgorithm.NONE) is None

    def test_crcs_are_printed_as_big_endian_numbers(self, tmp_path: Path) -> None:
        # The catalogue check values of CRC-32/ISO-HDLC and CRC-64/XZ for "123456789":
        # the number itself, not the little-endian bytes an archive stores.
        path = tmp_path / "check"
        path.write_bytes(b"123456789")
        assert file_digest(path, HashAlgorithm.CRC32) == "cbf43926"
        assert file_digest(path, HashAlgorithm.CRC64) == "995dc9bbdf1939fa"

    def test_sha_digests_equal_hashlib(self, sample_files: list[Path]) -> None:
        path = sample_files[SIZES.index(513)]
        content = path.read_bytes()
        assert (
            file_digest(path, HashAlgorithm.SHA1)
            == hashlib.sha1(content, usedforsecurity=False).hexdigest()
        )
        assert file_digest(path, HashAlgorithm.SHA256) == hashlib.sha256(content).hexdigest()

    def test_blake2sp_of_a_large_file_equals_7z(self, tmp_path: Path) -> None:
        path = tmp_path / "large.bin"
        path.write_bytes(random.Random(7).randbytes(48 * 1024 * 1024 + 100))
        started = time.perf_counter()
        digest = file_digest(path, HashAlgorithm.BLAKE2)
        elapsed = time.perf_counter() - started
        print(f"\nBLAKE2sp: 48 MB in {elapsed:.2f} s ({48 / elapsed:.0f} MB/s)")
        assert digest == seven_zip_hashes(HashAlgorithm.BLAKE2, [path])[path.name]


class TestFileDigests:
    def test_several_algorithms_in_one_read_equal_one_at_a_time(
        self, sample_files: list[Path]
    ) -> None:
        path = sample_files[SIZES.index(4096 + 7)]
        wanted = [*ALGORITHMS, HashAlgorithm.NONE]
        assert file_digests(path, wanted) == {
            algorithm: file_digest(path, algorithm) for algorithm in wanted
        }


class TestHasher:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_uneven_pieces_give_the_digest_of_the_whole(
        self, sample_files: list[Path], algorithm: HashAlgorithm
    ) -> None:
        path = sample_files[SIZES.index(3 * 1024 * 1024 + 333)]
        content = path.read_bytes()
        hasher = Hasher(algorithm)
        generator = random.Random(3)
        offset = 0
        while offset < len(content):
            # Pieces from 1 byte to well past a stripe and a slab, at odd offsets.
            step = generator.choice([1, 7, 63, 64, 65, 500, 513, 4099, 1_100_000])
            hasher.update(content[offset : offset + step])
            offset += step
        assert hasher.hexdigest() == file_digest(path, algorithm)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_hexdigest_does_not_end_the_hashing(
        self, sample_files: list[Path], algorithm: HashAlgorithm
    ) -> None:
        path = sample_files[SIZES.index(1000)]
        content = path.read_bytes()
        hasher = Hasher(algorithm)
        hasher.update(content[:300])
        partial = hasher.hexdigest()
        hasher.update(memoryview(content)[300:])
        assert partial != hasher.hexdigest()
        assert hasher.hexdigest() == file_digest(path, algorithm)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_copy_hashes_on_independently(self, algorithm: HashAlgorithm) -> None:
        hasher = Hasher(algorithm)
        hasher.update(b"x" * 700)
        twin = hasher.copy()
        twin.update(b"more")
        plain = Hasher(algorithm)
        plain.update(b"x" * 700)
        assert hasher.hexdigest() == plain.hexdigest()
        assert twin.hexdigest() != plain.hexdigest()

    def test_digests_are_lowercase_hex(self) -> None:
        for algorithm in ALGORITHMS:
            hasher = Hasher(algorithm)
            hasher.update(b"abc")
            assert re.fullmatch("[0-9a-f]+", hasher.hexdigest())

    def test_none_is_refused_with_a_pointer_to_file_digest(self) -> None:
        with pytest.raises(ValueError, match="file_digest"):
            Hasher(HashAlgorithm.NONE)
