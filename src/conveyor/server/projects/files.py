"""What a deleted project leaves on disk, and its removal once the deletion commits.

The database cascades a project's rows away; its files are not rows:

    <data_dir>/logs/<run id>/            the step logs of each of its runs
    <artifacts root>/<project name>/     its artifacts
    <data_dir>/uploads/<id>.part|.json   the uploads of its jobs, finished or not
    <repos root>/<mirror of its URL>     the bare git mirror, unless another project
                                         builds the same repository (mirrors are keyed
                                         by URL, so they are shared)
    <data_dir>/agent/cache/mirrors/...   the embedded agent's mirror of it, likewise

`collect` names them in the deleting transaction, while the rows still say which runs
and jobs were the project's; `remove_after_commit` removes them only once that
transaction has committed, so a deletion whose commit fails loses nothing. Removing
never fails the caller: a file that is already gone is fine, and one that cannot be
removed is logged with the reason and left for the operator.

The roots are where the settings put them. Below a root no symbolic link is followed:
a link standing where a project's directory should be is removed as a link, and links
inside the removed trees are unlinked, never their targets (`shutil.rmtree` works on
file descriptors on Linux, so a link swapped in meanwhile is not followed either).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from conveyor.agent.checkout import MirrorCache
from conveyor.server.artifacts.service import UPLOADS_DIRECTORY
from conveyor.server.config import Settings

# The module, not its `open_logs`: logs.service imports (through secrets and projects)
# this module, so its names are looked up when used, not when imported.
from conveyor.server.logs import service as logs_service
from conveyor.server.logs.paths import step_log_path
from conveyor.server.models.project import Project
from conveyor.server.projects.repository import ProjectRepository

logger = logging.getLogger("conveyor.server.projects")

MIRROR_LOCK_WAIT_SECONDS = 10.0
"""How long a removal waits for a fetch into the mirror to finish before leaving it."""
_UPLOAD_SUFFIXES = (".part", ".json", ".json.tmp")
_PENDING = "conveyor.pending_project_files"


@dataclass(frozen=True)
class ProjectFiles:
    """Where a project's files are, named while its rows still existed."""

    project: str
    logs_root: Path
    run_ids: tuple[int, ...]
    step_logs: tuple[Path, ...]
    """Closed before their directories go: this process may hold them open."""
    artifacts_root: Path
    uploads_root: Path
    job_ids: frozenset[int]
    repos_root: Path
    agent_mirrors_root: Path
    """The embedded agent's mirrors: the same names, in its own cache."""
    mirror_name: str | None
    """The directory of the project's mirror in `repos_root` and `agent_mirrors_root`;
    None when another project uses the same repository and the mirrors must stay."""


@dataclass
class Removal:
    """What `remove` did: the paths it removed and the ones it could not (with why)."""

    removed: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def collect(session: Session, settings: Settings, project: Project) -> ProjectFiles:
    """The files of `project`; call it in the transaction that deletes the project."""
    projects = ProjectRepository(session)
    mirrors = MirrorCache(settings.repos_path)
    mirror = mirrors.mirror_path(project.git_url)
    shared = any(
        mirrors.mirror_path(url) == mirror for url in projects.git_urls_of_others(project.id)
    )
    return ProjectFiles(
        project=project.name,
        # `<logs root>/<run id>/<job id>/<step>.log`: each run's logs are one directory.
        logs_root=step_log_path(settings.data_dir, 0, 0, 0).parents[2],
        run_ids=tuple(projects.run_ids(project.id)),
        step_logs=tuple(
            step_log_path(settings.data_dir, run_id, job_id, index)
            for run_id, job_id, index in projects.step_keys(project.id)
        ),
        artifacts_root=settings.artifacts_path,
        uploads_root=settings.data_dir / UPLOADS_DIRECTORY,
        job_ids=frozenset(projects.job_ids(project.id)),
        repos_root=settings.repos_path,
        agent_mirrors_root=settings.embedded_agent_mirrors,
        mirror_name=None if shared else mirror.name,
    )


def remove_after_commit(session: Session, files: ProjectFiles) -> None:
    """Remove `files` once `session`'s transaction commits; forget them if it rolls back."""
    session.info.setdefault(_PENDING, []).append(files)
    if not sa_event.contains(session, "after_commit", _remove_pending):
        sa_event.listen(session, "after_commit", _remove_pending)
        sa_event.listen(session, "after_soft_rollback", _forget_pending)


def _remove_pending(session: Session) -> None:
    for files in session.info.pop(_PENDING, []):
        try:
            remove(files)
        except Exception:
            # The deletion has committed: an error here must not turn it into a failed
            # request, so it is logged instead.
            logger.exception("removing the files of deleted project %r failed", files.project)


def _forget_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.nested:
        return  # a savepoint rolled back; the deletion around it may still commit
    session.info.pop(_PENDING, None)


def remove(files: ProjectFiles) -> Removal:
    """Remove the files of a deleted project. Never raises for a file: what cannot be
    removed is logged and listed in `Removal.problems`."""
    removal = Removal()
    for path in files.step_logs:
        logs_service.open_logs.close(path)
    for run_id in files.run_ids:
        _remove_entry(files.logs_root, str(run_id), removal)
    _remove_entry(files.artifacts_root, files.project, removal)
    _remove_uploads(files, removal)
    if files.mirror_name is not None:
        _remove_mirror(files.repos_root, files.mirror_name, removal)
        # The embedded agent's, under the lock its checkouts take (remote agents' caches
        # are theirs to keep).
        _remove_mirror(files.agent_mirrors_root, files.mirror_name, removal)
    for problem in removal.problems:
        logger.warning("deleted project %r: %s", files.project, problem)
    logger.info(
        "deleted project %r: removed %d path(s) from disk, %d left (see above)",
        files.project,
        len(removal.removed),
        len(removal.problems),
    )
    return removal


def _remove_entry(root: Path, name: str, removal: Removal) -> None:
    """Remove `root/name` (a file, a directory tree, or a link, as a link)."""
    if not name or name in (".", "..") or os.sep in name:
        removal.problems.append(f"{name!r} is not a name inside {root}; it was left alone")
        return
    target = root / name
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        removal.problems.append(f"could not look at {target}: {error.strerror or error}")
        return
    if not stat.S_ISDIR(mode):  # a file, or a link (never followed)
        _unlink(target, removal)
        return

    def note(
        _function: object, path: str, exc_info: tuple[type, BaseException, TracebackType]
    ) -> None:
        error = exc_info[1]
        if not isinstance(error, FileNotFoundError):
            detail = error.strerror if isinstance(error, OSError) else None
            removal.problems.append(f"could not remove {path}: {detail or error}")

    shutil.rmtree(target, onerror=note)
    if not os.path.lexists(target):
        removal.removed.append(target)


def _unlink(path: Path, removal: Removal) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as error:
        removal.problems.append(f"could not remove {path}: {error.strerror or error}")
        return
    removal.removed.append(path)


def _remove_uploads(files: ProjectFiles, removal: Removal) -> None:
    if not files.job_ids:
        return
    try:
        metas = [entry for entry in os.scandir(files.uploads_root) if entry.name.endswith(".json")]
    except FileNotFoundError:
        return
    except OSError as error:
        removal.problems.append(f"could not list {files.uploads_root}: {error.strerror or error}")
        return
    for entry in metas:
        if not entry.is_file(follow_symlinks=False):
            continue
        try:
            job_id = json.loads(Path(entry.path).read_text("utf-8")).get("job_id")
        except FileNotFoundError:
            continue  # completed or swept meanwhile
        except (OSError, ValueError, AttributeError) as error:
            removal.problems.append(f"could not read the upload {entry.path}: {error}")
            continue
        if job_id in files.job_ids:
            upload_id = entry.name.removesuffix(".json")
            for suffix in _UPLOAD_SUFFIXES:
                _remove_entry(files.uploads_root, upload_id + suffix, removal)


def _remove_mirror(root: Path, name: str, removal: Removal) -> None:
    mirror = root / name
    if not os.path.lexists(mirror):
        return
    with _mirror_lock(mirror) as locked:
        if not locked:
            removal.problems.append(
                f"the mirror {mirror} was still being fetched after "
                f"{MIRROR_LOCK_WAIT_SECONDS:.0f}s; remove it by hand when no fetch runs"
            )
            return
        _remove_entry(root, name, removal)
        # Clones that a dead process left half made (see MirrorCache._clone).
        for leftover in root.glob(f".{name}.cloning-*"):
            _remove_entry(root, leftover.name, removal)


@contextlib.contextmanager
def _mirror_lock(mirror: Path) -> Iterator[bool]:
    """Hold the lock `MirrorCache` takes around every change to a mirror (the file
    `<mirror>.lock` beside it), so a fetch in progress ends before the mirror goes.
    Yields False when it stays taken for `MIRROR_LOCK_WAIT_SECONDS`.

    The lock file itself stays: removing it would let a process that is waiting on the
    old file and one that opens a new file both believe they hold the lock."""
    with mirror.with_name(mirror.name + ".lock").open("a") as handle:
        deadline = time.monotonic() + MIRROR_LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
