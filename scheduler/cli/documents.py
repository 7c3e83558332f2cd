"""Reading and writing JSON or YAML documents; every failure becomes one UserError line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from scheduler.errors import UserError

STDIN = "-"


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings: the snapshot's times are RFC 3339 text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_text(path: str) -> str:
    if path == STDIN:
        return sys.stdin.read()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file", "check the path") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory", "give the path of a file") from None
    except OSError as e:
        raise UserError(
            f"{path}: cannot read ({e.strerror})", "check the path and its permissions"
        ) from None
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
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}", "fix the JSON syntax there"
        ) from None


def _parse_yaml(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: builds no Python objects
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
