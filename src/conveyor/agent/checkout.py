"""Getting a job's code: bare mirrors per repository URL and fresh workspaces at exact commits.

Two ways in:

- `MirrorCache` keeps one bare mirror per repository URL (``git clone --mirror`` the first
  time, ``git fetch --prune`` after that, so only what changed travels) and makes each
  workspace a ``git clone --shared`` of the mirror, detached at exactly the commit asked for.
  The server uses it to resolve refs and read the pipeline file; agents use it to check out.
- `copy_working_tree` makes a workspace from a developer's checkout for ``conveyor exec``:
  the committed HEAD plus everything not committed yet.

Everything goes through the ``git`` command line. Every git command runs without a
terminal or askpass prompt and under a timeout, so a URL that needs credentials or a host
that does not answer fails with a message instead of hanging. Credentials in URLs
(``https://user:token@host/x``) are cut out of every message and log line, and are never
written into a mirror's config.

Every failure is a `CheckoutError` whose message says what went wrong, for which URL or
directory, and what to do about it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

NETWORK_TIMEOUT_SECONDS = 600.0
"""Default limit for a clone, fetch or ls-remote; big repositories over slow links need time."""
LOCAL_TIMEOUT_SECONDS = 120.0
"""Limit for git commands that only read or write local files."""

# Variables that would point our git commands at another repository (they are set when
# `conveyor exec` runs from inside a git hook) or that would pop up a password dialog.
_INHERITED_GIT_VARIABLES_TO_DROP = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
    }
)

# Config for every git command: no askpass program from the user's config either, and a
# transfer that stalls below 1 KB/s for a minute is given up instead of waiting for the
# overall timeout.
_NON_INTERACTIVE_CONFIG = (
    "-c",
    "core.askPass=",
    "-c",
    "http.lowSpeedLimit=1000",
    "-c",
    "http.lowSpeedTime=60",
)

_CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_ABBREVIATED_SHA = re.compile(r"^[0-9a-f]{4,63}$")
_MIRROR_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

MAINTENANCE_INTERVAL_SECONDS = 60.0
"""A mirror is offered ``git maintenance run --auto`` after a fetch at most this often
(per process): git's own thresholds decide whether there is work, which a fetch would
otherwise ask after each fetch, in a process of its own on the trigger's path."""

_maintained: dict[Path, float] = {}
"""Mirror -> when this process last ran maintenance in it (caches are made per use)."""

_REFS_LISTING = "conveyor-refs"
"""A mirror's branches and tags as workspaces need them (``for-each-ref`` output), saved
in the mirror by the first workspace after a change and removed before each fetch."""

_BRANCH_PREFIX = "refs/heads/"
_TAG_PREFIX = "refs/tags/"
_MAX_NAMES_IN_MESSAGE = 20


class CheckoutError(Exception):
    """A clone, fetch, ref or workspace problem; the message says what, where and how to fix it."""


@dataclass(frozen=True)
class CommitInfo:
    """The commit a workspace was made from, and the branch or tag it was asked for by."""

    sha: str
    branch: str | None
    tag: str | None
    message: str
    author: str
    """``Name <email>``"""
    author_name: str
    author_email: str
    committed_at: datetime


def redact_credentials(text: str) -> str:
    """`text` with the user and password of every ``scheme://user:password@`` URL replaced.

    The user part goes too: a token is often given as the user (``https://TOKEN@host/x``).
    """
    return _CREDENTIALS_IN_URL.sub(r"\g<scheme>***@", text)


def _without_credentials(url: str) -> str:
    """The URL without user and password: what a mirror is named after and remembers."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))


# --- running git ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _GitResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace").strip()


def _git_environment() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _INHERITED_GIT_VARIABLES_TO_DROP
    }
    env["GIT_TERMINAL_PROMPT"] = "0"
    # Reading a developer's checkout must not even refresh its index.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    # Messages in English, so that the hints below can recognise them.
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    if "GIT_SSH" not in env and "GIT_SSH_COMMAND" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


def _run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = LOCAL_TIMEOUT_SECONDS,
    stdin: bytes | None = None,
    doing: str,
) -> _GitResult:
    """Run ``git args`` without prompts; a timeout or a missing git raises `CheckoutError`.

    `doing` completes "... while <doing>" in messages, e.g. "cloning file:///x".
    A non-zero exit is returned, not raised: callers decide what it means.
    """
    command = ["git", *_NON_INTERACTIVE_CONFIG, *args]
    logger.debug("git %s (in %s)", redact_credentials(" ".join(args)), cwd or os.getcwd())
    try:
        # A session of its own, so that a timeout kills git's helpers too (remote-https,
        # ssh), which would otherwise keep the pipes open and block us.
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=_git_environment(),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as error:
        raise CheckoutError(
            f"git is not installed on this host (needed for {doing}): install git "
            "(e.g. `apt-get install git`) and make sure it is on PATH"
        ) from error
    with process:
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise CheckoutError(
                f"git did not finish {doing} within {timeout:g} seconds and was stopped: "
                "check that the host is reachable from this machine, or raise the timeout "
                "for very large repositories"
            ) from None
    return _GitResult(
        process.returncode, stdout, redact_credentials(stderr.decode("utf-8", "replace").strip())
    )


def _git_checked(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = LOCAL_TIMEOUT_SECONDS,
    stdin: bytes | None = None,
    doing: str,
) -> _GitResult:
    result = _run_git(args, cwd=cwd, timeout=timeout, stdin=stdin, doing=doing)
    if result.returncode != 0:
        raise CheckoutError(_failure_message(doing, result.stderr))
    return result


def _failure_message(doing: str, stderr: str) -> str:
    detail = stderr or "git gave no reason"
    return f"git failed while {doing}: {detail}{_hint_for(stderr)}"


def _hint_for(stderr: str) -> str:
    """What to do, for the git failures people meet most."""
    lowered = stderr.lower()
    if any(
        sign in lowered
        for sign in (
            "terminal prompts disabled",
            "authentication failed",
            "could not read username",
            "could not read password",
            "permission denied (publickey",
            "http basic: access denied",
            "the requested url returned error: 401",
            "the requested url returned error: 403",
        )
    ):
        return (
            " -- the repository needs credentials: put a token in the URL "
            "(https://user:TOKEN@host/...), or give this machine's user an SSH deploy key "
            "or a git credential helper"
        )
    if any(
        sign in lowered
        for sign in (
            "could not resolve host",
            "connection refused",
            "connection timed out",
            "network is unreachable",
            "failed to connect",
            "no route to host",
        )
    ):
        return " -- check the URL's host and port, and that it is reachable from this machine"
    if any(
        sign in lowered
        for sign in (
            "does not appear to be a git repository",
            "repository not found",
            "not found",
            "does not exist",
            "error: 404",
        )
    ):
        return " -- check that the URL is right and that the repository exists"
    return ""


def _check_ref(ref: str) -> None:
    _reject_option_like(ref, "ref")
    if not ref or any(character.isspace() for character in ref):
        raise CheckoutError(f"`{ref}` is not a ref: give a branch, tag, full ref or commit sha")


def _reject_option_like(value: str, what: str) -> None:
    # A URL or ref starting with "-" would be read by git as an option (e.g. --upload-pack=...).
    if value.startswith("-"):
        raise CheckoutError(
            f"{what} `{redact_credentials(value)}` starts with '-': give a real {what}"
        )


# --- commits -------------------------------------------------------------------------------


def _commit_info(repository: Path, sha: str, *, branch: str | None, tag: str | None) -> CommitInfo:
    result = _git_checked(
        ["show", "-s", "--no-show-signature", "--format=%H%x00%an%x00%ae%x00%cI%x00%B", sha],
        cwd=repository,
        doing=f"reading commit {sha} in {repository}",
    )
    full_sha, name, email, committed, message = result.stdout.decode(
        "utf-8", errors="replace"
    ).split("\x00", 4)
    return CommitInfo(
        sha=full_sha.strip(),
        branch=branch,
        tag=tag,
        message=message.rstrip("\n"),
        author=f"{name} <{email}>",
        author_name=name,
        author_email=email,
        committed_at=datetime.fromisoformat(committed),
    )


@dataclass(frozen=True)
class _Object:
    sha: str
    kind: str
    content: bytes


def _read_objects(repository: Path, names: Sequence[str], *, doing: str) -> list[_Object | None]:
    """The objects `names` name (any revision syntax ``git cat-file`` reads), in one git
    process; None for a name that names nothing."""
    batch = _git_checked(
        ["cat-file", "--batch"],
        cwd=repository,
        stdin="".join(f"{name}\n" for name in names).encode(),
        doing=doing,
    )
    found: list[_Object | None] = []
    rest = batch.stdout
    for _ in names:
        header, _, rest = rest.partition(b"\n")
        fields = header.split(b" ")
        if len(fields) != 3 or not fields[2].isdigit():
            found.append(None)  # "<name> missing" (or ambiguous)
            continue
        size = int(fields[2])
        found.append(_Object(fields[0].decode(), fields[1].decode(), rest[:size]))
        rest = rest[size + 1 :]
    return found


def _parse_commit(obj: _Object, *, branch: str | None, tag: str | None) -> CommitInfo:
    """A commit object read raw, as `_commit_info` reads it with ``git show``: the text
    in the commit's ``encoding`` (UTF-8 unless it names another), the committer's date
    in the committer's zone."""
    headers, _, message = obj.content.partition(b"\n\n")
    fields: dict[bytes, bytes] = {}
    for line in headers.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key and not line.startswith(b" "):  # " ..." continues a multi-line header
            fields.setdefault(key, value)
    encoding = fields.get(b"encoding", b"utf-8").decode("ascii", "replace")

    def text(raw: bytes) -> str:
        try:
            return raw.decode(encoding, errors="replace")
        except LookupError:
            return raw.decode("utf-8", errors="replace")

    name, email, _ = _split_identity(text(fields.get(b"author", b"")))
    _, _, when = _split_identity(text(fields.get(b"committer", b"")))
    return CommitInfo(
        sha=obj.sha,
        branch=branch,
        tag=tag,
        message=text(message).rstrip("\n"),
        author=f"{name} <{email}>",
        author_name=name,
        author_email=email,
        committed_at=when,
    )


def _split_identity(line: str) -> tuple[str, str, datetime]:
    """``Name <email> 1700000000 +0200`` -> name, email and the time in its zone."""
    name, _, rest = line.partition("<")
    email, _, stamp = rest.partition(">")
    seconds, _, zone = stamp.strip().partition(" ")
    try:
        sign = -1 if zone.startswith("-") else 1
        digits = zone.lstrip("+-")
        offset = timedelta(hours=int(digits[:-2] or 0), minutes=int(digits[-2:] or 0))
        moment = datetime.fromtimestamp(int(seconds), timezone(sign * offset))
    except ValueError:
        moment = datetime.fromtimestamp(0, UTC)
    return name.strip(), email.strip(), moment


def _prepare_destination(dest: Path) -> bool:
    """Check that `dest` can become a workspace; True when it does not exist yet."""
    if not dest.exists():
        return True
    if not dest.is_dir() or any(dest.iterdir()):
        raise CheckoutError(
            f"workspace {dest} already exists and is not an empty directory: "
            "remove it or give a fresh path"
        )
    return False


def _discard_workspace(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
    elif dest.is_dir():
        for child in dest.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# --- conveyor exec: a workspace from a developer's checkout ------------------------------


def copy_working_tree(repo_dir: Path, dest: Path) -> CommitInfo:
    """Make `dest` a fresh workspace equal to the working tree of the checkout at `repo_dir`.

    The workspace holds the committed HEAD plus uncommitted changes and untracked files
    that are not ignored; files deleted in the working tree are absent. Its ``.git`` is
    detached at repo_dir's HEAD (objects shared with repo_dir, which must stay in place
    while the workspace is used), with the index at HEAD, so ``git log`` and ``git diff``
    work in steps. `repo_dir` may be any directory inside the checkout; it is only read.
    Submodules are left empty, for the pipeline's ``prepare`` to initialise.
    """
    if not repo_dir.is_dir():
        raise CheckoutError(
            f"{repo_dir} is not a directory: run `conveyor exec` inside a git checkout"
        )
    toplevel_result = _run_git(
        ["rev-parse", "--show-toplevel"],
        cwd=repo_dir,
        doing=f"looking for the checkout at {repo_dir}",
    )
    if toplevel_result.returncode != 0 or not toplevel_result.text:
        raise CheckoutError(
            f"{repo_dir} is not inside a git checkout "
            f"({toplevel_result.stderr or 'no work tree'}): "
            "run it in a clone of the repository, or `git init` and commit first"
        )
    toplevel = Path(toplevel_result.text)
    head_result = _run_git(
        ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        cwd=toplevel,
        doing=f"reading HEAD of {toplevel}",
    )
    if head_result.returncode != 0:
        raise CheckoutError(
            f"the checkout at {toplevel} has no commit yet: commit once, then run again "
            "(the workspace is HEAD plus your uncommitted changes)"
        )
    head = head_result.text

    created = _prepare_destination(dest)
    try:
        _git_checked(
            ["clone", "--shared", "--no-checkout", "--quiet", "--", str(toplevel), str(dest)],
            doing=f"cloning {toplevel} into the workspace {dest}",
        )
        _git_checked(
            ["update-ref", "--no-deref", "HEAD", head],
            cwd=dest,
            doing=f"detaching the workspace {dest} at {head}",
        )
        _git_checked(["read-tree", head], cwd=dest, doing=f"setting the index of {dest}")
        _overlay_working_tree(toplevel, dest)
        # Fills the index's file stats, so the first `git status` in a step is fast; it
        # exits 1 when files differ from HEAD, which is expected here.
        _run_git(["update-index", "-q", "--refresh"], cwd=dest, doing=f"refreshing {dest}")
    except BaseException:
        _discard_workspace(dest, created)
        raise

    branch = _run_git(
        ["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=toplevel, doing="reading the branch"
    )
    tags = _run_git(
        ["tag", "--points-at", head, "--sort=-v:refname"], cwd=toplevel, doing="reading tags"
    )
    return _commit_info(
        toplevel,
        head,
        branch=branch.text if branch.returncode == 0 and branch.text else None,
        tag=tags.text.splitlines()[0] if tags.returncode == 0 and tags.text else None,
    )


def _overlay_working_tree(toplevel: Path, dest: Path) -> None:
    """Copy every tracked or untracked-but-not-ignored file of `toplevel` that exists.

    Untracked files under `.conveyor/` are left out: that is where `conveyor exec` puts
    its own artifacts, which are no part of the code being built."""
    listing = _git_checked(
        ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--exclude=/.conveyor/"],
        cwd=toplevel,
        doing=f"listing the files of {toplevel}",
    )
    relative_paths = sorted({os.fsdecode(raw) for raw in listing.stdout.split(b"\0") if raw})
    symlinked_dirs: dict[Path, bool] = {}
    for relative in relative_paths:
        relative_path = Path(relative.rstrip("/"))
        if _crosses_symlink(toplevel, relative_path.parent, symlinked_dirs):
            # Listed under a directory that is now a symlink: reading it would copy files
            # from outside the checkout.
            continue
        source = toplevel / relative_path
        try:
            source_stat = os.lstat(source)
        except FileNotFoundError:
            continue  # tracked, deleted in the working tree
        target = dest / relative_path
        if stat.S_ISDIR(source_stat.st_mode):
            # A submodule or a nested repository: left empty, as a fresh clone leaves it.
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISLNK(source_stat.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(source_stat.st_mode):
            shutil.copy2(source, target, follow_symlinks=False)
        # Sockets, fifos and devices are not files a build can use: skipped.


def _crosses_symlink(toplevel: Path, relative_dir: Path, known: dict[Path, bool]) -> bool:
    if relative_dir in (Path(), Path(".")):
        return False
    if relative_dir not in known:
        known[relative_dir] = _crosses_symlink(
            toplevel, relative_dir.parent, known
        ) or os.path.islink(toplevel / relative_dir)
    return known[relative_dir]


# --- the mirror cache ----------------------------------------------------------------------


@dataclass(frozen=True)
class _ResolvedRef:
    sha: str
    branch: str | None = None
    tag: str | None = None


@contextmanager
def _locked(lock_file: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold a flock on `lock_file`: exclusive to change a mirror, shared to read one."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class MirrorCache:
    """One bare mirror per repository URL under `root`, and workspaces made from them.

    Safe to share between threads and processes: changes to a mirror happen under an
    exclusive flock on a lock file beside it, reads under a shared one. A first clone is
    made in a temporary directory and renamed into place, so an interrupted clone never
    leaves a half mirror behind.

    Workspaces share objects with their mirror (``clone --shared``); the mirror must stay
    while they are used.
    """

    def __init__(self, root: Path, *, network_timeout: float = NETWORK_TIMEOUT_SECONDS) -> None:
        self.root = root
        self.network_timeout = network_timeout

    def mirror_path(self, url: str) -> Path:
        """Where the mirror of `url` lives: readable, filesystem-safe, stable for the URL.

        Credentials are not part of it: the same repository reached with another token
        uses the same mirror.
        """
        public_url = _without_credentials(url)
        digest = hashlib.sha256(public_url.encode()).hexdigest()[:16]
        readable = _MIRROR_NAME_UNSAFE.sub("-", public_url.split("://", 1)[-1])
        readable = readable[-48:].strip("-.") or "repository"
        return self.root / f"{readable}-{digest}.git"

    def _lock_path(self, mirror: Path) -> Path:
        return mirror.with_name(mirror.name + ".lock")

    def update(self, url: str) -> Path:
        """Bring the mirror of `url` up to date (clone it the first time); return its path."""
        _reject_option_like(url, "repository URL")
        mirror = self.mirror_path(url)
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self._lock_path(mirror), exclusive=True):
            if _is_bare_repository(mirror):
                self._fetch(url, mirror)
            else:
                self._clone(url, mirror)
        return mirror

    def _fetch(self, url: str, mirror: Path) -> None:
        # Before the refs change, so that a fetch that fails half-way leaves none stale.
        (mirror / _REFS_LISTING).unlink(missing_ok=True)
        # The URL is given on the command line, not read from the config, so credentials
        # are used but never stored in the mirror.
        _git_checked(
            ["fetch", "--prune", "--quiet", "--no-auto-maintenance", "--", url, "+refs/*:refs/*"],
            cwd=mirror,
            timeout=self.network_timeout,
            doing=f"fetching {redact_credentials(url)} into its mirror {mirror}",
        )
        logger.info("fetched %s into %s", redact_credentials(url), mirror)
        self._maintain(mirror)

    def _maintain(self, mirror: Path) -> None:
        """What ``git fetch`` does after each fetch (``git maintenance run --auto``: a
        repack or gc when git's thresholds are passed, in the background), here at most
        once per `MAINTENANCE_INTERVAL_SECONDS` per mirror and process (the server makes
        a cache per trigger). Called under the exclusive lock."""
        now = time.monotonic()
        last = _maintained.get(mirror)
        if last is not None and now - last < MAINTENANCE_INTERVAL_SECONDS:
            return
        _maintained[mirror] = now
        done = _run_git(
            ["maintenance", "run", "--auto", "--quiet"],
            cwd=mirror,
            doing=f"maintaining the mirror {mirror}",
        )
        if done.returncode != 0:  # the mirror still works; the next fetch tries again
            logger.warning("git maintenance failed in %s: %s", mirror, done.stderr)
            _maintained.pop(mirror, None)

    def _clone(self, url: str, mirror: Path) -> None:
        # Under the exclusive lock nobody else is cloning this mirror: what is left over
        # is from a process that died, or a directory that is not a mirror.
        for leftover in self.root.glob(f".{mirror.name}.cloning-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if mirror.exists():
            shutil.rmtree(mirror)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{mirror.name}.cloning-"))
        try:
            _git_checked(
                ["clone", "--mirror", "--quiet", "--", url, str(staging)],
                timeout=self.network_timeout,
                doing=f"cloning {redact_credentials(url)} into the mirror cache at {self.root}",
            )
            _git_checked(
                ["config", "remote.origin.url", _without_credentials(url)],
                cwd=staging,
                doing=f"configuring the mirror {staging}",
            )
            staging.rename(mirror)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("cloned %s into %s", redact_credentials(url), mirror)

    def _existing_mirror(self, url: str) -> Path:
        mirror = self.mirror_path(url)
        if not _is_bare_repository(mirror):
            raise CheckoutError(
                f"there is no mirror of {redact_credentials(url)} in {self.root} yet: "
                "update it first (or resolve with fetch=True)"
            )
        return mirror

    def resolve(self, url: str, ref: str, *, fetch: bool = True) -> str:
        """The commit sha that `ref` names in the repository at `url`.

        `ref` is a branch name, a tag name (annotated tags give the commit they point at),
        a full ref (``refs/heads/x``, ``refs/pull/1/head``), a full or abbreviated sha, or
        ``HEAD``: the repository's default branch (as it was when the mirror was cloned).
        A name that is both a branch and a tag is taken as the branch. With `fetch`, the
        mirror is updated first, unless `ref` is a full sha it already holds.
        """
        return self._resolve(url, ref, fetch=fetch).sha

    def _resolve(self, url: str, ref: str, *, fetch: bool) -> _ResolvedRef:
        _check_ref(ref)
        if fetch:
            held = _is_bare_repository(self.mirror_path(url)) and _FULL_SHA.match(ref)
            if held and self._has_commit(self.mirror_path(url), ref):
                return _ResolvedRef(ref)
            self.update(url)
        mirror = self._existing_mirror(url)
        with _locked(self._lock_path(mirror), exclusive=False):
            resolved = self._resolve_in(mirror, ref)
            if resolved is None:
                raise CheckoutError(self._not_found_message(url, mirror, ref))
            return resolved

    def _resolve_in(self, mirror: Path, ref: str) -> _ResolvedRef | None:
        if ref == "HEAD":
            ref = self._default_branch_ref(mirror) or ref
            if ref == "HEAD":
                return self._resolve_abbreviated(mirror, ref)
        if ref.startswith("refs/"):
            sha = self._ref_commit(mirror, ref)
            if sha is None:
                return None
            if ref.startswith(_BRANCH_PREFIX):
                return _ResolvedRef(sha, branch=ref.removeprefix(_BRANCH_PREFIX))
            if ref.startswith(_TAG_PREFIX):
                return _ResolvedRef(sha, tag=ref.removeprefix(_TAG_PREFIX))
            return _ResolvedRef(sha)
        if _FULL_SHA.match(ref) and self._has_commit(mirror, ref):
            return _ResolvedRef(ref)
        branch_sha = self._ref_commit(mirror, _BRANCH_PREFIX + ref)
        if branch_sha is not None:
            return _ResolvedRef(branch_sha, branch=ref)
        tag_sha = self._ref_commit(mirror, _TAG_PREFIX + ref)
        if tag_sha is not None:
            return _ResolvedRef(tag_sha, tag=ref)
        if _ABBREVIATED_SHA.match(ref):
            return self._resolve_abbreviated(mirror, ref)
        return None

    def _default_branch_ref(self, mirror: Path) -> str | None:
        """The branch the repository's HEAD named when the mirror was cloned, as a full ref."""
        head = _run_git(
            ["symbolic-ref", "--quiet", "HEAD"], cwd=mirror, doing=f"reading HEAD of {mirror}"
        )
        return head.text if head.returncode == 0 and head.text else None

    def _ref_commit(self, mirror: Path, full_ref: str) -> str | None:
        """The commit of exactly `full_ref`, or None. Revision syntax (``~``, ``^``) is not
        read: the name is looked up as it is, so ``main~1`` is no branch."""
        listed = _git_checked(
            [
                "for-each-ref",
                "--format=%(refname)%00%(objecttype)%00%(objectname)"
                "%00%(*objecttype)%00%(*objectname)",
                full_ref,
            ],
            cwd=mirror,
            doing=f"looking up {full_ref} in {mirror}",
        )
        # The pattern also matches refs below `full_ref` (refs/heads/a/b for refs/heads/a).
        for line in listed.text.splitlines():
            name, kind, sha, peeled_kind, peeled_sha = (line.split("\x00") + [""] * 5)[:5]
            if name != full_ref:
                continue
            if kind == "commit":
                return sha
            if kind == "tag" and peeled_kind == "commit":
                return peeled_sha  # an annotated tag of a commit
            break  # a tag of a tag, or of something that is no commit: git peels it
        else:
            return None
        peeled = _run_git(
            ["rev-parse", "--verify", "--quiet", f"{full_ref}^{{commit}}"],
            cwd=mirror,
            doing=f"reading {full_ref} in {mirror}",
        )
        return peeled.text if peeled.returncode == 0 else None

    def _has_commit(self, mirror: Path, sha: str) -> bool:
        return (
            _run_git(
                ["cat-file", "-e", f"{sha}^{{commit}}"], cwd=mirror, doing=f"looking for {sha}"
            ).returncode
            == 0
        )

    def _resolve_abbreviated(self, mirror: Path, prefix: str) -> _ResolvedRef | None:
        found = _run_git(
            ["rev-parse", "--verify", "--quiet", f"{prefix}^{{commit}}"],
            cwd=mirror,
            doing=f"looking up {prefix} in {mirror}",
        )
        if found.returncode == 0:
            return _ResolvedRef(found.text)
        candidates = _run_git(
            ["rev-parse", f"--disambiguate={prefix}"], cwd=mirror, doing=f"looking up {prefix}"
        ).text.splitlines()
        if len(candidates) > 1:
            raise CheckoutError(
                f"the abbreviated sha `{prefix}` is ambiguous in {mirror} "
                f"({len(candidates)} objects start with it): give more characters"
            )
        return None

    def _not_found_message(self, url: str, mirror: Path, ref: str) -> str:
        def names(prefix: str) -> str:
            listed = _run_git(
                ["for-each-ref", "--format=%(refname:strip=2)", "--sort=refname", prefix],
                cwd=mirror,
                doing=f"listing {prefix} of {mirror}",
            ).text.splitlines()
            if not listed:
                return "(none)"
            shown = ", ".join(listed[:_MAX_NAMES_IN_MESSAGE])
            more = len(listed) - _MAX_NAMES_IN_MESSAGE
            return shown + (f" and {more} more" if more > 0 else "")

        return (
            f"ref `{ref}` not found in {redact_credentials(url)}: the branches are "
            f"{names('refs/heads')}; the tags are {names('refs/tags')}. "
            "Give one of them, a full ref or a commit sha"
        )

    def describe(self, url: str, ref: str, *, fetch: bool = True) -> CommitInfo:
        """The commit `ref` names (resolved as `resolve` does), with its message and author,
        and the branch or tag `ref` named; no workspace is made."""
        return self.snapshot(url, ref, (), fetch=fetch).commit

    def snapshot(
        self, url: str, ref: str, paths: Sequence[str], *, fetch: bool = True
    ) -> CommitSnapshot:
        """The commit `ref` names (as `describe` gives it) with the files at `paths` read
        in the same git process: what the server needs at a trigger (the commit and its
        pipeline file). Other files are read through the snapshot's `read_file`."""
        in_tree = [_path_in_tree(path) for path in paths]
        _check_ref(ref)
        mirror = self.mirror_path(url)
        found: list[_Object | None] | None = None
        branch = tag = None
        if _FULL_SHA.match(ref) and _is_bare_repository(mirror):
            # A full sha the mirror holds, the usual case for an agent: the lookup and
            # the reading take one git process.
            found = self._read_at(mirror, ref, in_tree)
        if found is None:
            resolved = self._resolve(url, ref, fetch=fetch)
            branch, tag = resolved.branch, resolved.tag
            mirror = self._existing_mirror(url)
            found = self._read_at(mirror, resolved.sha, in_tree)
            if found is None:
                raise CheckoutError(
                    f"commit {resolved.sha} vanished from {mirror} while reading it"
                )
        commit_object, *files = found
        assert commit_object is not None  # `_read_at` gives None when it is missing
        commit = _parse_commit(commit_object, branch=branch, tag=tag)
        return CommitSnapshot(commit, self, url, dict(zip(paths, files, strict=True)))

    def _read_at(
        self, mirror: Path, sha: str, in_tree: Sequence[str]
    ) -> list[_Object | None] | None:
        """The commit `sha` and the files at `in_tree` in it, in one git process; None
        when the mirror holds no such commit."""
        names = [f"{sha}^{{commit}}", *(f"{sha}:{path}" for path in in_tree)]
        with _locked(self._lock_path(mirror), exclusive=False):
            found = _read_objects(mirror, names, doing=f"reading commit {sha} in {mirror}")
        return None if found[0] is None else found

    def read_file(self, url: str, sha: str, path: str) -> str | None:
        """The text of `path` at commit `sha`, or None when the commit has no such file.

        Fetches once if the mirror does not hold the commit yet. A commit that the
        repository does not have, or a file that is not UTF-8 text, is a `CheckoutError`.
        """
        if not _ABBREVIATED_SHA.match(sha):
            raise CheckoutError(f"`{sha}` is not a commit sha: resolve the ref first")
        mirror = self.mirror_path(url)
        # The commit and the file in one git process; the mirror is fetched only when
        # it does not hold the commit yet.
        names = [f"{sha}^{{commit}}", f"{sha}:{_path_in_tree(path)}"]
        found: list[_Object | None] = [None, None]
        for attempt in range(2):
            if attempt or not _is_bare_repository(mirror):
                self.update(url)
            with _locked(self._lock_path(mirror), exclusive=False):
                found = _read_objects(mirror, names, doing=f"reading {path} at {sha} from {mirror}")
            if found[0] is not None:
                break
        else:
            raise CheckoutError(
                f"commit {sha} is not in {redact_credentials(url)}: "
                "check the sha, or whether it was force-pushed away"
            )
        return _file_text(found[1], url, sha, path)

    def checkout(self, url: str, ref: str, dest: Path) -> CommitInfo:
        """Make `dest` a fresh workspace at exactly the commit `ref` names, detached.

        Updates the mirror, resolves `ref` (as `resolve` does) and makes the workspace
        share the mirror's objects, as ``git clone --shared`` from the mirror would.
        The workspace's ``origin`` is `url` without credentials, so relative submodule
        URLs work. `branch` / `tag` in the result are set when `ref` names one.
        """
        commit = self.describe(url, ref, fetch=True)
        self._make_workspace(url, self._existing_mirror(url), commit.sha, dest)
        return commit

    def checkout_commit(self, url: str, sha: str, dest: Path) -> None:
        """Make `dest` a fresh workspace at commit `sha` (full), as `checkout` does, for a
        commit the server already resolved: the mirror is fetched only when it lacks the
        commit, and the commit's facts are not read (the agent has them): one git
        process fewer than `checkout` on a warm mirror."""
        if not _FULL_SHA.match(sha):
            raise CheckoutError(f"`{sha}` is not a full commit sha: resolve the ref first")
        mirror = self.mirror_path(url)
        if not _is_bare_repository(mirror):
            self.update(url)
        try:
            self._make_workspace(url, mirror, sha, dest)
        except CheckoutError:
            if self._has_commit(mirror, sha):
                raise  # not a missing commit: fetching would not help
            self.update(url)
            if not self._has_commit(mirror, sha):
                raise CheckoutError(
                    f"commit {sha} is not in {redact_credentials(url)}: "
                    "check the sha, or whether it was force-pushed away"
                ) from None
            self._make_workspace(url, mirror, sha, dest)

    def _make_workspace(self, url: str, mirror: Path, sha: str, dest: Path) -> None:
        """`dest` made anew, sharing `mirror`'s objects, with `sha` checked out detached;
        nothing is left at `dest` when that fails."""
        created = _prepare_destination(dest)
        try:
            with _locked(self._lock_path(mirror), exclusive=False):
                listed = _refs_listing(mirror)
            _share_mirror(mirror, dest, _without_credentials(url), listed)
            _git_checked(
                ["checkout", "--quiet", "--detach", sha],
                cwd=dest,
                doing=f"checking out {sha} in {dest}",
            )
        except BaseException:
            _discard_workspace(dest, created)
            raise

    def remote_heads(self, url: str) -> dict[str, str]:
        """Branches and tags of the repository at `url`, asked over the network: ref -> sha.

        Annotated tags map to the commit they point at, not to the tag object.
        """
        _reject_option_like(url, "repository URL")
        listed = _git_checked(
            ["ls-remote", "--heads", "--tags", "--", url],
            timeout=self.network_timeout,
            doing=f"listing the branches and tags of {redact_credentials(url)}",
        )
        heads: dict[str, str] = {}
        peeled: dict[str, str] = {}
        for line in listed.text.splitlines():
            sha, _, name = line.partition("\t")
            if name.endswith("^{}"):
                peeled[name.removesuffix("^{}")] = sha
            elif name:
                heads[name] = sha
        heads.update(peeled)
        return heads


@dataclass(frozen=True)
class CommitSnapshot:
    """A commit and some of its files, read together (`MirrorCache.snapshot`)."""

    commit: CommitInfo
    cache: MirrorCache
    url: str
    files: dict[str, _Object | None]
    """The files read with the commit, by the path they were asked by."""

    def read_file(self, path: str) -> str | None:
        """As `MirrorCache.read_file` at this commit; a path read with the commit costs
        no git process."""
        if path in self.files:
            return _file_text(self.files[path], self.url, self.commit.sha, path)
        return self.cache.read_file(self.url, self.commit.sha, path)


def _path_in_tree(path: str) -> str:
    """`path` as ``git cat-file`` names it below a commit (``<sha>:<path>``)."""
    if "\n" in path:
        raise CheckoutError(f"path {path!r} contains a newline: no file can be read by it")
    return path.strip().lstrip("/").removeprefix("./")


def _file_text(blob: _Object | None, url: str, sha: str, path: str) -> str | None:
    """The text of a file read at `sha`, None when there was none (no such path, or a
    directory or submodule); a `CheckoutError` when it is not UTF-8."""
    if blob is None or blob.kind != "blob":
        return None
    try:
        return blob.content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckoutError(
            f"{path} at {sha} in {redact_credentials(url)} is not UTF-8 text: save it as UTF-8"
        ) from error


def _refs_listing(mirror: Path) -> bytes:
    """The mirror's branches and tags (``for-each-ref`` lines of HEAD mark, sha and ref
    name), from the copy saved in the mirror when there is one (a fetch removes it
    first), else listed by git and saved. Called under the mirror's shared lock, so no
    fetch changes the refs meanwhile."""
    saved = mirror / _REFS_LISTING
    try:
        return saved.read_bytes()
    except FileNotFoundError:
        pass
    listed = _git_checked(
        [
            "for-each-ref",
            "--format=%(HEAD)%00%(objectname)%00%(refname)",
            _BRANCH_PREFIX,
            _TAG_PREFIX,
        ],
        cwd=mirror,
        doing=f"listing the branches and tags of the mirror {mirror}",
    ).stdout
    # Readers hold the lock together: each writes its own file and renames it in place.
    staging = saved.with_name(f".{saved.name}.{os.getpid()}.{threading.get_ident()}")
    staging.write_bytes(listed)
    staging.replace(saved)
    return listed


def _share_mirror(mirror: Path, dest: Path, origin_url: str, refs: bytes) -> None:
    """Make `dest` what ``git clone --shared --no-checkout <mirror> <dest>`` makes, with
    `origin_url` as origin: objects borrowed from the mirror, its branches as
    ``origin/*``, its tags, and a local branch for its HEAD. Written here rather than
    by ``git clone``, which would start three processes to learn the refs given here as
    `refs` (``for-each-ref`` lines of HEAD mark, sha and ref name).
    """
    packed: list[tuple[bytes, bytes]] = []
    default_branch: bytes | None = None
    for line in refs.splitlines():
        head, sha, name = (line.split(b"\0") + [b""] * 3)[:3]
        if name.startswith(_BRANCH_PREFIX.encode()):
            branch = name.removeprefix(_BRANCH_PREFIX.encode())
            packed.append((b"refs/remotes/origin/" + branch, sha))
            if head == b"*":
                default_branch = branch
                packed.append((name, sha))
        elif name.startswith(_TAG_PREFIX.encode()):
            packed.append((name, sha))
    git_dir = _init_repository(dest, os.fsdecode(default_branch or b"master"))
    (git_dir / "objects" / "info" / "alternates").write_text(
        f"{mirror.resolve() / 'objects'}\n", encoding="utf-8"
    )
    # No "peeled" trait: git peels annotated tags itself when asked.
    lines = [b"# pack-refs with: sorted \n"]
    lines += [sha + b" " + name + b"\n" for name, sha in sorted(packed)]
    (git_dir / "packed-refs").write_bytes(b"".join(lines))
    config = [
        '[remote "origin"]',
        f"\turl = {_config_value(origin_url)}",
        "\tfetch = +refs/heads/*:refs/remotes/origin/*",
    ]
    if default_branch is not None:
        branch_name = os.fsdecode(default_branch)
        (git_dir / "refs" / "remotes" / "origin").mkdir(parents=True, exist_ok=True)
        (git_dir / "refs" / "remotes" / "origin" / "HEAD").write_text(
            f"ref: refs/remotes/origin/{branch_name}\n", encoding="utf-8"
        )
        config += [
            f"[branch {_config_value(branch_name)}]",
            "\tremote = origin",
            f"\tmerge = {_config_value(_BRANCH_PREFIX + branch_name)}",
        ]
    with (git_dir / "config").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(config) + "\n")


def _init_repository(dest: Path, branch: str) -> Path:
    """Make `dest` what ``git init --template= --initial-branch=<branch>`` makes on a
    POSIX filesystem (the repository layout of gitrepository-layout(5)), and return its
    ``.git``: written here, as one process fewer per job (git init alone costs about as
    much as the checkout of a small repository)."""
    git_dir = dest / ".git"
    try:
        for part in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
            (git_dir / part).mkdir(parents=True, exist_ok=True)
        (git_dir / "HEAD").write_text(f"ref: {_BRANCH_PREFIX}{branch}\n", encoding="utf-8")
        (git_dir / "config").write_text(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
            "\tbare = false\n\tlogallrefupdates = true\n",
            encoding="utf-8",
        )
    except OSError as error:
        raise CheckoutError(
            f"cannot create the workspace {dest}: {error.strerror or error}; "
            "check that the agent's work directory is writable and has free space"
        ) from error
    return git_dir


def _config_value(value: str) -> str:
    """`value` quoted for a git config file (also right for a subsection name)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _is_bare_repository(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()
