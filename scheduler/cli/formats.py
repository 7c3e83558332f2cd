"""The one output convention of every command, as kubectl's: `-o/--output` names the format
(table | json | yaml; documents: yaml | json), and `--out FILE` names a file to write.

Formerly export, import-openb and make-cluster took `-o FILE`: such a value gets a line
saying what changed, not only "not one of"."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import structlog
import typer

from scheduler.cli import documents

log = structlog.get_logger("wattpack.cli")

F = TypeVar("F", bound=StrEnum)


class OutputFormat(StrEnum):
    """What a command that reports prints: tables for people, a document for programs."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


class DocumentFormat(StrEnum):
    """What a command that writes a document (a snapshot, a schema) writes."""

    YAML = "yaml"
    JSON = "json"


def _parser(kind: type[F]) -> Callable[[str], F]:
    names = ", ".join(f.value for f in kind)

    def parse(text: str | F) -> F:
        if isinstance(text, kind):
            return text
        try:
            return kind(str(text).lower())
        except ValueError:
            pass
        hint = ""
        if Path(str(text)).suffix or "/" in str(text):
            hint = " (-o names the format; to write a file, use --out FILE)"
        raise typer.BadParameter(f"'{text}' is not one of {names}{hint}") from None

    return parse


def output_option(kind: type[StrEnum], help: str) -> Any:
    """-o/--output FORMAT, with `help` saying what each format prints."""
    return typer.Option(
        "--output", "-o", parser=_parser(kind), metavar="|".join(f.value for f in kind), help=help
    )


def out_option(help: str = "Write here instead of stdout (format from .json/.yaml).") -> Any:
    return typer.Option("--out", metavar="FILE", help=help)


def write_document(data: Any, given: DocumentFormat | None, out: str | None, what: str) -> None:
    """A JSON-ready document to --out (none or '-': stdout), as -o says; else as the file's
    extension says; else YAML."""
    to_stdout = out is None or out == documents.STDIN
    fmt = given.value if given is not None else documents.format_for(None if to_stdout else out)
    if to_stdout:
        print_document(data, fmt)
        return
    documents.write_text(out, documents.render(data, fmt))  # type: ignore[arg-type]
    log.info(f"{what}_written", path=out, format=fmt)


def print_document(data: Any, fmt: str) -> None:
    """A JSON-ready document on stdout as JSON or YAML."""
    typer.echo(documents.render(data, fmt), nl=False)
