"""Validate a `Document` with a pydantic model and turn its errors into placed `Problem`s."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from conveyor.pipeline.document import Document, FieldPath
from conveyor.pipeline.errors import Problem

ModelT = TypeVar("ModelT", bound=BaseModel)

_EXPECTED = "conveyor_expected"

# What pydantic's own error types mean, said the way a pipeline author thinks.
_EXPECTED_BY_TYPE = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "string_too_short": "a non-empty string",
    "too_short": "a non-empty list",
}


def expected(what: str, *, hint: str = "") -> PydanticCustomError:
    """The error a validator raises when a value is not `what` (e.g. "a duration")."""
    return PydanticCustomError(_EXPECTED, "expected {expected}", {"expected": what, "hint": hint})


def render_found(value: object) -> str:
    """A value as the author wrote it, short: `"ten minutes"`, `5`, `true`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    return f"a {type(value).__name__}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`did you mean `steps`?` when a candidate is close to `word`, else ""."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


def validate_document(
    model: type[ModelT], document: Document
) -> tuple[ModelT | None, list[Problem]]:
    """The validated model (None if invalid) and every problem found in the document."""
    problems = list(document.problems)
    try:
        validated = model.model_validate(document.data)
    except ValidationError as error:
        problems.extend(_problem(detail, model, document) for detail in error.errors())
        return None, problems
    return (None if problems else validated), problems


def _problem(detail: ErrorDetails, model: type[BaseModel], document: Document) -> Problem:
    loc = detail["loc"]
    path: FieldPath = tuple(part for part in loc if part != "[key]")
    at_key = "[key]" in loc
    kind = detail["type"]
    value = detail.get("input")
    context: dict[str, Any] = dict(detail.get("ctx") or {})
    if kind == "extra_forbidden":
        name = str(path[-1])
        message = f"unknown key `{name}`"
        hint = did_you_mean(name, _allowed_keys(model, path[:-1]))
        if hint:
            message += f", {hint}"
        return document.problem(path, message, at_key=True)
    if kind == "missing":
        return document.problem(path, f"missing required key `{path[-1]}`")
    if kind == _EXPECTED:
        problem = document.problem(
            path,
            expected=str(context["expected"]),
            found=render_found(value),
            at_key=at_key,
        )
        hint = str(context.get("hint") or "")
        if hint:
            problem = dataclasses.replace(problem, found=f"{problem.found}; {hint}")
        return problem
    if kind == "value_error":
        # A plain ValueError from a validator: its message already says what and how.
        return document.problem(path, str(context.get("error", detail["msg"])), at_key=at_key)
    what = _EXPECTED_BY_TYPE.get(kind)
    if what is None:
        return document.problem(path, detail["msg"], found=render_found(value), at_key=at_key)
    return document.problem(path, expected=what, found=render_found(value), at_key=at_key)


def _allowed_keys(model: type[BaseModel], path: FieldPath) -> list[str]:
    """The keys the model accepts at `path`, for did-you-mean suggestions."""
    annotation: Any = model
    for part in path:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = next(
                (
                    info
                    for name, info in annotation.model_fields.items()
                    if part in (name, info.alias)
                ),
                None,
            )
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `X | None` down to the type that holds keys."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            choices = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = choices[0]
        else:
            return annotation
