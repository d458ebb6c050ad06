"""Checkout and the mirror cache, with real git repositories over file:// and loopback HTTP."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conveyor.agent.checkout import (
    CheckoutError,
    MirrorCache,
    copy_working_tree,
    redact_credentials,
)
from tests.fixtures.gitrepos import Repo

MakeRepo = Callable[..., Repo]


def git_in(path: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True)
    return done.stdout.rstrip("\n")


@pytest.fixture
def cache(tmp_path: Path) -> MirrorCache:
    return MirrorCache(tmp_path / "mirrors")


# --- a git server on 127.0.0.1 -----------------------------------------------------------


class GitHttpBackendHandler(BaseHTTPRequestHandler):
    """Serves the repositories under `project_root` with `git http-backend` (smart HTTP).

    Paths under /private/ answer 401 with a Basic challenge, as a forge does for a
    repository that needs credentials.
    """

    project_root: Path

    def do_GET(self) -> None:
        self.serve()

    def do_POST(self) -> None:
        self.serve()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet

    def serve(self) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith("/private/"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0],
        }
        for header in ("Content-Encoding", "Git-Protocol"):
            value = self.headers.get(header)
            if value:
                env["HTTP_" + header.upper().replace("-", "_")] = value
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=30
        )
        separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
        head, _, payload = done.stdout.partition(separator)
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def git_http_server(tmp_path: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT serving the repositories `make_repo` makes (by folder name)."""
    handler = type("Handler", (GitHttpBackendHandler,), {"project_root": tmp_path})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- copy_working_tree ---------------------------------------------------------------------


class TestCopyWorkingTree:
    @pytest.fixture
    def dirty_repo(self, make_repo: MakeRepo) -> Repo:
        repo = make_repo(
            {
                "README.md": "committed readme\n",
                "src/app.py": "print('committed')\n",
                "doomed.txt": "will be deleted\n",
                ".gitignore": "*.log\nbuild/\n",
                "run.sh": "#!/bin/sh\necho hi\n",
            }
        )
        repo.path.joinpath("run.sh").chmod(0o755)
        os.symlink("src/app.py", repo.path / "app-link")
        repo.commit("add executable and symlink")
        repo.write("src/app.py", "print('uncommitted')\n")
        repo.write("new/untracked.txt", "untracked\n")
        repo.write("debug.log", "ignored\n")
        repo.write("build/out.bin", "ignored dir\n")
        (repo.path / "doomed.txt").unlink()
        return repo

    def test_uncommitted_and_untracked_files_are_copied(
        self, dirty_repo: Repo, tmp_path: Path
    ) -> None:
        dest = tmp_path / "ws"
        copy_working_tree(dirty_repo.path, dest)
        assert (dest / "src/app.py").read_text() == "print('uncommitted')\n"
        assert (dest / "new/untracked.txt").read_text() == "untracked\n"
        assert (dest / "README.md").read_text() == "committed readme\n"

    def test_deleted_and_ignored_files_are_absent(self, dirty_repo: Repo, tmp_path: Path) -> None:
        dest = tmp_path / "ws"
        copy_working_tree(dirty_repo.path, dest)
        assert not (dest / "doomed.txt").exists()
        assert not (dest / "debug.log").exists()
        assert not (dest / "build").exists()

    def test_executable_bit_and_symlink_are_kept(self, dirty_repo: Repo, tmp_path: Path) -> None:
        dest = tmp_path / "ws"
        copy_working_tree(dirty_repo.path, dest)
        assert os.stat(dest / "run.sh").st_mode & stat.S_IXUSR
        assert not os.stat(dest / "README.md").st_mode & stat.S_IXUSR
        assert (dest / "app-link").is_symlink()
        assert os.readlink(dest / "app-link") == "src/app.py"

    def test_workspace_git_head_is_repo_head_and_status_shows_the_changes(
        self, dirty_repo: Repo, tmp_path: Path
    ) -> None:
        dest = tmp_path / "ws"
        copy_working_tree(dirty_repo.path, dest)
        assert git_in(dest, "rev-parse", "HEAD") == dirty_repo.head()
        assert git_in(dest, "log", "-1", "--format=%s") == "add executable and symlink"
        status = git_in(dest, "status", "--porcelain").splitlines()
        assert " M src/app.py" in status
        assert " D doomed.txt" in status
        assert "?? new/" in status

    def test_commit_info_has_sha_message_author_and_branch(
        self, dirty_repo: Repo, tmp_path: Path
    ) -> None:
        info = copy_working_tree(dirty_repo.path, tmp_path / "ws")
        assert info.sha == dirty_repo.head()
        assert info.message == "add executable and symlink"
        assert info.author == "Ada Tester <ada@example.test>"
        assert (info.author_name, info.author_email) == ("Ada Tester", "ada@example.test")
        assert info.branch == "main"
        assert info.tag is None
        expected = dirty_repo.git("show", "-s", "--format=%cI", "HEAD")
        assert info.committed_at == datetime.fromisoformat(expected)

    def test_multiline_message_and_tag_at_head_are_reported(
        self, make_repo: MakeRepo, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        repo.git("commit", "-q", "--allow-empty", "-m", "subject line\n\nbody line")
        repo.git("tag", "v1.0")
        info = copy_working_tree(repo.path, tmp_path / "ws")
        assert info.message == "subject line\n\nbody line"
        assert info.tag == "v1.0"

    def test_detached_head_gives_no_branch(self, make_repo: MakeRepo, tmp_path: Path) -> None:
        repo = make_repo({"a": "1"})
        repo.git("checkout", "-q", "--detach")
        assert copy_working_tree(repo.path, tmp_path / "ws").branch is None

    def test_repo_dir_is_not_modified(self, dirty_repo: Repo, tmp_path: Path) -> None:
        dirty_repo.git("stash", "list")
        git_dir = dirty_repo.path / ".git"

        def snapshot() -> tuple[str, str, str, bytes, list[str]]:
            return (
                dirty_repo.git("status", "--porcelain", "--untracked-files=all"),
                dirty_repo.git("stash", "list"),
                dirty_repo.git("worktree", "list", "--porcelain"),
                (git_dir / "index").read_bytes(),
                sorted(str(p.relative_to(dirty_repo.path)) for p in dirty_repo.path.rglob("*")),
            )

        before = snapshot()
        copy_working_tree(dirty_repo.path, tmp_path / "ws")
        assert snapshot() == before

    def test_changes_in_the_workspace_do_not_reach_the_repo(
        self, dirty_repo: Repo, tmp_path: Path
    ) -> None:
        dest = tmp_path / "ws"
        copy_working_tree(dirty_repo.path, dest)
        (dest / "README.md").write_text("changed by a step\n")
        assert (dirty_repo.path / "README.md").read_text() == "committed readme\n"

    def test_works_from_a_subdirectory_of_the_checkout(
        self, dirty_repo: Repo, tmp_path: Path
    ) -> None:
        dest = tmp_path / "ws"
        info = copy_working_tree(dirty_repo.path / "src", dest)
        assert info.sha == dirty_repo.head()
        assert (dest / "README.md").is_file()
        assert (dest / "src/app.py").read_text() == "print('uncommitted')\n"

    def test_linked_worktree_is_copied_at_its_own_head(
        self, make_repo: MakeRepo, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "main\n"})
        linked = tmp_path / "linked"
        repo.git("worktree", "add", "-q", "-b", "feature", str(linked))
        (linked / "a").write_text("feature\n")
        Repo(linked).commit("on feature")
        linked_head = git_in(linked, "rev-parse", "HEAD")
        (linked / "b").write_text("untracked in worktree\n")
        info = copy_working_tree(linked, tmp_path / "ws")
        assert (info.sha, info.branch) == (linked_head, "feature")
        assert (tmp_path / "ws" / "a").read_text() == "feature\n"
        assert (tmp_path / "ws" / "b").read_text() == "untracked in worktree\n"

    def test_submodule_is_left_empty_for_prepare(self, make_repo: MakeRepo, tmp_path: Path) -> None:
        library = make_repo({"lib.txt": "library\n"})
        repo = make_repo({"a": "1"})
        repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", library.url, "lib")
        repo.commit("add submodule")
        dest = tmp_path / "ws"
        copy_working_tree(repo.path, dest)
        assert (dest / "lib").is_dir()
        assert list((dest / "lib").iterdir()) == []
        assert (dest / ".gitmodules").is_file()

    def test_directory_that_is_not_a_checkout_raises(self, tmp_path: Path) -> None:
        plain = tmp_path / "plain"
        plain.mkdir()
        with pytest.raises(CheckoutError, match="not inside a git checkout"):
            copy_working_tree(plain, tmp_path / "ws")
        assert not (tmp_path / "ws").exists()

    def test_checkout_without_commits_raises(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty"
        empty.mkdir()
        git_in(empty, "init", "-q")
        with pytest.raises(CheckoutError, match="has no commit yet"):
            copy_working_tree(empty, tmp_path / "ws")

    def test_non_empty_destination_raises_and_is_left_alone(
        self, make_repo: MakeRepo, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        dest = tmp_path / "ws"
        dest.mkdir()
        (dest / "keep").write_text("mine")
        with pytest.raises(CheckoutError, match="not an empty directory"):
            copy_working_tree(repo.path, dest)
        assert (dest / "keep").read_text() == "mine"


# --- MirrorCache ---------------------------------------------------------------------------


class TestMirrorPath:
    def test_same_url_gives_the_same_path_and_another_url_another(self, tmp_path: Path) -> None:
        one, other = MirrorCache(tmp_path), MirrorCache(tmp_path)
        assert one.mirror_path("https://host/a/b.git") == other.mirror_path("https://host/a/b.git")
        assert one.mirror_path("https://host/a/b.git") != one.mirror_path("https://host/a/c.git")

    def test_path_is_a_single_safe_name_under_the_root(self, tmp_path: Path) -> None:
        path = MirrorCache(tmp_path).mirror_path("ssh://git@host:22/../../etc passwd")
        assert path.parent == tmp_path
        assert all(c.isalnum() or c in "._-" for c in path.name)

    def test_credentials_neither_change_nor_appear_in_the_path(self, tmp_path: Path) -> None:
        cache = MirrorCache(tmp_path)
        with_token = cache.mirror_path("https://user:s3cret@host/x.git")
        assert with_token == cache.mirror_path("https://host/x.git")
        assert "s3cret" not in str(with_token)


class TestUpdate:
    def test_first_update_clones_a_bare_mirror(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        mirror = cache.update(repo.url)
        assert mirror == cache.mirror_path(repo.url)
        assert git_in(mirror, "rev-parse", "--is-bare-repository") == "true"
        assert git_in(mirror, "rev-parse", "refs/heads/main") == repo.head()

    def test_second_update_fetches_a_new_commit_without_recloning(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        mirror = cache.update(repo.url)
        inode = mirror.stat().st_ino
        (mirror / "conveyor-marker").write_text("survives a fetch")
        repo.write("a", "2")
        new_sha = repo.commit("second")
        assert cache.update(repo.url) == mirror
        assert mirror.stat().st_ino == inode
        assert (mirror / "conveyor-marker").is_file()
        assert cache.resolve(repo.url, "main", fetch=False) == new_sha

    def test_maintenance_follows_a_fetch_at_most_once_per_interval(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        mirror = cache.update(repo.url)
        # Each fetch brings a pack of its own, and two packs are one too many for gc
        # (run in the foreground here).
        for key, value in [("fetch.unpackLimit", "1"), ("gc.autoPackLimit", "1")]:
            git_in(mirror, "config", key, value)
        git_in(mirror, "config", "gc.autoDetach", "false")

        def packs() -> int:
            counts = dict(
                line.split(": ") for line in git_in(mirror, "count-objects", "-v").splitlines()
            )
            return int(counts["packs"])

        for round_ in range(2):
            repo.write("a", f"round {round_}")
            repo.commit(f"round {round_}")
            # A cache per fetch, as the server makes one per trigger: the interval is
            # the process's.
            MirrorCache(cache.root).update(repo.url)
            if round_ == 0:
                assert packs() == 1  # the first fetch is followed by a gc: repacked
            else:
                assert packs() == 2  # within the interval: not asked again

    def test_deleted_branch_is_pruned(self, make_repo: MakeRepo, cache: MirrorCache) -> None:
        repo = make_repo({"a": "1"})
        repo.git("branch", "short-lived")
        mirror = cache.update(repo.url)
        assert "refs/heads/short-lived" in git_in(mirror, "for-each-ref")
        repo.git("branch", "-D", "short-lived")
        cache.update(repo.url)
        assert "refs/heads/short-lived" not in git_in(mirror, "for-each-ref")

    def test_missing_repository_fails_fast_with_a_clear_message(
        self, cache: MirrorCache, tmp_path: Path
    ) -> None:
        url = (tmp_path / "no-such-repo").as_uri()
        started = time.monotonic()
        with pytest.raises(CheckoutError) as caught:
            cache.update(url)
        assert time.monotonic() - started < 10
        assert url in str(caught.value)
        assert "check that the URL is right" in str(caught.value)
        assert not cache.mirror_path(url).exists()
        assert [p.name for p in cache.root.iterdir() if not p.name.endswith(".lock")] == []

    def test_unreachable_host_fails_fast_with_a_clear_message(self, cache: MirrorCache) -> None:
        url = f"http://127.0.0.1:{closed_port()}/repo.git"
        started = time.monotonic()
        with pytest.raises(CheckoutError, match="reachable from this machine"):
            cache.update(url)
        assert time.monotonic() - started < 10

    def test_server_that_never_answers_is_given_up_after_the_timeout(self, tmp_path: Path) -> None:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        try:
            cache = MirrorCache(tmp_path / "mirrors", network_timeout=1.5)
            started = time.monotonic()
            with pytest.raises(CheckoutError, match=r"did not finish .* within 1.5 seconds"):
                cache.update(f"http://127.0.0.1:{silent.getsockname()[1]}/repo.git")
            assert time.monotonic() - started < 8
        finally:
            silent.close()

    def test_url_starting_with_a_dash_is_refused(self, cache: MirrorCache) -> None:
        with pytest.raises(CheckoutError, match="starts with '-'"):
            cache.update("--upload-pack=touch /tmp/pwned")

    def test_concurrent_first_updates_from_threads_all_succeed(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        errors: list[BaseException] = []

        def update() -> None:
            try:
                cache.update(repo.url)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=update) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        mirror = cache.mirror_path(repo.url)
        git_in(mirror, "fsck", "--no-progress")
        assert git_in(mirror, "rev-parse", "refs/heads/main") == repo.head()

    def test_concurrent_updates_from_processes_all_succeed(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        cache.update(repo.url)
        for number in range(3):
            repo.write(f"file{number}", str(number))
            repo.commit(f"commit {number}")
        script = (
            "import sys; from pathlib import Path; from conveyor.agent.checkout import MirrorCache;"
            "MirrorCache(Path(sys.argv[1])).update(sys.argv[2])"
        )
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(cache.root), repo.url],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        failures = [p.communicate(timeout=60)[1] for p in processes if p.wait(timeout=60) != 0]
        assert failures == []
        mirror = cache.mirror_path(repo.url)
        git_in(mirror, "fsck", "--no-progress")
        assert git_in(mirror, "rev-parse", "refs/heads/main") == repo.head()


class TestResolve:
    @pytest.fixture
    def repo(self, make_repo: MakeRepo) -> Repo:
        repo = make_repo({"a": "1"})
        repo.git("tag", "-a", "v1", "-m", "release 1")
        repo.git("tag", "light")
        repo.git("branch", "dev")
        repo.write("a", "2")
        repo.commit("second on main")
        return repo

    def test_branch_name_resolves_to_its_tip(self, repo: Repo, cache: MirrorCache) -> None:
        assert cache.resolve(repo.url, "main") == repo.head()

    def test_annotated_tag_resolves_to_its_commit(self, repo: Repo, cache: MirrorCache) -> None:
        assert cache.resolve(repo.url, "v1") == repo.git("rev-parse", "HEAD~1")
        assert cache.resolve(repo.url, "light") == repo.git("rev-parse", "HEAD~1")

    def test_full_ref_resolves(self, repo: Repo, cache: MirrorCache) -> None:
        assert cache.resolve(repo.url, "refs/heads/dev") == repo.git("rev-parse", "dev")
        assert cache.resolve(repo.url, "refs/tags/v1") == repo.git("rev-parse", "HEAD~1")

    def test_full_and_abbreviated_sha_resolve(self, repo: Repo, cache: MirrorCache) -> None:
        sha = repo.git("rev-parse", "HEAD~1")
        assert cache.resolve(repo.url, sha) == sha
        assert cache.resolve(repo.url, sha[:8]) == sha

    def test_head_is_the_default_branch(self, make_repo: MakeRepo, cache: MirrorCache) -> None:
        repo = make_repo({"a": "1"}, branch="trunk")
        repo.git("checkout", "-q", "-b", "other")
        repo.commit("only on other")
        repo.git("checkout", "-q", "trunk")
        assert cache.resolve(repo.url, "HEAD") == repo.git("rev-parse", "trunk")

    def test_unknown_ref_lists_the_branches_and_tags(self, repo: Repo, cache: MirrorCache) -> None:
        with pytest.raises(CheckoutError) as caught:
            cache.resolve(repo.url, "nope")
        message = str(caught.value)
        assert f"ref `nope` not found in {repo.url}: the branches are dev, main" in message
        assert "the tags are light, v1" in message

    def test_unknown_full_sha_is_not_found(self, repo: Repo, cache: MirrorCache) -> None:
        with pytest.raises(CheckoutError, match="not found"):
            cache.resolve(repo.url, "0" * 40)

    def test_revision_syntax_is_not_a_ref(self, repo: Repo, cache: MirrorCache) -> None:
        with pytest.raises(CheckoutError, match="not found"):
            cache.resolve(repo.url, "main~1")

    def test_without_fetch_a_new_commit_is_unseen_until_fetched(
        self, repo: Repo, cache: MirrorCache
    ) -> None:
        old = cache.resolve(repo.url, "main")
        repo.write("a", "3")
        new = repo.commit("third")
        assert cache.resolve(repo.url, "main", fetch=False) == old
        assert cache.resolve(repo.url, "main") == new

    def test_without_fetch_and_without_mirror_raises(self, repo: Repo, cache: MirrorCache) -> None:
        with pytest.raises(CheckoutError, match="no mirror of"):
            cache.resolve(repo.url, "main", fetch=False)


class TestReadFile:
    def test_file_at_a_commit_is_read(self, make_repo: MakeRepo, cache: MirrorCache) -> None:
        repo = make_repo({".conveyor.yml": "steps: []\n", "docs/x.md": "é\n"})
        first = repo.head()
        repo.write(".conveyor.yml", "steps: [changed]\n")
        repo.commit("change pipeline")
        assert cache.read_file(repo.url, first, ".conveyor.yml") == "steps: []\n"
        assert cache.read_file(repo.url, repo.head(), ".conveyor.yml") == "steps: [changed]\n"
        assert cache.read_file(repo.url, first, "docs/x.md") == "é\n"

    def test_absent_file_and_directory_give_none(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"docs/x.md": "x"})
        assert cache.read_file(repo.url, repo.head(), "missing.yml") is None
        assert cache.read_file(repo.url, repo.head(), "docs") is None

    def test_commit_pushed_after_the_last_update_is_fetched(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        cache.update(repo.url)
        repo.write("a", "2")
        sha = repo.commit("later")
        assert cache.read_file(repo.url, sha, "a") == "2"

    def test_unknown_commit_raises(self, make_repo: MakeRepo, cache: MirrorCache) -> None:
        repo = make_repo({"a": "1"})
        with pytest.raises(CheckoutError, match="is not in"):
            cache.read_file(repo.url, "1" * 40, "a")


class TestSnapshot:
    """`snapshot`: a commit and files at it in one go (the server's trigger)."""

    def test_a_branch_gives_the_commit_and_the_files_asked_for(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({".conveyor.yml": "steps: []\n", "ci/build.sh": "make\n"})
        cache.update(repo.url)
        snapshot = cache.snapshot(repo.url, "refs/heads/main", [".conveyor.yml", "none.yml"])
        assert snapshot.commit == cache.describe(repo.url, "refs/heads/main", fetch=False)
        assert snapshot.commit.branch == "main" and snapshot.commit.sha == repo.head()
        assert snapshot.files[".conveyor.yml"] is not None
        assert snapshot.read_file(".conveyor.yml") == "steps: []\n"
        assert snapshot.read_file("none.yml") is None
        assert snapshot.read_file("ci/build.sh") == "make\n"  # not read with it: asked now
        assert snapshot.read_file("ci") is None  # a directory is no file

    def test_a_tag_and_a_full_sha(self, make_repo: MakeRepo, cache: MirrorCache) -> None:
        repo = make_repo({"p.yml": "one\n"})
        repo.git("tag", "-a", "v1", "-m", "release")
        first = repo.head()
        repo.write("p.yml", "two\n")
        repo.commit("second")
        tagged = cache.snapshot(repo.url, "refs/tags/v1", ["p.yml"])
        assert (tagged.commit.sha, tagged.commit.tag) == (first, "v1")
        assert tagged.read_file("p.yml") == "one\n"
        by_sha = cache.snapshot(repo.url, first, ["p.yml"], fetch=False)
        assert by_sha.commit == cache.describe(repo.url, first, fetch=False)
        assert by_sha.read_file("p.yml") == "one\n"

    def test_a_full_sha_pushed_later_is_fetched_unless_told_not_to(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"p.yml": "one\n"})
        cache.update(repo.url)
        repo.write("p.yml", "two\n")
        later = repo.commit("later")
        with pytest.raises(CheckoutError, match=f"ref `{later}` not found"):
            cache.snapshot(repo.url, later, ["p.yml"], fetch=False)
        assert cache.snapshot(repo.url, later, ["p.yml"]).read_file("p.yml") == "two\n"

    def test_unknown_ref_and_a_file_that_is_not_text(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        (repo.path / "latin.yml").write_bytes("caf\u00e9\n".encode("latin-1"))
        repo.commit("latin-1")
        with pytest.raises(CheckoutError, match="the branches are main"):
            cache.snapshot(repo.url, "refs/heads/nope", ["a"])
        # Read with the commit, but refused only when it is read as text.
        snapshot = cache.snapshot(repo.url, "refs/heads/main", ["latin.yml"])
        with pytest.raises(CheckoutError, match=r"latin\.yml at [0-9a-f]+ in .* is not UTF-8 text"):
            snapshot.read_file("latin.yml")
        with pytest.raises(CheckoutError, match="contains a newline"):
            cache.snapshot(repo.url, "refs/heads/main", ["a\nb"])


class TestCheckout:
    def test_older_commit_gives_exactly_its_content(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "first\n", "gone-later": "x\n"})
        first = repo.head()
        repo.write("a", "second\n")
        repo.write("added-later", "y\n")
        (repo.path / "gone-later").unlink()
        repo.commit("second")
        dest = tmp_path / "ws"
        info = cache.checkout(repo.url, first, dest)
        assert info.sha == first
        assert (info.branch, info.tag) == (None, None)
        assert info.message == "initial commit"
        assert sorted(p.name for p in dest.iterdir()) == [".git", "a", "gone-later"]
        assert (dest / "a").read_text() == "first\n"
        assert git_in(dest, "rev-parse", "HEAD") == first
        assert git_in(dest, "status", "--porcelain") == ""

    def test_branch_checkout_is_detached_at_the_tip_and_names_the_branch(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        dest = tmp_path / "ws"
        info = cache.checkout(repo.url, "main", dest)
        assert (info.sha, info.branch, info.tag) == (repo.head(), "main", None)
        assert info.author == "Ada Tester <ada@example.test>"
        detached = subprocess.run(
            ["git", "symbolic-ref", "-q", "HEAD"], cwd=dest, capture_output=True
        )
        assert detached.returncode == 1
        assert git_in(dest, "remote", "get-url", "origin") == repo.url

    def test_head_checkout_names_the_default_branch(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"}, branch="trunk")
        info = cache.checkout(repo.url, "HEAD", tmp_path / "ws")
        assert (info.sha, info.branch, info.tag) == (repo.head(), "trunk", None)

    def test_tag_checkout_names_the_tag(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        repo.git("tag", "-a", "v2", "-m", "release")
        info = cache.checkout(repo.url, "refs/tags/v2", tmp_path / "ws")
        assert (info.sha, info.branch, info.tag) == (repo.head(), None, "v2")

    def test_workspace_sees_the_latest_push(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        cache.checkout(repo.url, "main", tmp_path / "ws1")
        repo.write("a", "2")
        repo.commit("pushed later")
        cache.checkout(repo.url, "main", tmp_path / "ws2")
        assert (tmp_path / "ws1" / "a").read_text() == "1"
        assert (tmp_path / "ws2" / "a").read_text() == "2"

    def test_workspace_has_the_refs_and_config_of_a_shared_clone(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        repo.git("tag", "-a", "v1", "-m", "annotated")
        repo.git("tag", "v1-light")
        repo.git("branch", "feature")
        dest = tmp_path / "ws"
        cache.checkout(repo.url, "main", dest)
        clone = tmp_path / "clone"
        mirror = str(cache.mirror_path(repo.url))
        git_in(tmp_path, "clone", "-q", "--shared", "--no-checkout", mirror, str(clone))
        git_in(clone, "remote", "set-url", "origin", repo.url)
        refs = ["for-each-ref", "--format=%(objectname) %(refname) %(*objectname) %(symref)"]
        assert git_in(dest, *refs) == git_in(clone, *refs)
        local_config = ["config", "--local", "--get-regexp", "^(remote|branch)[.]"]
        assert git_in(dest, *local_config) == git_in(clone, *local_config)
        assert git_in(dest, "describe", "--tags") == "v1"
        assert (dest / ".git/objects/info/alternates").read_text().strip() == f"{mirror}/objects"

    def test_origin_url_with_quotes_and_backslashes_is_kept_exactly(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        odd = tmp_path / 'we"ird\\dir' / "r.git"
        odd.parent.mkdir()
        git_in(tmp_path, "clone", "-q", "--bare", str(repo.path), str(odd))
        dest = tmp_path / "ws"
        cache.checkout(str(odd), "main", dest)
        assert git_in(dest, "remote", "get-url", "origin") == str(odd)
        git_in(dest, "fetch", "-q", "origin")

    def test_commit_facts_match_git_show_for_another_encoding_and_zone(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        (tmp_path / "msg").write_bytes("Caf\u00e9 subject\n\nbody\n".encode("latin-1"))
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "J\u00e9r\u00f4me".encode("latin-1").decode(
                "utf-8", "surrogateescape"
            ),
            "GIT_COMMITTER_DATE": "2023-05-01T10:00:00+0530",
        }
        subprocess.run(
            ["git", "-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "--allow-empty",
             "-F", str(tmp_path / "msg")],
            cwd=repo.path, env=env, check=True,
        )  # fmt: skip
        info = cache.checkout(repo.url, "main", tmp_path / "ws")
        shown = git_in(repo.path, "show", "-s", "--format=%an%n%cI%n%B", "HEAD").split("\n", 2)
        assert info.author_name == shown[0] == "J\u00e9r\u00f4me"
        assert info.committed_at == datetime.fromisoformat(shown[1])
        assert info.committed_at.utcoffset() is not None
        assert info.message == shown[2].rstrip("\n") == "Caf\u00e9 subject\n\nbody"

    def test_unknown_ref_leaves_no_workspace(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        with pytest.raises(CheckoutError, match="the branches are main"):
            cache.checkout(repo.url, "nope", tmp_path / "ws")
        assert not (tmp_path / "ws").exists()

    def test_non_empty_destination_raises(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1"})
        dest = tmp_path / "ws"
        dest.mkdir()
        (dest / "old").write_text("x")
        with pytest.raises(CheckoutError, match="not an empty directory"):
            cache.checkout(repo.url, "main", dest)


class TestCheckoutCommit:
    """`checkout_commit`: the agent's checkout of a sha the server resolved."""

    def test_a_commit_the_mirror_holds_needs_no_fetch(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1\n"})
        sha = repo.head()
        cache.update(repo.url)
        # The origin is gone: only the mirror can give the commit now.
        repo.path.rename(tmp_path / "moved-away")
        cache.checkout_commit(repo.url, sha, tmp_path / "ws")
        assert git_in(tmp_path / "ws", "rev-parse", "HEAD") == sha
        assert (tmp_path / "ws" / "a").read_text() == "1\n"
        assert git_in(tmp_path / "ws", "status", "--porcelain") == ""

    def test_without_a_mirror_it_is_cloned_first(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1\n"})
        cache.checkout_commit(repo.url, repo.head(), tmp_path / "ws")
        assert git_in(tmp_path / "ws", "rev-parse", "HEAD") == repo.head()

    def test_a_commit_pushed_after_the_last_update_is_fetched(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1\n"})
        cache.update(repo.url)
        repo.write("a", "2\n")
        sha = repo.commit("second")
        cache.checkout_commit(repo.url, sha, tmp_path / "ws")
        assert (tmp_path / "ws" / "a").read_text() == "2\n"
        # Like `checkout`: the workspace's origin/main is the mirror's, now fetched.
        assert git_in(tmp_path / "ws", "rev-parse", "origin/main") == sha

    def test_a_commit_the_repository_lacks_raises_and_leaves_no_workspace(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1\n"})
        cache.update(repo.url)
        with pytest.raises(CheckoutError, match=f"commit {'f' * 40} is not in"):
            cache.checkout_commit(repo.url, "f" * 40, tmp_path / "ws")
        assert not (tmp_path / "ws").exists()

    def test_the_workspace_repository_is_what_git_init_makes_and_checks_clean(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1\n", "bin/run": "#!/bin/sh\n"})
        cache.checkout_commit(repo.url, repo.head(), tmp_path / "ws")
        made = tmp_path / "made"
        git_in(tmp_path, "init", "-q", "--template=", "--initial-branch=main", str(made))
        core = ["config", "--local", "--get-regexp", "^core[.]"]
        assert git_in(tmp_path / "ws", *core) == git_in(made, *core)
        layout = {p.relative_to(made / ".git") for p in (made / ".git").rglob("*")}
        ws_layout = {p.relative_to(tmp_path / "ws/.git") for p in (tmp_path / "ws/.git").rglob("*")}
        assert layout <= ws_layout
        git_in(tmp_path / "ws", "fsck", "--no-progress")
        assert git_in(tmp_path / "ws", "status", "--porcelain") == ""
        git_in(tmp_path / "ws", "switch", "-q", "main")  # the default branch is there too

    def test_new_branches_reach_workspaces_made_after_a_fetch(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1\n"})
        first = repo.head()
        cache.checkout_commit(repo.url, first, tmp_path / "ws1")
        assert (cache.mirror_path(repo.url) / "conveyor-refs").is_file()  # listed once, kept
        repo.git("branch", "feature")
        repo.git("tag", "v2")
        repo.write("a", "2\n")
        second = repo.commit("second")
        cache.checkout_commit(repo.url, second, tmp_path / "ws2")  # fetches
        cache.checkout_commit(repo.url, first, tmp_path / "ws3")  # no fetch needed
        for ws in ("ws2", "ws3"):
            assert git_in(tmp_path / ws, "rev-parse", "origin/feature") == first
            assert git_in(tmp_path / ws, "rev-parse", "v2") == first
            assert git_in(tmp_path / ws, "rev-parse", "origin/main") == second
        assert "origin/feature" not in git_in(tmp_path / "ws1", "branch", "-r")

    def test_an_abbreviated_sha_is_refused(
        self, make_repo: MakeRepo, cache: MirrorCache, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "1\n"})
        with pytest.raises(CheckoutError, match="not a full commit sha"):
            cache.checkout_commit(repo.url, repo.head()[:12], tmp_path / "ws")


class TestRemoteHeads:
    def test_lists_branches_and_tags_with_commit_shas(
        self, make_repo: MakeRepo, cache: MirrorCache
    ) -> None:
        repo = make_repo({"a": "1"})
        first = repo.head()
        repo.git("tag", "-a", "v1", "-m", "annotated")
        repo.git("tag", "light")
        repo.git("branch", "dev")
        repo.write("a", "2")
        second = repo.commit("second")
        assert cache.remote_heads(repo.url) == {
            "refs/heads/main": second,
            "refs/heads/dev": first,
            "refs/tags/v1": first,
            "refs/tags/light": first,
        }

    def test_missing_repository_raises(self, cache: MirrorCache, tmp_path: Path) -> None:
        with pytest.raises(CheckoutError, match="check that the URL is right"):
            cache.remote_heads((tmp_path / "nothing").as_uri())


class TestOverHttp:
    def test_mirror_resolve_and_checkout_from_loopback_http(
        self, make_repo: MakeRepo, cache: MirrorCache, git_http_server: str, tmp_path: Path
    ) -> None:
        repo = make_repo({"a": "over http\n"})
        url = f"{git_http_server}/{repo.path.name}"
        mirror = cache.update(url)
        inode = mirror.stat().st_ino
        repo.write("a", "second over http\n")
        sha = repo.commit("second")
        assert cache.resolve(url, "main") == sha
        assert mirror.stat().st_ino == inode
        assert cache.remote_heads(url) == {"refs/heads/main": sha}
        info = cache.checkout(url, "main", tmp_path / "ws")
        assert info.sha == sha
        assert (tmp_path / "ws" / "a").read_text() == "second over http\n"

    def test_credentials_are_used_but_never_stored_in_the_mirror(
        self, make_repo: MakeRepo, cache: MirrorCache, git_http_server: str
    ) -> None:
        repo = make_repo({"a": "1"})
        url = git_http_server.replace("http://", "http://ci:s3cret@") + f"/{repo.path.name}"
        mirror = cache.update(url)
        cache.update(url)
        assert "s3cret" not in (mirror / "config").read_text()
        assert cache.resolve(url, "main", fetch=False) == repo.head()

    def test_repository_needing_credentials_fails_fast_without_a_prompt(
        self, cache: MirrorCache, git_http_server: str
    ) -> None:
        started = time.monotonic()
        with pytest.raises(CheckoutError, match="needs credentials"):
            cache.update(f"{git_http_server}/private/repo.git")
        assert time.monotonic() - started < 10

    def test_credentials_never_appear_in_errors_or_logs(
        self, cache: MirrorCache, git_http_server: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        url = git_http_server.replace("http://", "http://ci:s3cret@") + "/missing.git"
        caplog.set_level(logging.DEBUG, logger="conveyor")
        with pytest.raises(CheckoutError) as caught:
            cache.update(url)
        with pytest.raises(CheckoutError) as caught_listing:
            cache.remote_heads(url)
        for message in (str(caught.value), str(caught_listing.value)):
            assert "s3cret" not in message
            assert "http://***@127.0.0.1" in message
        assert caplog.records, "the git commands should have been logged"
        assert "s3cret" not in caplog.text


class TestRedactCredentials:
    def test_user_and_password_are_replaced(self) -> None:
        text = "fatal: unable to access 'https://user:tok3n@host/x.git/': 403"
        assert redact_credentials(text) == "fatal: unable to access 'https://***@host/x.git/': 403"

    def test_token_given_as_user_is_replaced(self) -> None:
        assert redact_credentials("https://ghp_abc@github.com/o/r") == "https://***@github.com/o/r"

    def test_urls_without_credentials_are_unchanged(self) -> None:
        text = "git@github.com:o/r.git and https://host/x and file:///tmp/a@b"
        assert redact_credentials(text) == text
