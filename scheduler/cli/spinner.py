"""A spinner on stderr with what the core says it is doing (scheduler.progress): the phase,
and the solver's best so far. Only on a terminal: piped or redirected, stderr holds logs alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from scheduler import progress


@contextmanager
def spinner(what: str, enabled: bool = True) -> Iterator[None]:
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(what, total=None)

    def show(phase: str, detail: str) -> None:
        line = f"{what}: {phase}" + (f" ({detail})" if detail else "")
        bar.update(task, description=line)

    with bar, progress.listening(show):
        yield
