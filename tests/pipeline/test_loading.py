"""load_pipeline reading real git repositories at an exact commit (`git show sha:path`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from conveyor.pipeline import (
    PipelineError,
    PipelineNotFoundError,
    TriggerContext,
    load_pipeline,
)
from tests.fixtures.gitrepos import Repo

MakeRepo = Callable[..., Repo]
Push = Callable[..., TriggerContext]


def reader_at(repo: Repo, sha: str) -> Callable[[str], str | None]:
    """read_file for `repo` at commit `sha`: the file's text, None when it is absent."""

    def read_file(path: str) -> str | None:
        done = subprocess.run(
            ["git", "show", f"{sha}:{path}"],
            cwd=repo.path,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout if done.returncode == 0 else None

    return read_file


class TestLoadPipeline:
    def test_conveyor_yml_comes_first(self, make_repo: MakeRepo, push_to: Push) -> None:
        repo = make_repo(
            {
                ".conveyor.yml": "steps: [{name: test, commands: make test}]\n",
                "pipeline.json": '{"pipeline": [{"commands": "x"}]}',
                "ci_build.sh": "make",
            }
        )
        pipeline = load_pipeline(reader_at(repo, repo.head()))
        assert pipeline.source == ".conveyor.yml"
        [job] = pipeline.compile(push_to(commit_sha=repo.head())).jobs
        assert [step.name for step in job.steps] == ["test"]

    def test_custom_pipeline_path(self, make_repo: MakeRepo, push_to: Push) -> None:
        repo = make_repo({"ci/build.yml": "steps: [{commands: make}]\n"})
        pipeline = load_pipeline(reader_at(repo, repo.head()), pipeline_path="ci/build.yml")
        assert pipeline.source == "ci/build.yml"
        assert pipeline.compile(push_to()).jobs[0].source == "ci/build.yml"

    def test_pipeline_json_when_there_is_no_conveyor_yml(
        self, make_repo: MakeRepo, push_to: Push
    ) -> None:
        repo = make_repo({"pipeline.json": '{"pipeline": [{"name": "b", "commands": "x"}]}'})
        pipeline = load_pipeline(reader_at(repo, repo.head()), build_command="make")
        assert pipeline.source == "pipeline.json"
        assert pipeline.compile(push_to()).jobs[0].steps[0].name == "b"

    def test_zero_config_when_there_is_no_pipeline_file(
        self, make_repo: MakeRepo, push_to: Push
    ) -> None:
        repo = make_repo({"Dockerfile": "FROM scratch\n"})
        assert load_pipeline(reader_at(repo, repo.head())).source == "Dockerfile"
        assert load_pipeline(reader_at(repo, repo.head()), build_command="make").source == (
            "build_command"
        )

    def test_the_file_is_read_at_the_given_commit(self, make_repo: MakeRepo) -> None:
        repo = make_repo({".conveyor.yml": "steps: [{commands: old}]\n"})
        old = repo.head()
        repo.write(".conveyor.yml", "stpes: []\n")
        repo.commit("break the pipeline")
        assert load_pipeline(reader_at(repo, old)).source == ".conveyor.yml"
        with pytest.raises(PipelineError, match=r"^\.conveyor\.yml:1:1: steps: missing"):
            load_pipeline(reader_at(repo, repo.head()))

    def test_bad_pipeline_json_is_an_error_not_a_fallback(self, make_repo: MakeRepo) -> None:
        repo = make_repo({"pipeline.json": '{"pipeline": [', "ci_build.sh": "make"})
        with pytest.raises(PipelineError, match=r"^pipeline\.json:1:15: invalid JSON"):
            load_pipeline(reader_at(repo, repo.head()))

    def test_empty_repository_has_no_pipeline(self, make_repo: MakeRepo) -> None:
        repo = make_repo({"README.md": "hello\n"})
        with pytest.raises(PipelineNotFoundError, match=r"looked for a \.conveyor\.yml"):
            load_pipeline(reader_at(repo, repo.head()))
