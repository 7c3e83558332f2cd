"""Carrying steps out on a target: each step once its waits are done, a gang's together.

A target does the work (the ledger starts and stops pods, the API server binds and evicts, a
recording writes lines) and says whether a step is done at once or still under way (an
eviction waits for the pod to be gone, a replacement for it to run); what is under way is
finished later with `done`. A step of a kind no target knows fails loudly: a plan is never
carried out in part because a step was quietly skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from scheduler.execute.steps import Step, StepKind


class UnknownStep(Exception):
    """A step of a kind the target does not carry out: a bug, never a user error."""


class Target(Protocol):
    def evict(self, step: Step) -> bool: ...  # True: done now; False: under way

    def stop(self, step: Step) -> bool: ...

    def start(self, step: Step) -> bool: ...

    def bind(self, steps: list[Step]) -> bool: ...  # one pod, or a gang's members together


class Execution:
    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = {s.id: s for s in steps}
        self.finished: set[int] = set()
        self.under_way: set[int] = set()

    @property
    def complete(self) -> bool:
        return len(self.finished) == len(self.steps)

    def ready(self) -> list[Step]:
        """Steps not yet begun whose waits are all done, in id order."""
        return [
            s
            for i, s in sorted(self.steps.items())
            if i not in self.finished
            and i not in self.under_way
            and all(a in self.finished for a in s.after)
        ]

    def done(self, step_id: int) -> None:
        """A step that was under way is done (the target saw it finish)."""
        self.under_way.discard(step_id)
        self.finished.add(step_id)

    def advance(self, target: Target) -> list[Step]:
        """Begin every step that can begin, and keep going while the target finishes them at
        once; returns the steps begun. A gang's steps begin together once all are ready."""
        begun: list[Step] = []
        while True:
            batch = self._batches(self.ready())
            if not batch:
                return begun
            for steps in batch:
                for s, now in zip(steps, _dispatch(target, steps), strict=True):
                    (self.finished if now else self.under_way).add(s.id)
                begun += steps

    def _batches(self, ready: list[Step]) -> list[list[Step]]:
        groups: dict[str, list[Step]] = {}
        out: list[list[Step]] = []
        for s in ready:
            if s.group is None:
                out.append([s])
            else:
                groups.setdefault(s.group, []).append(s)
        for g, members in groups.items():
            waiting = [
                s
                for s in self.steps.values()
                if s.group == g and s.kind == members[0].kind and s.id not in self.finished
            ]
            if len(members) == len(waiting):
                out.append(members)
        return sorted(out, key=lambda b: b[0].id)


def _dispatch(target: Target, steps: list[Step]) -> list[bool]:
    """Whether each step is done at once."""
    kind = steps[0].kind
    if kind == StepKind.BIND:
        return [target.bind(steps)] * len(steps)
    if kind == StepKind.START:
        return [target.start(s) for s in steps]
    if len(steps) != 1:
        raise UnknownStep(f"{kind} steps are not carried out as a group")
    if kind == StepKind.STOP:
        return [target.stop(steps[0])]
    if kind == StepKind.EVICT:
        return [target.evict(steps[0])]
    raise UnknownStep(f"step {steps[0].id} ({steps[0].pod}): unknown kind {kind!r}")
