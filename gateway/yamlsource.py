"""YAML that remembers where each key stood, so every config error names its line.

PyYAML silently keeps the last of two equal keys; a duplicate here is an error
reported at the later occurrence, as SPEC §1 asks.

A config is read from an SD card anyone can write and from the air (a fleet's
config/set), so the loader is bounded: the text's size, the nesting depth and
the number of values after aliases and merge keys are expanded (a few hundred
bytes of "billion laughs" would otherwise take gigabytes), and an alias may not
refer to the collection it stands in. Each breach is one problem with its line.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

# A real config is a few kilobytes and five levels deep; these leave room for
# hundreds of sensors while keeping a hostile file's cost to a fraction of a second.
MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_VALUES = 50_000  # scalars and collections, counting every expansion of an alias

Path_ = tuple[str | int, ...]


@dataclass
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


class LineMap:
    """Maps a key path to the 1-based line of that key (or list item)."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}

    def line_of(self, path: Path_) -> int:
        # An error on a missing or nested key points at the nearest enclosing key.
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return line
        return 1


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """PyYAML's problem, with where the construct it was reading began (an
    unclosed bracket is reported where parsing gave up, lines later)."""
    problem = getattr(exc, "problem", None) or str(exc)
    column = f" at column {exc.problem_mark.column + 1}" if getattr(exc, "problem_mark", None) else ""
    context, at = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    reason = problem + column
    if context and at:
        reason += f" ({context} from line {at.line + 1})"
    if "'\\t'" in problem:
        reason += "; indent with spaces, not tabs"
    return reason


class _LimitError(yaml.MarkedYAMLError):
    """A bound of this loader was reached (the problem names it)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer, counting depth and the values an alias expands to
    (the node builder below walks an aliased node once per reference)."""

    def __init__(self, text: str):
        super().__init__(text)
        self._depth = 0
        self._values = 0
        self._open: list[str | None] = []  # anchors of the collections being composed
        self._sizes: dict[str, int] = {}  # anchor -> values it expands to

    def _count(self, n: int, mark) -> None:
        self._values += n
        if self._values > MAX_VALUES:
            raise _LimitError(None, None, f"more than {MAX_VALUES} values once aliases and << merges are "
                              "expanded; write the sections out instead of nesting aliases", mark)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _LimitError(None, None, f"alias *{event.anchor} refers to the collection it is in", event.start_mark)
            self._count(self._sizes.get(event.anchor, 1), event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        before = self._values
        self._count(1, event.start_mark)
        self._depth += 1
        self._open.append(event.anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.pop()
        if event.anchor is not None:
            self._sizes[event.anchor] = self._values - before
        return node


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> str:
    return line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""


def _plain_words(exc: yaml.YAMLError, text: str) -> tuple[int, str] | None:
    """The indentation mistakes a technician makes, as (line, what to fix) instead of the
    parser's grammar ("expected <block end>", "mapping values are not allowed here")."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or ""
    if mark is None:
        return None
    lines = text.splitlines()
    n = min(mark.line, len(lines) - 1)
    if n < 0:
        return None
    above = next((i for i in range(n - 1, -1, -1) if _content(lines[i])), None)
    here, indent = n + 1, _indent(lines[n])
    if problem.startswith("expected <block end>"):
        where = f" (line {above + 1} starts at column {_indent(lines[above]) + 1})" if above is not None else ""
        return here, (f"line {here} is indented to column {indent + 1}, which lines up with no section above it"
                      f"{where}: the keys of one section start in the same column, and a list's '- ' items "
                      "one step under their key; indent with spaces")
    if problem.startswith("mapping values are not allowed") or problem.startswith("could not find expected ':'"):
        if above is not None and ":" not in _content(lines[above]) and not _content(lines[above]).startswith("-"):
            return above + 1, f"line {above + 1} has no ':' after its key: write key: value"
        if above is not None and indent > _indent(lines[above]) and not _content(lines[above]).endswith(":"):
            return here, (f"line {here} is indented deeper than line {above + 1}, which already has a value: "
                          f"a key of the same section starts in the same column ({_indent(lines[above]) + 1}); "
                          "only the keys under a key without a value go one step deeper")
        return here, "a value with ': ' in it must be in quotes, e.g. name: \"a: b\""
    return None


def _compose(text: str, file: str) -> tuple[yaml.Node | None, list[Problem]]:
    if len(text) > MAX_BYTES:
        return None, [Problem(file, 1, "(file)", f"the config is larger than {MAX_BYTES // 1024} KiB")]
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node(), []
    except _LimitError as exc:
        return None, [Problem(file, exc.problem_mark.line + 1, "(yaml)", exc.problem)]
    except yaml.YAMLError as exc:
        plain = _plain_words(exc, text) if "'\\t'" not in str(exc) else None
        if plain is not None:
            return None, [Problem(file, plain[0], "(yaml)", f"not valid YAML: {plain[1]}")]
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        # "unexpected end of stream" points one past the last line; editors want a real line.
        line = min(mark.line + 1, len(text.splitlines()) or 1) if mark else 1
        return None, [Problem(file, line, "(yaml)", f"not valid YAML: {_yaml_reason(exc)}")]
    finally:
        loader.dispose()


def _scalar(constructor: yaml.SafeLoader, n: yaml.Node) -> object:
    try:
        return constructor.construct_object(n, deep=True)
    except (ValueError, OverflowError) as exc:
        # A date like 2001-13-45 or an integer of 5000 digits: PyYAML lets Python's error through.
        raise yaml.MarkedYAMLError(None, None, f"{n.value[:40]!r} cannot be read: {exc}", n.start_mark) from None


def load(text: str, file: str) -> tuple[object, LineMap, list[Problem]]:
    """Parse YAML text; returns (data, line map, problems). Data is None when unparsable."""
    lines = LineMap()
    problems: list[Problem] = []
    node, failed = _compose(text, file)
    if failed:
        return None, lines, failed
    if node is None:
        return {}, lines, []
    constructor = yaml.SafeLoader("")

    def build(n: yaml.Node, path: Path_) -> object:
        lines.lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict = {}
            merged: dict = {}
            for key_node, value_node in n.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *defaults` shares keys between sensors; keys written here win.
                    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    for source in sources:
                        value = build(source, path)
                        if not isinstance(value, dict):
                            problems.append(Problem(file, key_node.start_mark.line + 1, format_path(path),
                                                    "<< merges a mapping (an anchor like *defaults)"))
                            continue
                        for k, v in value.items():
                            merged.setdefault(k, v)
                    continue
                key = _scalar(constructor, key_node)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    problems.append(Problem(file, key_node.start_mark.line + 1, format_path(path), "keys must be plain names"))
                    continue
                key = str(key)
                child = path + (key,)
                if key in out:
                    problems.append(Problem(file, key_node.start_mark.line + 1, format_path(child), "duplicate key"))
                lines.lines[child] = key_node.start_mark.line + 1
                out[key] = build(value_node, child)
            for k, v in merged.items():
                out.setdefault(k, v)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        return _scalar(constructor, n)

    try:
        data = build(node, ())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        return None, lines, [Problem(file, mark.line + 1 if mark else 1, "(yaml)", f"not valid YAML: {reason}")]
    return data, lines, problems
