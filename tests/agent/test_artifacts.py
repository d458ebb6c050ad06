from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import py7zr
import pytest

from conveyor.agent.artifacts import (
    Artifact,
    ArtifactNameConflictError,
    ArtifactPathError,
    CollectedFile,
    SkippedFile,
    SkipReason,
    collect,
    package,
)
from conveyor.pipeline.plan import ArchiveFormat, ArtifactPlan, HashAlgorithm

PASSWD = Path("/etc/passwd")


def require_seven_zip() -> str:
    found = shutil.which("7z")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("7z is not installed (CI=true: install p7zip-full or 7zip)")
        pytest.skip("7z is not installed; install it with: apt-get install 7zip")
    return found


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    make_tree(
        root,
        {
            "README.md": b"readme",
            "dist/app.whl": b"wheel bytes",
            "dist/app.tar.gz": b"sdist bytes",
            "dist/.env": b"dot file",
            "dist/nested/deep/lib.so": b"\x7fELF",
            "reports/unit.xml": b"<testsuite/>",
            "reports/lint.txt": b"lint",
            "reports/sub/e2e.xml": b"<e2e/>",
            "src/a1.py": b"a1",
            "src/b2.py": b"b2",
            "src/c3.py": b"c3",
            "file with space.log": b"spaces",
        },
    )
    return root


@pytest.fixture
def output(tmp_path: Path) -> Path:
    root = tmp_path / "output"
    root.mkdir()
    return root


def relatives(files: list[CollectedFile]) -> list[str]:
    return [file.relative for file in files]


def collect_with_skips(
    workspace: Path, output: Path, paths: list[str]
) -> tuple[list[CollectedFile], list[SkippedFile]]:
    skipped: list[SkippedFile] = []
    found = collect(workspace, output, ArtifactPlan(paths=paths), on_skip=skipped.append)
    return found, skipped


class TestCollect:
    def test_star_matches_within_one_directory_only(self, workspace: Path, output: Path) -> None:
        found = collect(workspace, output, ArtifactPlan(paths=["reports/*.xml"]))
        assert relatives(found) == ["reports/unit.xml"]

    def test_double_star_matches_at_any_depth_including_none(
        self, workspace: Path, output: Path
    ) -> None:
        found = collect(workspace, output, ArtifactPlan(paths=["reports/**/*.xml"]))
        assert relatives(found) == ["reports/sub/e2e.xml", "reports/unit.xml"]

    def test_leading_double_star_finds_files_in_the_root_too(
        self, workspace: Path, output: Path
    ) -> None:
        found = collect(workspace, output, ArtifactPlan(paths=["**/*.md"]))
        assert relatives(found) == ["README.md"]

    def test_trailing_double_star_collects_everything_below(
        self, workspace: Path, output: Path
    ) -> None:
        found = collect(workspace, output, ArtifactPlan(paths=["dist/**"]))
        assert relatives(found) == [
            "dist/.env",
            "dist/app.tar.gz",
            "dist/app.whl",
            "dist/nested/deep/lib.so",
        ]

    def test_question_mark_and_character_classes(self, workspace: Path, output: Path) -> None:
        assert relatives(collect(workspace, output, ArtifactPlan(paths=["src/?2.py"]))) == [
            "src/b2.py"
        ]
        assert relatives(collect(workspace, output, ArtifactPlan(paths=["src/[ac]*.py"]))) == [
            "src/a1.py",
            "src/c3.py",
        ]
        assert relatives(collect(workspace, output, ArtifactPlan(paths=["src/[!a]?.py"]))) == [
            "src/b2.py",
            "src/c3.py",
        ]
        assert relatives(collect(workspace, output, ArtifactPlan(paths=["src/[a-b]1.py"]))) == [
            "src/a1.py"
        ]

    def test_wildcards_do_not_cross_directories(self, workspace: Path, output: Path) -> None:
        assert collect(workspace, output, ArtifactPlan(paths=["dist?app.whl"])) == []
        assert collect(workspace, output, ArtifactPlan(paths=["dist[/]app.whl"])) == []

    def test_pattern_naming_a_directory_collects_every_file_below_it(
        self, workspace: Path, output: Path
    ) -> None:
        for pattern in ("dist/nested", "dist/nested/", "./dist/nested", "dist/n*"):
            found = collect(workspace, output, ArtifactPlan(paths=[pattern]))
            assert relatives(found) == ["dist/nested/deep/lib.so"], pattern

    def test_literal_names_with_spaces_match(self, workspace: Path, output: Path) -> None:
        found = collect(workspace, output, ArtifactPlan(paths=["file with space.log"]))
        assert relatives(found) == ["file with space.log"]
        assert found[0].source == (workspace / "file with space.log").resolve()

    def test_every_file_under_output_is_collected_without_globs(
        self, workspace: Path, output: Path
    ) -> None:
        make_tree(output, {"build.bin": b"binary", "docs/index.html": b"<html/>"})
        assert relatives(collect(workspace, output, None)) == ["build.bin", "docs/index.html"]
        assert relatives(collect(workspace, output, ArtifactPlan())) == [
            "build.bin",
            "docs/index.html",
        ]

    def test_output_files_join_the_glob_matches(self, workspace: Path, output: Path) -> None:
        make_tree(output, {"build.bin": b"binary"})
        found = collect(workspace, output, ArtifactPlan(paths=["reports/*.txt"]))
        assert relatives(found) == ["build.bin", "reports/lint.txt"]
        assert found[0].source == (output / "build.bin").resolve()

    def test_missing_output_directory_adds_nothing(self, workspace: Path, tmp_path: Path) -> None:
        found = collect(workspace, tmp_path / "absent", ArtifactPlan(paths=["README.md"]))
        assert relatives(found) == ["README.md"]

    def test_overlapping_patterns_give_each_file_once_sorted(
        self, workspace: Path, output: Path
    ) -> None:
        found = collect(
            workspace, output, ArtifactPlan(paths=["reports/**", "reports/unit.xml", "**/*.xml"])
        )
        assert relatives(found) == ["reports/lint.txt", "reports/sub/e2e.xml", "reports/unit.xml"]

    def test_no_match_gives_no_files(self, workspace: Path, output: Path) -> None:
        assert collect(workspace, output, ArtifactPlan(paths=["nothing/**", "*.exe"])) == []

    @pytest.mark.parametrize("pattern", ["../secrets", "dist/../../etc/passwd", "..", "a/../b"])
    def test_pattern_with_a_parent_component_is_refused(
        self, workspace: Path, output: Path, pattern: str
    ) -> None:
        with pytest.raises(ArtifactPathError, match=re.escape(repr(pattern))):
            collect(workspace, output, ArtifactPlan(paths=["dist/**", pattern]))

    @pytest.mark.parametrize("pattern", ["/etc/passwd", "/", "//server/share", "C:/Windows"])
    def test_absolute_pattern_is_refused(self, workspace: Path, output: Path, pattern: str) -> None:
        with pytest.raises(ArtifactPathError, match="absolute"):
            collect(workspace, output, ArtifactPlan(paths=[pattern]))

    def test_empty_pattern_is_refused(self, workspace: Path, output: Path) -> None:
        with pytest.raises(ArtifactPathError, match="empty"):
            collect(workspace, output, ArtifactPlan(paths=[" "]))

    def test_link_to_a_file_outside_the_workspace_is_skipped_and_reported(
        self, workspace: Path, output: Path
    ) -> None:
        (workspace / "dist" / "passwd").symlink_to(PASSWD)
        for patterns in (["dist/passwd"], ["dist/**"], ["**"]):
            found, skipped = collect_with_skips(workspace, output, patterns)
            assert "dist/passwd" not in relatives(found)
            assert all(file.source != PASSWD for file in found)
            assert [(item.path.name, item.reason) for item in skipped] == [
                ("passwd", SkipReason.LINK_OUTSIDE_ROOT)
            ]
            assert "/etc/passwd" in str(skipped[0])

    def test_relative_link_climbing_out_of_the_workspace_is_skipped(
        self, workspace: Path, output: Path
    ) -> None:
        (workspace.parent / "neighbour.txt").write_bytes(b"not yours")
        (workspace / "dist" / "sneaky").symlink_to("../../neighbour.txt")
        found, skipped = collect_with_skips(workspace, output, ["dist/**"])
        assert "dist/sneaky" not in relatives(found)
        assert [item.reason for item in skipped] == [SkipReason.LINK_OUTSIDE_ROOT]

    def test_linked_directory_is_never_walked(self, workspace: Path, output: Path) -> None:
        (workspace / "etc").symlink_to("/etc", target_is_directory=True)
        (workspace / "dist" / "again").symlink_to(workspace / "dist", target_is_directory=True)
        found, skipped = collect_with_skips(workspace, output, ["etc/**", "etc", "**"])
        assert not any(file.relative.startswith(("etc/", "dist/again")) for file in found)
        assert all(file.source.is_relative_to(workspace.resolve()) for file in found)
        assert sorted((item.path.name, item.reason) for item in skipped) == [
            ("again", SkipReason.LINK_TO_DIRECTORY),
            ("etc", SkipReason.LINK_OUTSIDE_ROOT),
        ]

    def test_link_to_a_file_inside_the_workspace_is_collected_with_its_content(
        self, workspace: Path, output: Path
    ) -> None:
        (workspace / "dist" / "latest.whl").symlink_to("app.whl")
        found, skipped = collect_with_skips(workspace, output, ["dist/*.whl"])
        assert relatives(found) == ["dist/app.whl", "dist/latest.whl"]
        assert found[1].source == (workspace / "dist" / "app.whl").resolve()
        assert skipped == []

    def test_broken_link_is_skipped(self, workspace: Path, output: Path) -> None:
        (workspace / "dist" / "gone").symlink_to("does-not-exist")
        found, skipped = collect_with_skips(workspace, output, ["dist/gone"])
        assert found == []
        assert [item.reason for item in skipped] == [SkipReason.BROKEN_LINK]

    def test_link_in_output_pointing_outside_it_is_skipped(
        self, workspace: Path, output: Path
    ) -> None:
        make_tree(output, {"real.bin": b"real"})
        (output / "passwd").symlink_to(PASSWD)
        (output / "workspace-readme").symlink_to(workspace / "README.md")
        skipped: list[SkippedFile] = []
        found = collect(workspace, output, None, on_skip=skipped.append)
        assert relatives(found) == ["real.bin"]
        assert sorted(item.path.name for item in skipped) == ["passwd", "workspace-readme"]
        assert {item.reason for item in skipped} == {SkipReason.LINK_OUTSIDE_ROOT}

    def test_fifo_is_skipped_not_read(self, workspace: Path, output: Path) -> None:
        os.mkfifo(workspace / "dist" / "pipe")
        found, skipped = collect_with_skips(workspace, output, ["dist/*"])
        assert "dist/pipe" not in relatives(found)
        assert [item.reason for item in skipped] == [SkipReason.NOT_A_REGULAR_FILE]

    def test_file_name_that_is_not_utf8_is_skipped(self, workspace: Path, output: Path) -> None:
        (workspace / "dist" / os.fsdecode(b"bad\xff.bin")).write_bytes(b"x")
        found, skipped = collect_with_skips(workspace, output, ["dist/*.bin"])
        assert found == []
        assert [item.reason for item in skipped] == [SkipReason.UNDECODABLE_NAME]

    def test_skips_are_logged_as_warnings_by_default(
        self, workspace: Path, output: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (workspace / "dist" / "passwd").symlink_to(PASSWD)
        with caplog.at_level(logging.WARNING, logger="conveyor.agent.artifacts"):
            collect(workspace, output, ArtifactPlan(paths=["dist/**"]))
        assert "/etc/passwd" in caplog.text

    def test_different_files_under_one_relative_path_conflict(
        self, workspace: Path, output: Path
    ) -> None:
        make_tree(output, {"README.md": b"another readme"})
        with pytest.raises(ArtifactNameConflictError, match=re.escape("README.md")) as raised:
            collect(workspace, output, ArtifactPlan(paths=["*.md"]))
        # Callers that handle ArtifactPathError (a pipeline to fix) handle this too.
        assert isinstance(raised.value, ArtifactPathError)


class TestCollectedFile:
    @pytest.mark.parametrize(
        "relative", ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a", "a/", "a/./b"]
    )
    def test_relative_path_that_is_not_normalised_inside_its_root_is_refused(
        self, relative: str
    ) -> None:
        with pytest.raises(ArtifactPathError, match="normalised relative path"):
            CollectedFile(source=Path("/tmp/x"), relative=relative)


# --- package ---------------------------------------------------------------------------

FILES = {
    "bin/app": b"\x7fELF" + bytes(range(256)) * 40,
    "docs/read me.txt": b"hello\n",
    "empty.dat": b"",
    "z/deep/er/last.json": b'{"ok": true}',
}


@pytest.fixture
def collected(tmp_path: Path) -> list[CollectedFile]:
    root = tmp_path / "sources"
    make_tree(root, FILES)
    return [CollectedFile(source=root / relative, relative=relative) for relative in FILES]


def archive_members(
    archive: Path, archive_format: ArchiveFormat, tmp_path: Path
) -> dict[str, bytes]:
    """Relative path -> bytes of every file in the archive, read back by its own library."""
    if archive_format == ArchiveFormat.ZIP:
        with zipfile.ZipFile(archive) as zip_file:
            return {name: zip_file.read(name) for name in zip_file.namelist()}
    if archive_format == ArchiveFormat.TAR_GZ:
        with tarfile.open(archive, "r:gz") as tar:
            members = {}
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
            return members
    unpacked = tmp_path / "unpacked-7z"
    with py7zr.SevenZipFile(archive) as seven_zip:
        names = [info.filename for info in seven_zip.list() if not info.is_directory]
        seven_zip.extractall(path=unpacked)  # noqa: S202 (the archive the test just made)
    return {name: (unpacked / name).read_bytes() for name in names}


def seven_zip_listing(archive: Path) -> list[str]:
    """Paths of the files in a 7z archive as the 7z program lists them."""
    done = subprocess.run(
        [require_seven_zip(), "l", "-slt", str(archive)], capture_output=True, text=True, check=True
    )
    entries = done.stdout.split("----------\n", 1)[1].split("\n\n")
    paths = []
    for entry in entries:
        fields = dict(line.split(" = ", 1) for line in entry.splitlines() if " = " in line)
        if "Path" in fields and not fields.get("Attributes", "").startswith("D"):
            paths.append(fields["Path"])
    return sorted(paths)


def seven_zip_hash(path: Path, name: str) -> str:
    done = subprocess.run(
        [require_seven_zip(), "h", f"-scrc{name}", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"for data:\s+([0-9A-Fa-f]+)", done.stdout)
    assert found is not None, done.stdout
    return found.group(1).lower()


ARCHIVES = [ArchiveFormat.SEVEN_Z, ArchiveFormat.ZIP, ArchiveFormat.TAR_GZ]


class TestPackage:
    @pytest.mark.parametrize("archive_format", ARCHIVES)
    def test_archive_holds_the_files_at_their_relative_paths(
        self, collected: list[CollectedFile], tmp_path: Path, archive_format: ArchiveFormat
    ) -> None:
        plan = ArtifactPlan(archive=archive_format, name="build")
        [artifact] = package(collected, plan, tmp_path / "dest")
        assert artifact.name == f"build.{archive_format.value}"
        assert artifact.path == tmp_path / "dest" / artifact.name
        assert archive_members(artifact.path, archive_format, tmp_path) == FILES
        assert sorted(os.listdir(tmp_path / "dest")) == [artifact.name]

    def test_7z_archive_lists_the_relative_paths_in_the_7z_program(
        self, collected: list[CollectedFile], tmp_path: Path
    ) -> None:
        [artifact] = package(collected, ArtifactPlan(archive=ArchiveFormat.SEVEN_Z), tmp_path)
        assert seven_zip_listing(artifact.path) == sorted(FILES)

    @pytest.mark.parametrize("archive_format", ARCHIVES)
    @pytest.mark.parametrize(
        ("algorithm", "seven_zip_name"),
        [(HashAlgorithm.CRC64, "CRC64"), (HashAlgorithm.BLAKE2, "BLAKE2sp")],
    )
    def test_archive_hashes_equal_an_independent_computation(
        self,
        collected: list[CollectedFile],
        tmp_path: Path,
        archive_format: ArchiveFormat,
        algorithm: HashAlgorithm,
        seven_zip_name: str,
    ) -> None:
        plan = ArtifactPlan(archive=archive_format, hash=algorithm)
        [artifact] = package(collected, plan, tmp_path / "dest")
        content = artifact.path.read_bytes()
        assert artifact.size == len(content)
        assert artifact.sha256 == hashlib.sha256(content).hexdigest()
        assert artifact.hash_algorithm == algorithm
        assert artifact.hash == seven_zip_hash(artifact.path, seven_zip_name)

    def test_tar_members_carry_no_owner_of_the_agent(
        self, collected: list[CollectedFile], tmp_path: Path
    ) -> None:
        [artifact] = package(collected, ArtifactPlan(archive=ArchiveFormat.TAR_GZ), tmp_path)
        with tarfile.open(artifact.path) as tar:
            owners = {(m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()}
        assert owners == {(0, 0, "", "")}

    def test_none_copies_each_file_as_its_own_artifact(
        self, collected: list[CollectedFile], tmp_path: Path
    ) -> None:
        dest = tmp_path / "dest"
        plan = ArtifactPlan(archive=ArchiveFormat.NONE, hash=HashAlgorithm.SHA1)
        artifacts = package(collected, plan, dest)
        assert [artifact.name for artifact in artifacts] == sorted(FILES)
        for artifact in artifacts:
            content = FILES[artifact.name]
            assert artifact.path == dest / artifact.name
            assert artifact.path.read_bytes() == content
            assert artifact.size == len(content)
            assert artifact.sha256 == hashlib.sha256(content).hexdigest()
            assert artifact.hash == hashlib.sha1(content, usedforsecurity=False).hexdigest()

    def test_hash_none_gives_no_hash_but_still_a_sha256(
        self, collected: list[CollectedFile], tmp_path: Path
    ) -> None:
        plan = ArtifactPlan(archive=ArchiveFormat.ZIP, hash=HashAlgorithm.NONE)
        [artifact] = package(collected, plan, tmp_path)
        assert artifact == Artifact(
            path=artifact.path,
            name="artifacts.zip",
            size=artifact.path.stat().st_size,
            sha256=hashlib.sha256(artifact.path.read_bytes()).hexdigest(),
            hash_algorithm=HashAlgorithm.NONE,
            hash=None,
        )

    @pytest.mark.parametrize("archive_format", [*ARCHIVES, ArchiveFormat.NONE])
    def test_no_files_give_no_artifact_and_no_empty_archive(
        self, tmp_path: Path, archive_format: ArchiveFormat
    ) -> None:
        dest = tmp_path / "dest"
        assert package([], ArtifactPlan(archive=archive_format), dest) == []
        assert not dest.exists() or list(dest.iterdir()) == []

    @pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".", "", "x\\y"])
    def test_archive_name_that_is_not_a_plain_file_name_is_refused(
        self, collected: list[CollectedFile], tmp_path: Path, name: str
    ) -> None:
        plan = ArtifactPlan(archive=ArchiveFormat.ZIP, name=name)
        with pytest.raises(ArtifactPathError, match=re.escape("artifacts.name")):
            package(collected, plan, tmp_path / "dest" / "inner")
        assert list(tmp_path.glob("**/*.zip")) == []


class TestCollectThenPackage:
    @pytest.mark.parametrize("archive_format", [*ARCHIVES, ArchiveFormat.NONE])
    def test_link_to_etc_passwd_never_reaches_an_artifact(
        self, workspace: Path, output: Path, tmp_path: Path, archive_format: ArchiveFormat
    ) -> None:
        (workspace / "dist" / "passwd").symlink_to(PASSWD)
        (workspace / "etc").symlink_to("/etc", target_is_directory=True)
        (output / "shadow-copy").symlink_to(PASSWD)
        plan = ArtifactPlan(paths=["**"], archive=archive_format)
        files = collect(workspace, output, plan, on_skip=lambda skipped: None)
        artifacts = package(files, plan, tmp_path / "dest")
        secret = PASSWD.read_bytes()
        if archive_format == ArchiveFormat.NONE:
            contents = {artifact.name: artifact.path.read_bytes() for artifact in artifacts}
        else:
            [artifact] = artifacts
            contents = archive_members(artifact.path, archive_format, tmp_path)
        assert "README.md" in contents
        assert not any(name.endswith(("passwd", "shadow-copy")) for name in contents)
        assert not any(name.startswith("etc/") for name in contents)
        assert secret not in contents.values()
        for name in contents:
            assert not name.startswith("/")
            assert ".." not in name.split("/")
