from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor.pipeline import PipelineNotFoundError, TriggerContext
from conveyor.pipeline.plan import JobPlan, StepKind, StepPlan
from conveyor.pipeline.zeroconfig import project_slug, zero_config_pipeline

Push = Callable[..., TriggerContext]
LOOKED_FOR = [".conveyor.yml", "pipeline.json"]


class TestZeroConfigPipeline:
    def test_build_script_wins_over_command_and_dockerfile(self, push_to: Push) -> None:
        files = {"ci_build.sh": "make", "Dockerfile": "FROM x"}
        pipeline = zero_config_pipeline(files.get, "npm run build", LOOKED_FOR)
        assert pipeline.source == "ci_build.sh"
        assert pipeline.compile(push_to(default_image="img:1")).jobs == [
            JobPlan(
                name="build",
                image="img:1",
                steps=[StepPlan(name="build", commands=["sh ./ci_build.sh"])],
                source="ci_build.sh",
            )
        ]

    def test_build_command_wins_over_dockerfile(self, push_to: Push) -> None:
        files = {"Dockerfile": "FROM x"}
        pipeline = zero_config_pipeline(files.get, "npm ci && npm run build", LOOKED_FOR)
        [job] = pipeline.compile(push_to()).jobs
        assert job.source == "build_command"
        assert job.image is None
        assert job.steps == [StepPlan(name="build", commands=["npm ci && npm run build"])]

    def test_blank_build_command_does_not_count(self, push_to: Push) -> None:
        pipeline = zero_config_pipeline({"Dockerfile": "FROM x"}.get, "  ", LOOKED_FOR)
        assert pipeline.source == "Dockerfile"

    def test_dockerfile_becomes_an_image_build_tagged_with_project_and_commit(
        self, push_to: Push
    ) -> None:
        pipeline = zero_config_pipeline({"Dockerfile": "FROM x"}.get, None, LOOKED_FOR)
        [job] = pipeline.compile(push_to(project="My Web App")).jobs
        assert job.source == "Dockerfile"
        assert job.steps == [
            StepPlan(
                name="image",
                kind=StepKind.IMAGE_BUILD,
                dockerfile="Dockerfile",
                image_tag="conveyor/my-web-app:0123456789ab",
            )
        ]

    def test_nothing_found_lists_what_was_looked_for(self) -> None:
        with pytest.raises(PipelineNotFoundError) as caught:
            zero_config_pipeline({"README.md": "hi"}.get, None, LOOKED_FOR)
        assert str(caught.value) == (
            "no pipeline found: looked for a .conveyor.yml, a pipeline.json, a ci_build.sh, "
            "a build command or a Dockerfile; add one of them to the repository root "
            "(or set the project's build command)"
        )


class TestProjectSlug:
    @pytest.mark.parametrize(
        ("project", "slug"),
        [
            ("exampleProject", "exampleproject"),
            ("My Web App", "my-web-app"),
            ("team/service_1", "team-service_1"),
            ("--weird..name--", "weird-name"),
            ("!!!", "project"),
        ],
    )
    def test_makes_a_docker_repository_name(self, project: str, slug: str) -> None:
        assert project_slug(project) == slug
