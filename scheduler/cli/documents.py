"""Reading and writing JSON or YAML documents; every failure becomes one UserError line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from scheduler.errors import UserError
from scheduler.model.limits import MAX_DEPTH, MAX_DOCUMENT_BYTES

STDIN = "-"


_MERGE = "tag:yaml.org,2002:merge"
# Aliases may repeat what they name (merge keys, `<<: *defaults`), but not multiply a small
# file into billions of values: at most this many values per value written, past a floor.
_ALIAS_GROWTH, _ALIAS_FLOOR = 10, 100_000


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings (the snapshot's times are RFC 3339 text),
    refuses a key given twice in one mapping (the last would silently win), nesting deeper
    than MAX_DEPTH (the composer recurses once per level) and aliases that expand a document
    without bound (a "billion laughs")."""

    depth = 0
    written = 0  # nodes composed from the text
    sizes: dict[int, int]  # id(node) -> values it expands to, aliases followed

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.depth == 0 and self.written == 0:
            self.sizes = {}
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self._refused(f"nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if id(node) not in self.sizes:  # written here, not an alias to an earlier node
            self.written += 1
            kids = node.value if isinstance(node.value, list) else []
            flat = [n for kid in kids for n in (kid if isinstance(kid, tuple) else (kid,))]
            self.sizes[id(node)] = 1 + sum(self.sizes[id(n)] for n in flat)
            if self.sizes[id(node)] > _ALIAS_GROWTH * self.written + _ALIAS_FLOOR:
                raise self._refused("aliases expand it far beyond what is written")
        return node

    def _refused(self, why: str) -> yaml.composer.ComposerError:
        return yaml.composer.ComposerError(None, None, why, self.peek_event().start_mark)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<`: merged keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_text(path: str) -> str:
    if path == STDIN:
        if sys.stdin is None:  # started with standard input closed (`<&-`)
            raise UserError("standard input is closed", "pipe the document in, or give a file")
        return _decoded(_bounded(sys.stdin.buffer, "<stdin>"), "<stdin>")
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = _bounded(f, path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file", "check the path") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory", "give the path of a file") from None
    except OSError as e:
        raise UserError(
            f"{path}: cannot read ({e.strerror})", "check the path and its permissions"
        ) from None
    return _decoded(raw, path)


def _bounded(stream: Any, path: str) -> bytes:
    raw: bytes = stream.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise UserError(
            f"{path}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB, the limit for a document",
            "split the cluster, or trim the file",
        )
    return raw


def _decoded(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text", "give a JSON or YAML file") from None


def parse(text: str, path: str) -> Any:
    """JSON for .json files and text that starts like JSON; YAML otherwise."""
    suffix = Path(path).suffix.lower()
    looks_json = text.lstrip()[:1] in ("{", "[")
    if suffix == ".json" or (suffix not in (".yaml", ".yml") and looks_json):
        return _parse_json(text, path)
    return _parse_yaml(text, path)


def _parse_json(text: str, path: str) -> Any:
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}", "fix the JSON syntax there"
        ) from None
    except _DuplicateKey as e:
        raise UserError(
            f"{path}: malformed JSON: key '{e.key}' given twice in one object",
            "give each key once",
        ) from None
    except RecursionError:
        raise _too_deep(path) from None
    if _depth(data) > MAX_DEPTH:
        raise _too_deep(path)
    return data


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _depth(data: Any) -> int:
    """How deeply lists and mappings nest (a scalar: 0), without recursion."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _too_deep(path: str) -> UserError:
    return UserError(
        f"{path}: nested deeper than {MAX_DEPTH} levels, the limit for a document",
        "flatten it (the formats need fewer than 10 levels)",
    )


def _parse_yaml(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: builds no Python objects
    except RecursionError:  # flow collections nest in the parser itself, before compose_node
        raise _too_deep(path) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        what = " ".join(str(e.problem or e.context or "syntax error").split())
        raise UserError(f"{where}: malformed YAML: {what}", "fix the YAML syntax there") from None
    except yaml.YAMLError as e:
        what = " ".join(str(e).split())
        raise UserError(f"{path}: malformed YAML: {what}", "fix the YAML syntax") from None


def render(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def format_for(path: str | None, default: str = "yaml") -> str:
    """The format a written file gets: from its extension, else the default."""
    if path is not None and Path(path).suffix.lower() == ".json":
        return "json"
    if path is not None and Path(path).suffix.lower() in (".yaml", ".yml"):
        return "yaml"
    return default


def write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(
            f"{path}: cannot write ({e.strerror})", "check that its folder exists and is writable"
        ) from None
