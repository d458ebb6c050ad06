"""Collecting a job's artifacts from its workspace and packaging them for upload.

Two steps, run by the agent after the last step of a job:

1. `collect` finds the files: those the plan's globs match in the workspace, and every
   file in the output directory (CI_OUTPUT_DIR). Each gets a normalised POSIX path
   relative to its root; that path is all an archive or the server ever sees.
2. `package` turns them into artifacts: one archive (`7z`, `zip`, `tar.gz`) named after
   the plan, or, for `none`, each file copied on its own. Every artifact carries its
   size, its sha256 and the hash the plan asked for.

Rules that keep a build from reaching outside its workspace:

- A glob with a `..` component or an absolute path is refused (`ArtifactPathError`),
  before anything is looked at; so is an archive name that is not a plain file name.
- Symbolic links are never followed out of their root. A link to a regular file
  inside the same root is collected with that file's content; any other link (one
  pointing outside, such as `leak -> /etc/passwd`, a broken one, one to a directory)
  is skipped and reported through `on_skip`, and the build goes on: a stray link in
  `node_modules` should not fail a release, and a link to a secret must not ship.
  Directories reached through a link are never walked, so nothing below them is seen.
- Only regular files are collected; fifos, sockets and devices are skipped and reported
  (reading a fifo would hang the agent), and so are names that are not valid UTF-8
  (archives and the API carry text paths).

Glob syntax, matched against paths relative to the workspace: `*` is any run of
characters within one path component, `?` one such character, `[abc]`/`[a-z]`/`[!abc]`
a character class, and a `**` component any number of components (none included). A
pattern that matches a directory collects every file below it. Dot files are not
special (`dist/*` collects `dist/.env`): CI users ask for a directory's content and
expect all of it.

Nothing collected means nothing packaged: `package` returns no artifact, and writes no
empty archive (an empty archive is a download that only confuses).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath

from conveyor.agent.hashing import file_digests
from conveyor.pipeline.plan import ArchiveFormat, ArtifactPlan, HashAlgorithm

logger = logging.getLogger(__name__)


class ArtifactError(Exception):
    """Artifacts could not be collected or packaged as the plan asks."""


class ArtifactPathError(ArtifactError):
    """A path (a glob, an archive name, a relative path) would reach outside its root, or
    cannot be stored where it asks to be; the user's pipeline has to change."""


class ArtifactNameConflictError(ArtifactPathError):
    """Two different files would be stored under the same relative path."""


class SkipReason(StrEnum):
    LINK_OUTSIDE_ROOT = "link_outside_root"
    BROKEN_LINK = "broken_link"
    LINK_TO_DIRECTORY = "link_to_directory"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    UNDECODABLE_NAME = "undecodable_name"


@dataclass(frozen=True)
class SkippedFile:
    """A path the globs (or the output directory) offered that was left out, and why."""

    path: Path
    reason: SkipReason
    detail: str

    def __str__(self) -> str:
        return f"artifact skipped: {self.path}: {self.detail}"


def _check_relative(relative: str) -> None:
    parts = relative.split("/")
    if (
        not relative
        or relative.startswith("/")
        or "\0" in relative
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ArtifactPathError(
            f"artifact path {relative!r} is not a normalised relative path inside its root "
            "(no leading '/', no '.', '..' or empty components); fix the caller that made it"
        )


@dataclass(frozen=True)
class CollectedFile:
    """One file to keep: where it is read from, and its path inside the artifact."""

    source: Path
    relative: str
    """POSIX, normalised, inside its root (checked on creation)."""

    def __post_init__(self) -> None:
        _check_relative(self.relative)


@dataclass(frozen=True)
class Artifact:
    """One file produced for upload: an archive, or (archive `none`) one copied file."""

    path: Path
    name: str
    """The archive's file name, or the copied file's relative path."""
    size: int
    sha256: str
    hash_algorithm: HashAlgorithm
    hash: str | None
    """The plan's hash as `7z h` prints it (lowercase); None for `none`."""


# --- globs ---------------------------------------------------------------------------


def _normalise_pattern(pattern: str) -> str:
    if not pattern.strip():
        raise ArtifactPathError(
            "artifacts.paths has an empty pattern; remove it or write a glob such as 'dist/**'"
        )
    if (
        pattern.startswith("/")
        or PurePosixPath(pattern).is_absolute()
        or PureWindowsPath(pattern).drive
    ):
        raise ArtifactPathError(
            f"artifact pattern {pattern!r} is an absolute path; artifacts come from the "
            "workspace only: write it relative to the workspace (e.g. 'dist/**')"
        )
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArtifactPathError(
            f"artifact pattern {pattern!r} climbs out of the workspace with '..'; "
            "artifacts come from the workspace only: copy the files into it (or into "
            "CI_OUTPUT_DIR) in a step and collect them from there"
        )
    # "." (or "./") names the workspace itself: everything in it.
    return "/".join(parts) if parts else "**"


def _translate_component(component: str) -> str:
    """Regex of one glob component: nothing in it ever matches a '/'."""
    out: list[str] = []
    index = 0
    while index < len(component):
        char = component[index]
        index += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            close = index
            if close < len(component) and component[close] in "!^":
                close += 1
            if close < len(component) and component[close] == "]":
                close += 1
            close = component.find("]", close)
            if close == -1:
                out.append(re.escape(char))
                continue
            members = component[index:close]
            index = close + 1
            negate = members[:1] in ("!", "^")
            if negate:
                members = members[1:]
            body = members.replace("\\", "\\\\").replace("[", "\\[")
            out.append(f"[^/{body}]" if negate else f"[{body}]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def _translate(pattern: str) -> str:
    parts = pattern.split("/")
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_translate_component(part) + ("" if last else "/"))
    return "".join(out)


def _compile_globs(patterns: list[str]) -> re.Pattern[str] | None:
    """One regex matching a relative path that a pattern matches, or that lies below a
    directory a pattern matches; None when there are no patterns."""
    if not patterns:
        return None
    alternatives = "|".join(f"(?:{_translate(_normalise_pattern(p))})" for p in patterns)
    return re.compile(f"(?:{alternatives})(?:/.*)?", re.DOTALL)


# --- walking -------------------------------------------------------------------------


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry below `root` that is not a real directory, with its relative path.
    Linked directories come out as entries (to be skipped), never walked into."""
    pending: list[tuple[str, str]] = [(str(root), "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, relative + "/"))
                else:
                    yield relative, entry


def _readable_source(root: Path, relative: str, entry: os.DirEntry[str]) -> Path | SkippedFile:
    """The regular file to read for `entry`, or why it must be left out."""
    path = Path(entry.path)
    try:
        relative.encode()
    except UnicodeEncodeError:
        return SkippedFile(
            path,
            SkipReason.UNDECODABLE_NAME,
            "file name is not valid UTF-8; rename it to collect it",
        )
    if not entry.is_symlink():
        if entry.is_file(follow_symlinks=False):
            return path
        return SkippedFile(
            path, SkipReason.NOT_A_REGULAR_FILE, "not a regular file (fifo, socket or device)"
        )
    target = Path(os.path.realpath(entry.path))
    if not target.is_relative_to(root):
        return SkippedFile(
            path,
            SkipReason.LINK_OUTSIDE_ROOT,
            f"symbolic link to {target}, outside {root}; links are never followed out of "
            "their root: copy the file in if it belongs in the artifact",
        )
    try:
        mode = target.stat().st_mode
    except OSError:
        return SkippedFile(
            path, SkipReason.BROKEN_LINK, f"symbolic link to {target}, which does not exist"
        )
    if stat.S_ISDIR(mode):
        return SkippedFile(
            path,
            SkipReason.LINK_TO_DIRECTORY,
            f"symbolic link to the directory {target}; linked directories are not walked "
            "(match the directory itself instead)",
        )
    if not stat.S_ISREG(mode):
        return SkippedFile(
            path, SkipReason.NOT_A_REGULAR_FILE, f"symbolic link to {target}, not a regular file"
        )
    return target


def _report_skip(skipped: SkippedFile) -> None:
    logger.warning("%s", skipped)


def collect(
    workspace: Path,
    output: Path,
    plan: ArtifactPlan | None,
    *,
    on_skip: Callable[[SkippedFile], None] = _report_skip,
) -> list[CollectedFile]:
    """The files to keep: matches of `plan.paths` in `workspace` and every file under
    `output`, sorted by relative path, each once.

    Raises `ArtifactPathError` for a pattern that is absolute or has a `..` component,
    and `ArtifactNameConflictError` when the workspace and the output directory both
    hold a different file under one relative path. Files left out (see the module
    docstring) go to `on_skip`, which logs a warning unless told otherwise.
    """
    globs = _compile_globs(plan.paths if plan is not None else [])
    chosen: dict[str, CollectedFile] = {}

    def gather(root: Path, wanted: Callable[[str], bool]) -> None:
        for relative, entry in _walk(root):
            if not wanted(relative):
                continue
            source = _readable_source(root, relative, entry)
            if isinstance(source, SkippedFile):
                on_skip(source)
                continue
            found = CollectedFile(source=source, relative=relative)
            earlier = chosen.setdefault(relative, found)
            if earlier.source != found.source:
                raise ArtifactNameConflictError(
                    f"artifact path {relative!r} is both {earlier.source} and {found.source}; "
                    "rename one, or collect it only from CI_OUTPUT_DIR"
                )

    if globs is not None:
        gather(workspace.resolve(), lambda relative: globs.fullmatch(relative) is not None)
    if output.is_dir():
        gather(output.resolve(), lambda relative: True)
    return [chosen[relative] for relative in sorted(chosen)]


# --- packaging -----------------------------------------------------------------------

_EXTENSIONS = {
    ArchiveFormat.SEVEN_Z: "7z",
    ArchiveFormat.ZIP: "zip",
    ArchiveFormat.TAR_GZ: "tar.gz",
}


def _archive_file_name(plan: ArtifactPlan) -> str:
    name = plan.name
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ArtifactPathError(
            f"artifact archive name {name!r} is not a plain file name; "
            "set artifacts.name to a name without '/', such as 'build-output'"
        )
    return f"{name}.{_EXTENSIONS[plan.archive]}"


def _without_owner(member: tarfile.TarInfo) -> tarfile.TarInfo:
    # The agent's user and group mean nothing where the archive is unpacked.
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _write_archive(files: list[CollectedFile], archive: ArchiveFormat, target: Path) -> None:
    match archive:
        case ArchiveFormat.SEVEN_Z:
            # Imported on use: py7zr and its codecs cost about 3 MiB in every agent, and
            # most pipelines ask for no 7z archive.
            import py7zr

            with py7zr.SevenZipFile(target, "w") as seven_zip:
                for file in files:
                    seven_zip.write(file.source, arcname=file.relative)
        case ArchiveFormat.ZIP:
            # strict_timestamps=False: a file dated before 1980 (SOURCE_DATE_EPOCH=0
            # builds) is stored as 1980 instead of failing the job.
            with zipfile.ZipFile(
                target, "w", compression=zipfile.ZIP_DEFLATED, strict_timestamps=False
            ) as zip_file:
                for file in files:
                    zip_file.write(file.source, arcname=file.relative)
        case ArchiveFormat.TAR_GZ:
            with tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT) as tar:
                for file in files:
                    tar.add(
                        file.source, arcname=file.relative, recursive=False, filter=_without_owner
                    )
        case ArchiveFormat.NONE:
            raise ValueError("ArchiveFormat.NONE writes no archive; copy the files instead")


def _describe(path: Path, name: str, algorithm: HashAlgorithm) -> Artifact:
    digests = file_digests(path, [HashAlgorithm.SHA256, algorithm])
    sha256 = digests[HashAlgorithm.SHA256]
    assert sha256 is not None  # sha256 always has a digest
    return Artifact(
        path=path,
        name=name,
        size=path.stat().st_size,
        sha256=sha256,
        hash_algorithm=algorithm,
        hash=digests[algorithm],
    )


def package(files: list[CollectedFile], plan: ArtifactPlan, dest: Path) -> list[Artifact]:
    """Package `files` into `dest` as the plan says; one artifact per archive, or per file
    for archive `none` (copied to `dest/<relative>`). No files, no artifact.

    Raises `ArtifactPathError` for an archive name that is not a plain file name (or a
    relative path that is not normalised, should a caller build one by hand).
    """
    if not files:
        return []
    for file in files:
        _check_relative(file.relative)
    dest.mkdir(parents=True, exist_ok=True)
    if plan.archive == ArchiveFormat.NONE:
        artifacts = []
        for file in sorted(files, key=lambda file: file.relative):
            target = dest / file.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file.source, target)
            artifacts.append(_describe(target, file.relative, plan.hash))
        return artifacts
    name = _archive_file_name(plan)
    target = dest / name
    # Written aside and renamed, so a half-written archive is never taken for a whole one.
    partial = dest / f".{name}.partial"
    try:
        _write_archive(sorted(files, key=lambda file: file.relative), plan.archive, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return [_describe(target, name, plan.hash)]
