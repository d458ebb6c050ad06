"""Field types shared by the pipeline schemas, each with an author-friendly error."""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator

from conveyor.pipeline.durations import DURATION_EXAMPLES, parse_duration
from conveyor.pipeline.globs import GlobSyntaxError, compile_glob
from conveyor.pipeline.validation import did_you_mean, expected

EnumT = TypeVar("EnumT", bound=StrEnum)

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def one_or_list(what: str) -> Callable[[Any], list[Any]]:
    """A validator that accepts one item or a list of them (e.g. `branch: main`)."""

    def to_list(value: Any) -> list[Any]:
        if isinstance(value, list):
            return value
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return [value]
        raise expected(what)

    return to_list


def text(what: str) -> Callable[[Any], str]:
    """A validator for a non-empty string."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise expected(what)
        return value

    return check


def choice(enum: type[EnumT], what: str) -> Callable[[Any], EnumT]:
    """A validator for one value of `enum`, case-insensitive, with did-you-mean."""
    names = [member.value for member in enum]

    def check(value: Any) -> EnumT:
        if isinstance(value, str):
            for member in enum:
                if member.value == value.strip().lower():
                    return member
        hint = did_you_mean(value, names) if isinstance(value, str) else ""
        raise expected(f"{what}: one of {', '.join(names)}", hint=hint)

    return check


def _duration(value: Any) -> float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            return parse_duration(value)
        except ValueError:
            pass
    raise expected(DURATION_EXAMPLES)


def _glob(value: Any) -> str:
    if not isinstance(value, str):
        raise expected("a branch glob such as main or release/*")
    try:
        compile_glob(value)
    except GlobSyntaxError as error:
        raise expected(f"a branch glob such as main or release/* ({error})") from None
    return value


def _variable_name(value: Any) -> str:
    if not isinstance(value, str) or not _VARIABLE_NAME.fullmatch(value):
        raise expected("a variable name such as APP_ENV (letters, digits and _)")
    return value


def _variable_value(value: Any) -> str:
    # Booleans as shells and YAML authors write them, not Python's `True`.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise expected("a string, number or boolean")


def _mapping(what: str) -> Callable[[Any], dict[Any, Any]]:
    def check(value: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise expected(what)
        return value

    return check


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise expected("true or false")
    return value


Flag = Annotated[bool, BeforeValidator(_strict_bool)]
Name = Annotated[str, BeforeValidator(text("a name"))]
Image = Annotated[str, BeforeValidator(text("an image name such as debian:bookworm"))]
Command = Annotated[str, BeforeValidator(text("a command (a string)"))]
Commands = Annotated[list[Command], BeforeValidator(one_or_list("a command or a list of commands"))]
Duration = Annotated[float, BeforeValidator(_duration)]
Glob = Annotated[str, BeforeValidator(_glob)]
Globs = Annotated[list[Glob], BeforeValidator(one_or_list("a branch glob or a list of globs"))]
VariableName = Annotated[str, BeforeValidator(_variable_name)]
VariableValue = Annotated[str, BeforeValidator(_variable_value)]
Variables = Annotated[
    dict[VariableName, VariableValue],
    BeforeValidator(_mapping("a mapping of variable names to values")),
]
