"""`conveyor exec` as a user runs it: a real process on real git checkouts."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.gitrepos import Repo, git

PIPELINE = """\
image: {image}
env: {{GREETING: hello}}
steps:
  - name: hello
    commands:
      - echo "$GREETING from $CI_COMMIT_BRANCH at $CI_COMMIT_SHA"
      - printf '\\033[31mred\\033[0m\\n'
  - name: build
    commands: ["mkdir -p dist", "cat wip.txt > dist/out.txt", 'echo "token=$TOKEN"']
    secrets: [TOKEN]
artifacts: {{paths: ["dist/**"], archive: zip, hash: sha256}}
"""


def conveyor(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_conveyor(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never printed; got:\n{''.join(seen)}")


@pytest.fixture
def project(make_repo: Callable[..., Repo]) -> Callable[[str], Repo]:
    def make(image: str = "unused") -> Repo:
        repo = make_repo({".conveyor.yml": PIPELINE.format(image=image), "README": "x\n"})
        repo.write("wip.txt", "uncommitted work\n")
        return repo

    return make


class TestExecLocal:
    def test_runs_the_working_tree_and_never_touches_the_checkout(
        self, project: Callable[[str], Repo]
    ) -> None:
        repo = project("unused")
        before = repo.git("status", "--porcelain")
        done = conveyor(
            "exec", "--backend", "local", "--secret", "TOKEN=s3cr3t-t0ken", cwd=repo.path
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert f"hello from main at {repo.head()}" in out
        assert "\x1b[31mred\x1b[0m" in out  # colours kept
        assert "token=********" in out and "s3cr3t-t0ken" not in out
        assert "step 1/2: hello" in out and "step 2/2: build" in out
        assert "┃ status" in out  # the closing table
        # Artifacts land in ./.conveyor/artifacts, with the hash printed.
        [archive] = list((repo.path / ".conveyor" / "artifacts").rglob("*.zip"))
        assert hashlib.sha256(archive.read_bytes()).hexdigest() in out
        # The checkout is as it was (besides the artifacts directory).
        after = repo.git("status", "--porcelain")
        assert after.replace("?? .conveyor/\n", "").replace("?? .conveyor/", "") == before
        assert not (repo.path / "dist").exists()

    def test_secret_from_the_environment(self, project: Callable[[str], Repo]) -> None:
        repo = project("unused")
        done = conveyor(
            "exec", "-b", "local", cwd=repo.path, env={"CONVEYOR_SECRET_TOKEN": "from-env-123"}
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "token=********" in done.stdout
        assert "from-env-123" not in done.stdout

    def test_failure_exits_1(self, make_repo: Callable[..., Repo]) -> None:
        repo = make_repo({".conveyor.yml": "steps: [{name: t, commands: [exit 5]}]\n"})
        done = conveyor("exec", "-b", "local", cwd=repo.path)
        assert done.returncode == 1
        assert "exited with code 5" in done.stdout

    def test_unreadable_pipeline_exits_2_naming_file_line_column(
        self, make_repo: Callable[..., Repo]
    ) -> None:
        repo = make_repo({".conveyor.yml": "steps:\n  - name: t\n    comands: [true]\n"})
        done = conveyor("exec", "-b", "local", cwd=repo.path)
        assert done.returncode == 2
        assert ".conveyor.yml:3:5" in done.stderr
        assert "commands" in done.stderr  # did you mean

    def test_not_a_checkout_exits_2(self, tmp_path: Path) -> None:
        done = conveyor("exec", "-b", "local", cwd=tmp_path)
        assert done.returncode == 2
        assert "git" in done.stderr

    def test_ctrl_c_cancels_exits_130_and_leaves_no_process(
        self, make_repo: Callable[..., Repo]
    ) -> None:
        marker = f"sleep 34{uuid.uuid4().int % 1000:03d}"
        repo = make_repo(
            {".conveyor.yml": f"steps: [{{name: long, commands: ['echo go', '{marker}']}}]\n"}
        )
        proc = start_conveyor("exec", "-b", "local", "--grace", "2", cwd=repo.path)
        wait_for_line(proc, "go")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, rest
        assert "cancelled" in rest
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert marker not in ps

    def test_zero_config_build_command(self, make_repo: Callable[..., Repo]) -> None:
        repo = make_repo({"Makefile": "all:\n\techo made\n"})
        done = conveyor("exec", "-b", "local", "--build-command", "echo built-it", cwd=repo.path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "built-it" in done.stdout


class TestExecRemote:
    def test_repo_at_ref_through_the_mirror_cache(
        self, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        repo = make_repo({".conveyor.yml": "steps: [{name: v, commands: [cat version]}]\n"})
        repo.write("version", "one\n")
        first = repo.commit("one")
        git(repo.path, "tag", "v1")
        repo.write("version", "two\n")
        repo.commit("two")
        cache = tmp_path / "cache"
        work = tmp_path / "elsewhere"
        work.mkdir()
        args = ["exec", "-b", "local", "--repo", repo.url, "--cache-dir", str(cache)]
        done = conveyor(*args, "--ref", "v1", cwd=work)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "\none\n" in done.stdout and first[:12] in done.stdout
        mirror = next((cache / "mirrors").iterdir())
        inode = mirror.stat().st_ino
        repo.write("version", "three\n")
        repo.commit("three")
        done = conveyor(*args, "--ref", "main", cwd=work)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "\nthree\n" in done.stdout
        assert mirror.stat().st_ino == inode  # fetched into the same mirror, not re-cloned

    def test_unknown_ref_exits_2_and_lists_branches(
        self, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        repo = make_repo({".conveyor.yml": "steps: [{name: v, commands: [true]}]\n"})
        done = conveyor(
            "exec", "-b", "local", "--repo", repo.url, "--ref", "nope",
            "--cache-dir", str(tmp_path / "c"), cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 2
        assert "nope" in done.stderr and "main" in done.stderr


@pytest.mark.usefixtures("busybox_image")
class TestExecDocker:
    def test_steps_run_in_containers_with_artifacts(
        self, project: Callable[[str], Repo], busybox_image: str
    ) -> None:
        repo = project(busybox_image)
        done = conveyor(
            "exec", "-b", "docker", "--network", "job", "-s", "TOKEN=abcd1234", cwd=repo.path
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"hello from main at {repo.head()}" in done.stdout
        assert "token=********" in done.stdout
        [archive] = list((repo.path / ".conveyor" / "artifacts").rglob("*.zip"))
        assert hashlib.sha256(archive.read_bytes()).hexdigest() in done.stdout

    def test_ctrl_c_stops_the_container_and_leaves_nothing(
        self, make_repo: Callable[..., Repo], busybox_image: str
    ) -> None:
        repo = make_repo(
            {
                ".conveyor.yml": f"image: {busybox_image}\n"
                "steps: [{name: long, commands: ['echo go', 'sleep 300']}]\n"
            }
        )
        proc = start_conveyor(
            "exec", "-b", "docker", "--network", "job", "--grace", "1", cwd=repo.path
        )
        wait_for_line(proc, "go")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, rest
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=conveyor.job"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert left == []

    def test_missing_image_is_an_error_with_advice(self, make_repo: Callable[..., Repo]) -> None:
        pipeline = "image: conveyor-test/not-here:1\nsteps: [{name: s, commands: [ls]}]\n"
        repo = make_repo({".conveyor.yml": pipeline})
        done = conveyor("exec", "-b", "docker", "--network", "none", cwd=repo.path)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "conveyor-test/not-here:1" in done.stdout
        assert "change `image:` in .conveyor.yml" in done.stdout


# Run as `python -m conveyor` is, reporting at exit which modules of the server the
# process had imported.
REPORT_SERVER_MODULES = """\
import atexit, pathlib, sys
report = pathlib.Path(sys.argv.pop(1))
atexit.register(lambda: report.write_text(
    "\\n".join(m for m in sys.modules if m == "conveyor.server" or m.startswith("conveyor.server."))
))
from conveyor.cli.main import app
app(prog_name="conveyor")
"""


class TestExecImports:
    def test_a_run_never_imports_the_server(
        self, make_repo: Callable[..., Repo], tmp_path: Path
    ) -> None:
        # `conveyor exec` runs on developers' machines: the server (FastAPI, the
        # database layer, the models) is weight it must not carry, nor break with.
        repo = make_repo({".conveyor.yml": "steps: [{name: t, commands: ['true']}]\n"})
        report = tmp_path / "server-modules.txt"
        done = subprocess.run(
            [sys.executable, "-c", REPORT_SERVER_MODULES, str(report), "exec", "-b", "local"],
            cwd=repo.path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "step 1/1: t" in done.stdout
        assert report.read_text() == ""
