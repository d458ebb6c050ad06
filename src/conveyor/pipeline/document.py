"""Parse YAML (and JSON) text into plain data while remembering where every value sits.

PyYAML's composer gives nodes with marks; we build the data ourselves from those nodes
so we can keep, for each field path, the line and column of its key and of its value,
and so we can refuse duplicate keys (PyYAML silently keeps the last one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from conveyor.pipeline.errors import PipelineError, Problem

FieldPath = tuple[str | int, ...]

# Aliases make a document a graph; past this many nodes it is an alias bomb, not a pipeline.
_MAX_NODES = 200_000


@dataclass(frozen=True)
class Position:
    """A place in a file; line and column count from 1."""

    line: int
    column: int


@dataclass(frozen=True)
class Placement:
    value: Position
    key: Position | None = None
    """Where the key of this mapping entry starts; None for list items and the root."""


@dataclass
class Document:
    """Plain data (dicts, lists, scalars) parsed from one file, with its placements."""

    file: str
    data: object
    placements: dict[FieldPath, Placement] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    """Problems the parser found without stopping (duplicate keys, odd keys)."""
    number_text: dict[FieldPath, str] = field(default_factory=dict)
    """Numbers as written (`3.10`, not 3.1), for fields that keep values as text."""

    def position_of(self, path: FieldPath, *, at_key: bool = False) -> Position:
        """Where `path` is, or where its nearest present parent is (for missing keys)."""
        for length in range(len(path), -1, -1):
            placement = self.placements.get(path[:length])
            if placement is None:
                continue
            if at_key and length == len(path) and placement.key is not None:
                return placement.key
            return placement.value
        return Position(1, 1)

    def problem(
        self,
        path: FieldPath,
        message: str = "",
        *,
        expected: str | None = None,
        found: str | None = None,
        at_key: bool = False,
    ) -> Problem:
        """A `Problem` placed at `path` in this document."""
        position = self.position_of(path, at_key=at_key)
        return Problem(
            file=self.file,
            line=position.line,
            column=position.column,
            path=format_path(path),
            message=message,
            expected=expected,
            found=found,
        )


def format_path(path: FieldPath) -> str:
    """`("steps", 2, "timeout")` -> `steps[2].timeout`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _position(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _syntax_problem(file: str, error: yaml.MarkedYAMLError, language: str) -> Problem:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or "cannot parse"
    context = error.context or ""
    if context and error.context_mark is not None and error.context_mark is not mark:
        context += f" at line {error.context_mark.line + 1}"
        context += f", column {error.context_mark.column + 1}"
    # PyYAML splits "expected X, but found Y" into a context and a problem.
    if problem.startswith("but ") and context:
        message = f"{context}, {problem}"
    else:
        message = f"{problem} ({context})" if context else problem
    return Problem(
        file=file,
        line=mark.line + 1 if mark else None,
        column=mark.column + 1 if mark else None,
        path="",
        message=f"invalid {language}: {message}",
    )


class _Builder:
    """Turns a composed node tree into plain data, recording placements and problems."""

    def __init__(self, loader: yaml.SafeLoader, document: Document) -> None:
        self._loader = loader
        self._document = document
        self._visited = 0
        self._open: set[int] = set()

    def build(self, node: Node, path: FieldPath, key_position: Position | None = None) -> object:
        self._visited += 1
        if self._visited > _MAX_NODES:
            raise PipelineError(
                [
                    self._document.problem(
                        path,
                        f"the document expands to more than {_MAX_NODES} values "
                        "(aliases repeated too often); write it out plainly",
                    )
                ]
            )
        self._document.placements[path] = Placement(_position(node.start_mark), key_position)
        if id(node) in self._open:
            self._document.problems.append(
                self._document.problem(path, "an alias refers to a node that contains it")
            )
            return None
        if isinstance(node, MappingNode):
            self._open.add(id(node))
            try:
                return self._build_mapping(node, path)
            finally:
                self._open.discard(id(node))
        if isinstance(node, SequenceNode):
            self._open.add(id(node))
            try:
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            finally:
                self._open.discard(id(node))
        try:
            value = self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as error:
            self._document.problems.append(_syntax_problem(self._document.file, error, "YAML"))
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._document.number_text[path] = str(node.value)
        return value

    def _build_mapping(self, node: MappingNode, path: FieldPath) -> dict[str, object]:
        first_seen: dict[str, Position] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, ScalarNode):
                continue
            key_position = _position(key_node.start_mark)
            earlier = first_seen.get(key_node.value)
            if earlier is None:
                first_seen[key_node.value] = key_position
                continue
            self._document.problems.append(
                Problem(
                    file=self._document.file,
                    line=key_position.line,
                    column=key_position.column,
                    path=format_path((*path, key_node.value)),
                    message=f"duplicate key `{key_node.value}` (first given at line "
                    f"{earlier.line}, column {earlier.column}); keep only one",
                )
            )
        # Merge keys (`<<: *defaults`) are resolved the way PyYAML does: merged entries
        # first, so the mapping's own keys override them.
        self._loader.flatten_mapping(node)
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._document.problems.append(
                    self._document.problem(
                        path,
                        f"a key at line {key_node.start_mark.line + 1} is a "
                        f"{'list' if isinstance(key_node, SequenceNode) else 'mapping'}; "
                        "keys must be plain names",
                    )
                )
                continue
            # Keys are names in every pipeline format, so they stay text: YAML 1.1
            # would turn `on:` or `ON:` into booleans and `1:` into numbers.
            key = str(key_node.value)
            result[key] = self.build(value_node, (*path, key), _position(key_node.start_mark))
        return result


def load_yaml(text: str, file: str) -> Document:
    """Parse YAML text; raises `PipelineError` on a syntax error."""
    text = text.removeprefix("\ufeff")
    loader = yaml.SafeLoader(text)
    document = Document(file=file, data=None)
    try:
        root = loader.get_single_node()
        if root is None:
            document.placements[()] = Placement(Position(1, 1))
            return document
        document.data = _Builder(loader, document).build(root, ())
    except yaml.MarkedYAMLError as error:
        raise PipelineError([_syntax_problem(file, error, "YAML")]) from None
    except yaml.YAMLError as error:
        raise PipelineError([Problem(file, None, None, "", f"invalid YAML: {error}")]) from None
    finally:
        loader.dispose()
    return document


def load_json(text: str, file: str) -> Document:
    """Parse JSON text strictly, with placements; raises `PipelineError` on a syntax error.

    The data comes from the `json` module (the authority on JSON); placements come from
    the YAML composer, which reads JSON too once tabs between tokens are made spaces
    (valid JSON has no raw tab inside strings, so columns stay the same).
    """
    text = text.removeprefix("\ufeff")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PipelineError(
            [Problem(file, error.lineno, error.colno, "", f"invalid JSON: {error.msg}")]
        ) from None
    try:
        document = load_yaml(text.replace("\t", " "), file)
    except PipelineError:
        # JSON that YAML 1.1 cannot read (rare corner cases): keep the data, place
        # every problem at the top of the file rather than nowhere.
        document = Document(file=file, data=None, placements={(): Placement(Position(1, 1))})
    document.data = data
    return document
