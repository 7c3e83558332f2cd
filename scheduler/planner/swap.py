"""Swap a waiting pod for a less valuable one of this cycle's on the same GPU.

After the realisation, GPUs hold pairs that waste room while pods that would pair better wait:
on openb, 84 GPUs held a 650 and a 230 milli share (120 milli idle each) while 54 shares of 320
waited. Taking the 230 off and putting a 320 in its place is worth more; the 230 then goes
wherever it fits, or waits (and may in turn take the place of a smaller one). Only pods this
cycle placed are swapped (nothing running is touched) and only for a more valuable pod, so the
plan is worth more after every swap and the passes end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection

from scheduler.fit.cycle import Cycle
from scheduler.fit.state import Placement
from scheduler.fit.statement import Statement
from scheduler.fit.value import pending_values
from scheduler.model import Pod

_PASSES = 8  # passes over the waiting pods; each after the first only follows what moved


def swap(
    cycle: Cycle,
    placed: dict[str, Placement],
    stop: Callable[[], bool] | None = None,
    frozen: Collection[int] = (),
) -> int:
    """Swaps until no swap adds value (or `stop`); updates `placed` and the cycle's state, and
    returns how many swaps were made. Pods on `frozen` nodes stay (where the plan evicts, they
    are what the eviction was for)."""
    if stop is not None and stop():
        return 0  # past the limit, building the view of the plan would only make it later
    return _Swaps(cycle, placed, frozen).run(stop or (lambda: False))


def _shape(p: Pod) -> tuple:
    return (p.gpus, p.gpu_milli, p.fractional, p.cpu_milli, p.memory_mi_b, tuple(p.gpu_models))


class _Swaps:
    def __init__(self, cycle: Cycle, placed: dict[str, Placement], frozen: Collection[int]) -> None:
        self.state, self.placed, self.frozen = cycle.state, placed, frozen
        self.value = {k: v for k, (v, _) in pending_values(cycle).items()}
        # Shares of one GPU, lone and not gang members (a gang moves whole), without a spread
        # limit (a swap keeps the node's app counts only when the apps match: not worth it).
        self.movable = {
            p.key: p
            for p in cycle.pending
            if p.fractional and p.gpus == 1 and not p.gang_key and p.app is None
        }

    def run(self, stop: Callable[[], bool]) -> int:
        done = 0
        for _ in range(_PASSES):
            made = self._pass(stop)
            done += made
            if not made or stop():
                break
        return done

    def _pass(self, stop: Callable[[], bool]) -> int:
        value = self.value
        # This cycle's shares by GPU, read once a pass; a swap re-checks what it uses.
        on_gpu: dict[tuple[int, int], list[Pod]] = defaultdict(list)
        for key, (node, gpus) in self.placed.items():
            if key in self.movable and node not in self.frozen:
                on_gpu[(node, gpus[0])].append(self.movable[key])
        waiting = sorted(
            (p for k, p in self.movable.items() if k not in self.placed),
            key=lambda p: (-value[p.key], p.key),
        )
        made = 0
        hopeless: set[tuple] = set()
        for q in waiting:
            if stop():
                break
            if _shape(q) in hopeless or q.key in self.placed:
                continue
            if self._swap_in(q, on_gpu):
                made += 1
            else:
                hopeless.add(_shape(q))
        return made

    def _swap_in(self, q: Pod, on_gpu: dict[tuple[int, int], list[Pod]]) -> bool:
        """Put q in the place of the share whose leaving gains the most value, the tightest
        fit on a tie; the share taken off goes elsewhere if it fits."""
        state, value = self.state, self.value
        best: tuple[int, int, tuple[int, int], Pod] | None = None
        for (node, g), shares in on_gpu.items():
            if not state.model_ok(q, node):
                continue
            room = state.res[node][g]
            for r in shares:
                gain = value[q.key] - value[r.key]
                left = room + r.gpu_milli - q.gpu_milli
                if (
                    gain <= 0
                    or left < 0
                    or self.placed.get(r.key) != (node, (g,))
                    or state.cpu[node] + r.cpu_milli < q.cpu_milli
                    or state.mem[node] + r.memory_mi_b < q.memory_mi_b
                ):
                    continue
                if best is None or (gain, -left) > (best[0], best[1]):
                    best = (gain, -left, (node, g), r)
        if best is None:
            return False
        _, _, (node, g), r = best
        trial = Statement(state)
        trial.remove(r, node, (g,))
        if not (state.host_ok(q, node) and state.power_ok(q, node)):
            trial.discard()
            return False
        trial.place(q, node, (g,))
        del self.placed[r.key]
        self.placed[q.key] = (node, (g,))
        shares = on_gpu[(node, g)]
        shares.remove(r)
        shares.append(q)
        elsewhere = state.find(r)
        if elsewhere is not None:
            trial.place(r, *elsewhere)
            self.placed[r.key] = elsewhere
            on_gpu[(elsewhere[0], elsewhere[1][0])].append(r)
        trial.commit()
        return True
