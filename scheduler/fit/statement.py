"""Trial changes to a cycle's state that are kept or taken back, as Volcano's and KAI's
Statement: a gang placed member by member, a preemption tried node by node, a repair that moves
this cycle's pods. Each change is made at once and recorded; `discard` takes the recorded
changes back in reverse, to the start or to a checkpoint, and leaves the state as it was: the
same capacity, power and look-up buckets (a node taken out and put back goes to the end of its
buckets, which only breaks later ties differently); `take_back` takes back the placements of
named pods wherever they are in the record (a gang that did not place whole); `commit` keeps
them.
"""

from __future__ import annotations

from scheduler.fit.state import ClusterState, Placement
from scheduler.model import Pod


class Statement:
    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._ops: list[tuple[bool, Pod, int, tuple[int, ...]]] = []  # (placed?, pod, where)

    def place(self, pod: Pod, node: int, gpus: tuple[int, ...]) -> None:
        self.state.place(pod, node, gpus)
        self._ops.append((True, pod, node, gpus))

    def remove(self, pod: Pod, node: int, gpus: tuple[int, ...]) -> None:
        """Take a pod off (a victim, or one of this cycle's pods that moves)."""
        self.state.remove(pod, node, gpus)
        self._ops.append((False, pod, node, gpus))

    def checkpoint(self) -> int:
        return len(self._ops)

    def discard(self, to: int = 0) -> None:
        """Take back every change made since the checkpoint `to` (all of them by default)."""
        while len(self._ops) > to:
            placed, pod, node, gpus = self._ops.pop()
            if placed:
                self.state.remove(pod, node, gpus)
            else:
                self.state.place(pod, node, gpus)

    def take_back(self, keys: set[str]) -> None:
        """Take back the recorded placements of these pods, wherever they are in the record (a
        gang some of whose members found no place leaves whole), latest first; the rest of
        the record stands."""
        for i in range(len(self._ops) - 1, -1, -1):
            placed, pod, node, gpus = self._ops[i]
            if placed and pod.key in keys:
                self.state.remove(pod, node, gpus)
                del self._ops[i]

    def commit(self) -> None:
        """Keep every change: nothing is recorded any more, so nothing can be taken back."""
        self._ops.clear()

    def placed(self) -> list[tuple[Pod, Placement]]:
        """The placements recorded since the last commit, in order."""
        return [(pod, (node, gpus)) for placed, pod, node, gpus in self._ops if placed]
