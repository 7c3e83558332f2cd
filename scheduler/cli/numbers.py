"""Number flags: finite, and within the limits the formats set (scheduler.model.limits).

click's ranges let nan through (it compares false to both ends), so every float flag takes
`callback=finite` as well as its range."""

from __future__ import annotations

import math
from typing import Any

import typer

# Budget fractions: a budget of F x nameplate; above 10 it means no budget at all.
MAX_FRACTION = 10.0
# fgd demand target, as a multiple of GPU capacity.
MAX_TARGET = 10.0
MAX_RATE = 1e6  # failures per 1,000 GPU-days, alarms per failure, hours of lead
MAX_HOURS = 1e6
MAX_SCALE = 1e6  # arrival scale
MAX_RUNS = 10_000  # fgd seeds, tuning trials, worker processes


def finite(value: Any) -> Any:
    """A typer callback: nan and inf are refused with one line naming the flag."""
    for v in value if isinstance(value, list | tuple) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            raise typer.BadParameter(f"{v} is not a finite number")
    return value


def fraction(help: str | None = None) -> Any:
    """A budget fraction flag (F x nameplate): finite, 0 to MAX_FRACTION."""
    return typer.Option(metavar="F", min=0, max=MAX_FRACTION, callback=finite, help=help)
