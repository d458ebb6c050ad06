"""AMS-Build's `docker.args`: `docker run` flags, of which only the safe ones are kept."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from conveyor.pipeline.plan import ContainerOptions

_SIZE = re.compile(r"\d+(?:\.\d+)?[bkmg]?", re.IGNORECASE)
_USER = re.compile(r"[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)?")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Flags that take a value, by every spelling, mapped to what they set.
_VALUE_FLAGS = {
    "--memory": "memory",
    "-m": "memory",
    "--cpus": "cpus",
    "--shm-size": "shm_size",
    "--user": "user",
    "-u": "user",
    "--pids-limit": "pids_limit",
    "--env": "env",
    "-e": "env",
    "--workdir": "workdir",
    "-w": "workdir",
    "--stop-timeout": "stop_timeout",
}
# Switches that are harmless and mean nothing for a step container: every step container
# is removed afterwards and gets an init, and there is no terminal (AMS-Build's own
# example uses `-it --rm`).
_IGNORED_SWITCHES = {"--rm", "--init", "-i", "--interactive", "-t", "--tty"}

_MOUNTS = "it mounts host paths into the build; the workspace and output are mounted for you"
_NETWORK = "Conveyor sets the job's network itself (services, isolation)"
_REFUSED_BECAUSE = {
    "--privileged": "it gives the build root on the host",
    "-v": _MOUNTS,
    "--volume": _MOUNTS,
    "--mount": _MOUNTS,
    "--volumes-from": _MOUNTS,
    "--network": _NETWORK,
    "--net": _NETWORK,
    "--network-alias": _NETWORK,
    "--link": _NETWORK,
    "--add-host": _NETWORK,
    "--dns": _NETWORK,
    "--ip": _NETWORK,
    "-p": "it opens ports on the agent's host",
    "--publish": "it opens ports on the agent's host",
    "-P": "it opens ports on the agent's host",
    "--publish-all": "it opens ports on the agent's host",
    "--cap-add": "it grants kernel capabilities that let the build escape its container",
    "--device": "it hands host devices to the build",
    "--device-cgroup-rule": "it hands host devices to the build",
    "--pid": "it can share the host's processes with the build",
    "--ipc": "it can share the host's IPC namespace with the build",
    "--uts": "it can share the host's hostname namespace with the build",
    "--userns": "it can switch off user-namespace isolation",
    "--security-opt": "it can switch off seccomp and AppArmor protection",
    "--cgroupns": "it can share the host's cgroups with the build",
    "--cgroup-parent": "it moves the build out of the agent's resource limits",
    "--name": "Conveyor names step containers itself",
    "--entrypoint": "the step's commands are what runs in the container",
    "--env-file": "it reads a file on the agent's host; use the `environment` section",
}
_ALLOWED = "--memory, --cpus, --shm-size, --user, --pids-limit, --env, --workdir, --rm, "
_ALLOWED += "--init and --stop-timeout"


@dataclass(frozen=True)
class DockerArgsProblem:
    token_index: int
    """Which item of a list of args it came from (0 when args is one string)."""
    message: str


@dataclass
class DockerRunSettings:
    """What the safe flags asked for."""

    container: ContainerOptions = field(default_factory=ContainerOptions)
    env: dict[str, str] = field(default_factory=dict)
    problems: list[DockerArgsProblem] = field(default_factory=list)


def parse_docker_args(args: str | list[str]) -> DockerRunSettings:
    """Read `docker run` flags; keep the safe ones and describe every refused one."""
    pieces = [args] if isinstance(args, str) else args
    tokens: list[tuple[int, str]] = []
    result = DockerRunSettings()
    for index, piece in enumerate(pieces):
        try:
            tokens.extend((index, token) for token in shlex.split(piece))
        except ValueError as error:
            result.problems.append(DockerArgsProblem(index, f"cannot split {piece!r}: {error}"))
    options: dict[str, object] = {}
    position = 0
    while position < len(tokens):
        index, token = tokens[position]
        position += 1
        flag, value = _split_flag(token)
        if flag in _IGNORED_SWITCHES or _is_combined_switches(token):
            continue
        if flag not in _VALUE_FLAGS:
            if not flag.startswith("-"):
                result.problems.append(
                    DockerArgsProblem(
                        index,
                        f"unexpected argument `{token}`: only flags go in docker args "
                        "(the image is `docker.image`)",
                    )
                )
                continue
            reason = _REFUSED_BECAUSE.get(flag, f"Conveyor only allows {_ALLOWED}")
            result.problems.append(DockerArgsProblem(index, f"`{flag}` is refused: {reason}"))
            # Skip the refused flag's value so it is not reported as a second problem.
            if value is None and position < len(tokens) and not tokens[position][1].startswith("-"):
                position += 1
            continue
        if value is None:
            if position >= len(tokens):
                result.problems.append(DockerArgsProblem(index, f"`{flag}` needs a value"))
                continue
            value = tokens[position][1]
            position += 1
        message = _apply(_VALUE_FLAGS[flag], flag, value, options, result.env)
        if message:
            result.problems.append(DockerArgsProblem(index, message))
    result.container = ContainerOptions.model_validate(options)
    return result


def _split_flag(token: str) -> tuple[str, str | None]:
    """`--memory=1g` -> (`--memory`, `1g`); `-m1g` -> (`-m`, `1g`); `--rm` -> (`--rm`, None)."""
    if token.startswith("--"):
        flag, equals, value = token.partition("=")
        return flag, value if equals else None
    if token.startswith("-") and len(token) > 2:
        short = token[:2]
        if short in _VALUE_FLAGS or short in _REFUSED_BECAUSE:
            return short, token[2:].removeprefix("=")
    return token, None


def _is_combined_switches(token: str) -> bool:
    """`-it`: several one-letter switches written together."""
    return (
        len(token) > 2
        and token[0] == "-"
        and token[1] != "-"
        and all(f"-{letter}" in _IGNORED_SWITCHES for letter in token[1:])
    )


def _apply(
    setting: str, flag: str, value: str, options: dict[str, object], env: dict[str, str]
) -> str | None:
    """Store one flag's value; return what is wrong with it, if anything."""
    if setting in ("memory", "shm_size"):
        if not _SIZE.fullmatch(value):
            return f"`{flag}` needs a size such as 512m or 2g, found {value!r}"
        options[setting] = value
    elif setting == "cpus":
        try:
            cpus = float(value)
        except ValueError:
            cpus = 0.0
        if not cpus > 0:
            return f"`{flag}` needs a number of CPUs above zero such as 1.5, found {value!r}"
        options["cpus"] = cpus
    elif setting == "user":
        if not _USER.fullmatch(value):
            return f"`{flag}` needs a user such as 1000 or builder:builder, found {value!r}"
        options["user"] = value
    elif setting == "pids_limit":
        if not re.fullmatch(r"-1|\d+", value):
            return f"`{flag}` needs a whole number (or -1 for no limit), found {value!r}"
        options["pids_limit"] = int(value)
    elif setting == "stop_timeout":
        if not value.isdigit():
            return f"`{flag}` needs a whole number of seconds, found {value!r}"
        options["stop_timeout"] = float(value)
    elif setting == "env":
        name, equals, variable = value.partition("=")
        if not equals:
            return (
                f"`{flag} {value}` would pass a variable of the agent's host; "
                f"give the value: `{flag} {value}=...`"
            )
        if not _VARIABLE_NAME.fullmatch(name):
            return f"`{flag}` needs NAME=value with a name of letters, digits and _, found {name!r}"
        env[name] = variable
    # `--workdir` is accepted and dropped: steps always start in the workspace.
    return None
