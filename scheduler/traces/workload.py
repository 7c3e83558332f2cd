"""A trace as the simulator replays it: jobs that arrive, run for a while, and leave.

Every importer (openb, Microsoft ITP, the generic CSV) produces these, so the simulator never
knows which trace it replays.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.model import Pod


@dataclass(frozen=True)
class TraceJob:
    """One unit of submitted work: a single pod, or a gang whose members share `Pod.gang`."""

    name: str
    submit: float  # seconds since the trace began
    duration: float | None  # seconds it runs once started; None = it never leaves
    pods: tuple[Pod, ...]  # pending (node None); names unique across the trace
    source_line: int = 0  # the file line it came from, for messages; 0 = none

    @property
    def milli(self) -> int:
        """GPU capacity the job asks for, in milli-GPU."""
        return sum(p.milli_total for p in self.pods)
