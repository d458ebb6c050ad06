"""Projects of the systems Conveyor replaces run unchanged under `conveyor exec`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import py7zr

from tests.cli.test_exec import conveyor
from tests.fixtures.gitrepos import Repo


def ams_pipeline(image: str) -> str:
    return json.dumps(
        {
            "docker": {
                "image": image,
                "args": "-it --rm --memory 256m",
                "project-dest": "/root/project",
                "build-output-dest": "/root/output",
                "stop-timeout": 2,
            },
            "prepare-build": {
                "master-dir-commands": ["echo master-dir in $(pwd)"],
                "build-dir-commands": ["echo build-dir for {build_name}"],
            },
            "environment": {"TARGET": "{project}-{build_index}"},
            "pipeline": [
                {
                    "name": "build",
                    "commands": [
                        "echo building $TARGET",
                        "echo binary > {build_output_dest}/game.bin",
                        "echo BUILD SUCCEEDED",
                    ],
                    "exit-line": "BUILD SUCCEEDED",
                },
                {"name": "report", "commands": ["ls {project_dest}"]},
            ],
            "cleanup": {"remove_build_source": True, "7z_build": True, "7z_hash": "CRC64"},
        },
        indent=2,
    )


def seven_zip_hash(path: Path, algorithm: str) -> str:
    done = subprocess.run(
        ["7z", "h", f"-scrc{algorithm}", str(path)], capture_output=True, text=True, check=True
    )
    match = re.search(rf"{algorithm}\s+for data:\s+([0-9A-Fa-f]+)", done.stdout)
    assert match, done.stdout
    return match.group(1).lower()


class TestAmsBuildPipelineJson:
    def test_runs_in_docker_with_its_paths_and_7z_output_hashed_as_7zip_does(
        self, make_repo: Callable[..., Repo], busybox_image: str
    ) -> None:
        repo = make_repo({"pipeline.json": ams_pipeline(busybox_image), "src.txt": "code\n"})
        done = conveyor("exec", "-b", "docker", "--network", "none", cwd=repo.path)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "master-dir in /root/project" in out
        assert "building " in out and re.search(r"building \S+-1\b", out)
        assert "src.txt" in out  # the source is mounted at project-dest
        [archive] = list((repo.path / ".conveyor" / "artifacts").rglob("*.7z"))
        with py7zr.SevenZipFile(archive) as seven:
            assert seven.getnames() == ["game.bin"]
        crc64 = seven_zip_hash(archive, "CRC64")
        assert f"crc64:{crc64}" in out

    def test_exit_line_not_reached_fails_the_stage(
        self, make_repo: Callable[..., Repo], busybox_image: str
    ) -> None:
        pipeline = json.loads(ams_pipeline(busybox_image))
        pipeline["pipeline"][0]["commands"][-1] = "echo BUILD FAILED"
        repo = make_repo({"pipeline.json": json.dumps(pipeline)})
        done = conveyor("exec", "-b", "docker", "--network", "none", cwd=repo.path)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "'BUILD SUCCEEDED'" in done.stdout and "'BUILD FAILED'" in done.stdout

    def test_refused_docker_flag_is_an_error_naming_it(
        self, make_repo: Callable[..., Repo], busybox_image: str
    ) -> None:
        pipeline = json.loads(ams_pipeline(busybox_image))
        pipeline["docker"]["args"] = "--rm --privileged"
        repo = make_repo({"pipeline.json": json.dumps(pipeline, indent=2)})
        done = conveyor("exec", "-b", "docker", cwd=repo.path)
        assert done.returncode == 2
        assert re.search(r"pipeline\.json:\d+:\d+", done.stderr), done.stderr
        assert "--privileged" in done.stderr


class TestZeroConfig:
    def test_ci_build_sh_runs_when_there_is_no_pipeline_file(
        self, make_repo: Callable[..., Repo]
    ) -> None:
        repo = make_repo({"ci_build.sh": "echo from-ci-build-sh in $CI_PROJECT_NAME\n"})
        done = conveyor("exec", "-b", "local", cwd=repo.path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"from-ci-build-sh in {repo.path.name}" in done.stdout

    def test_dockerfile_is_built_into_an_image_tagged_for_project_and_commit(
        self, make_repo: Callable[..., Repo], busybox_image: str
    ) -> None:
        repo = make_repo(
            {
                "Dockerfile": f"FROM {busybox_image}\nCOPY hello.txt /hello.txt\n",
                "hello.txt": "hi\n",
            }
        )
        done = conveyor("exec", "-b", "docker", "--network", "none", cwd=repo.path)
        assert done.returncode == 0, done.stdout + done.stderr
        tag = f"conveyor/{repo.path.name}:{repo.head()[:12]}"
        try:
            shown = subprocess.run(
                ["docker", "run", "--rm", "--network", "none", tag, "cat", "/hello.txt"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert shown.stdout == "hi\n"
        finally:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)

    def test_nothing_to_run_is_an_error_listing_what_was_looked_for(
        self, make_repo: Callable[..., Repo]
    ) -> None:
        repo = make_repo({"README": "nothing\n"})
        done = conveyor("exec", "-b", "local", cwd=repo.path)
        assert done.returncode == 2
        for looked_for in (".conveyor.yml", "pipeline.json", "ci_build.sh", "Dockerfile"):
            assert looked_for in done.stderr
