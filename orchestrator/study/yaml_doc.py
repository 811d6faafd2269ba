"""Safe YAML loading that remembers the line of every key, for error messages.

PyYAML follows YAML 1.1, where `1e-3` is a *string* (a float needs a dot). Researchers write
learning rates that way, so the loader also resolves exponent-only numbers as floats; without
this `lr: 1e-3` and `lr: 0.001` would hash to different trials.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import Problem, UserError


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _index_lines(node: yaml.Node, prefix: tuple, out: dict[tuple, int]) -> None:
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[prefix + (key,)] = key_node.start_mark.line + 1
            _index_lines(value_node, prefix + (key,), out)
            out[prefix + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, prefix + (i,), out)


class YamlDoc:
    """A parsed YAML document plus the line number of each key path."""

    def __init__(self, data: Any, lines: dict[tuple, int], file: str):
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, path: tuple) -> int | None:
        """Line of the deepest existing prefix of `path` (errors on missing keys point at the parent)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def load_yaml(path: str | Path, *, expect_mapping: bool = True) -> YamlDoc:
    """Load a YAML file safely; a syntax error becomes a one-line `UserError` with its line."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(Problem(file, "file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(Problem(file, f"cannot read file: {exc}")) from None
    return parse_yaml(text, file, expect_mapping=expect_mapping)


def parse_yaml(text: str, file: str, *, expect_mapping: bool = True) -> YamlDoc:
    """Parse YAML text; see `load_yaml`."""
    loader = _Loader(text)  # a SafeLoader: plain data only, never objects
    try:
        # one parse: compose the node tree (for line numbers), then construct the data from it
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        msg = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise UserError(Problem(file, f"invalid YAML: {msg}", line=line)) from None
    except yaml.YAMLError as exc:
        raise UserError(Problem(file, f"invalid YAML: {' '.join(str(exc).split())}")) from None
    finally:
        loader.dispose()
    if expect_mapping and not isinstance(data, dict):
        kind = "empty file" if data is None else f"a {type(data).__name__}"
        raise UserError(Problem(file, f"expected a mapping of keys at the top level, got {kind}", line=1))
    lines: dict[tuple, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return YamlDoc(data, lines, file)
