from __future__ import annotations

import pytest

from conveyor.pipeline.docker_args import parse_docker_args
from conveyor.pipeline.plan import ContainerOptions


def messages(args: str | list[str]) -> list[str]:
    return [problem.message for problem in parse_docker_args(args).problems]


class TestParseDockerArgs:
    def test_safe_flags_become_container_options(self) -> None:
        settings = parse_docker_args(
            "--memory=1g --cpus 2 --shm-size 256m --user 1000:1000 --pids-limit 200 "
            "--stop-timeout 15"
        )
        assert settings.problems == []
        assert settings.container == ContainerOptions(
            memory="1g",
            cpus=2.0,
            shm_size="256m",
            user="1000:1000",
            pids_limit=200,
            stop_timeout=15.0,
        )

    def test_short_spellings_are_understood(self) -> None:
        settings = parse_docker_args("-m 512m -u builder -e A=1 -eB=2 -w /src")
        assert settings.problems == []
        assert settings.container == ContainerOptions(memory="512m", user="builder")
        assert settings.env == {"A": "1", "B": "2"}

    def test_env_values_keep_quotes_and_equals_signs(self) -> None:
        settings = parse_docker_args("--env 'GREETING=hello world' --env URL=a=b")
        assert settings.env == {"GREETING": "hello world", "URL": "a=b"}

    def test_harmless_switches_are_ignored(self) -> None:
        settings = parse_docker_args("-it --rm --init --workdir /x")
        assert settings.problems == []
        assert settings.container == ContainerOptions()

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ("--privileged", "`--privileged` is refused: it gives the build root on the host"),
            (
                "-v /:/host",
                "`-v` is refused: it mounts host paths into the build; the workspace "
                "and output are mounted for you",
            ),
            (
                "--volume=/:/host",
                "`--volume` is refused: it mounts host paths into the build; "
                "the workspace and output are mounted for you",
            ),
            (
                "--mount type=bind,src=/,dst=/h",
                "`--mount` is refused: it mounts host paths into "
                "the build; the workspace and output are mounted for you",
            ),
            (
                "--net=host",
                "`--net` is refused: Conveyor sets the job's network itself (services, isolation)",
            ),
            (
                "--cap-add SYS_ADMIN",
                "`--cap-add` is refused: it grants kernel capabilities that "
                "let the build escape its container",
            ),
            ("--device /dev/sda", "`--device` is refused: it hands host devices to the build"),
            ("--pid host", "`--pid` is refused: it can share the host's processes with the build"),
            (
                "--ipc=host",
                "`--ipc` is refused: it can share the host's IPC namespace with the build",
            ),
            (
                "--security-opt seccomp=unconfined",
                "`--security-opt` is refused: it can switch off seccomp and AppArmor protection",
            ),
            ("--userns host", "`--userns` is refused: it can switch off user-namespace isolation"),
            (
                "--restart always",
                "`--restart` is refused: Conveyor only allows --memory, --cpus, "
                "--shm-size, --user, --pids-limit, --env, --workdir, --rm, --init and "
                "--stop-timeout",
            ),
        ],
    )
    def test_unsafe_flags_are_refused_with_the_reason(self, args: str, message: str) -> None:
        assert messages(args) == [message]

    def test_every_refused_flag_is_reported_and_safe_ones_still_kept(self) -> None:
        settings = parse_docker_args("--privileged --memory 1g -p 80:80")
        assert [p.message.split(" is refused")[0] for p in settings.problems] == [
            "`--privileged`",
            "`-p`",
        ]
        assert settings.container.memory == "1g"

    def test_positional_argument_is_refused(self) -> None:
        assert messages("--rm ubuntu") == [
            "unexpected argument `ubuntu`: only flags go in docker args (the image is "
            "`docker.image`)"
        ]

    def test_env_without_value_would_leak_the_host_variable(self) -> None:
        assert messages("-e HOME") == [
            "`-e HOME` would pass a variable of the agent's host; give the value: `-e HOME=...`"
        ]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ("--memory lots", "`--memory` needs a size such as 512m or 2g, found 'lots'"),
            ("--cpus 0", "`--cpus` needs a number of CPUs above zero such as 1.5, found '0'"),
            (
                "--pids-limit many",
                "`--pids-limit` needs a whole number (or -1 for no limit), found 'many'",
            ),
            ("--stop-timeout 1m", "`--stop-timeout` needs a whole number of seconds, found '1m'"),
            ("--user 'a b'", "`--user` needs a user such as 1000 or builder:builder, found 'a b'"),
            ("--memory", "`--memory` needs a value"),
        ],
    )
    def test_bad_values_of_safe_flags_are_errors(self, args: str, message: str) -> None:
        assert messages(args) == [message]

    def test_list_items_are_tracked_for_placement(self) -> None:
        settings = parse_docker_args(["--rm", "--memory 1g", "--privileged"])
        assert [problem.token_index for problem in settings.problems] == [2]
        assert settings.container.memory == "1g"

    def test_unclosed_quote_is_an_error(self) -> None:
        assert messages("--env 'A=b") == ['cannot split "--env \'A=b": No closing quotation']
