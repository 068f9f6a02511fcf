"""Reading a spec file (YAML or JSON): errors name the file, the line and the field."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from openautoglm.common.spec.schema import SpecError, StudySpecModel, validate_dict


def load_spec_file(path: str | Path) -> StudySpecModel:
    """Read a YAML or JSON spec; errors name the file, the line and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError("spec", f"cannot read spec file: {err.strerror}", file=str(path)) from None
    return spec_from_text(text, file=str(path), relative_to_cwd=True)


def spec_from_text(text: str, file: str | None = None, relative_to_cwd: bool = False,
                   read_roots: Sequence[Path] | None = None, allow_aliases: bool = True) -> StudySpecModel:
    """Validate a spec's YAML/JSON text; a SpecError names the line and the field (and `file`).

    `relative_to_cwd`: make relative file paths absolute from here (a CLI user's own paths).
    `read_roots`: on a server, the only folders its paths may name. `allow_aliases=False` refuses
    YAML anchors and aliases: text from a browser, where a few nested aliases expand exponentially."""
    try:
        if not allow_aliases:
            for event in yaml.parse(text):
                if isinstance(event, yaml.AliasEvent):
                    mark = event.start_mark
                    raise SpecError("spec", "YAML aliases (*name) are not accepted here",
                                    line=mark.line + 1 if mark else None, file=file)
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise SpecError(
            "spec", f"not valid YAML/JSON: {getattr(err, 'problem', err)}",
            line=mark.line + 1 if mark else None, file=file,
        ) from None
    if relative_to_cwd:
        _absolute_paths(data)
    try:
        return validate_dict(data, read_roots=read_roots)
    except SpecError as err:
        err.file = file
        err.line = _line_of(root, getattr(err, "loc", ()))
        err.args = (str(SpecError(err.field, err.message, err.line, file)),)
        raise


def field_lines(text: str) -> dict[str, int]:
    """1-based line of every field of a YAML/JSON spec, by dotted path as errors name them
    ("budget.max_trials", "search_space.templates[0].text"); {} when the text does not parse."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}

    def walk(node: yaml.Node | None, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                lines[child] = item.start_mark.line + 1
                walk(item, child)

    walk(root, "")
    return lines


# The spec's file paths, as (section, key): the servers accept absolute paths only.
PATH_FIELDS = (("dataset", "path"), ("model", "path"), ("warm_start", "trials_path"))


def _absolute_paths(data: object) -> None:
    """Make the spec's relative file paths absolute (from the current directory, where the user
    runs the command), as the servers that read them need."""
    if not isinstance(data, dict):
        return
    for section, key in PATH_FIELDS:
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str) and part[key]:
            part[key] = os.path.abspath(os.path.expanduser(part[key]))


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the deepest YAML node along `loc` that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line
