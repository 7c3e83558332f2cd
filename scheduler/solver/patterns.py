"""The configuration LP for GPU shares: the bound the DFF cuts only approach.

A GPU holds shares whose sizes sum to at most its room; every way to fill one (a pattern: how
many shares of each size, with no room left for another pending size) is a column, and the
shares placed in a group must be covered by the patterns of the GPUs it gives them. Any real
plan is such a cover, so the LP over patterns is a relaxation, and a tighter one than mass plus
dual-feasible functions (on openb it proves 96.6% where they prove 96.9%). It only enters a
second LP that proves the bound: as integer columns it would swamp CP-SAT, and its fractions, as
the guided realisation's quotas, realised worse than the plain LP's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ortools.linear_solver.python import model_builder
from ortools.sat.python import cp_model

# Above this many pattern columns in all, the pattern rows are left out (the bound stays the
# DFF one): an LP that size no longer solves within a cycle.
MAX_COLUMNS = 40_000


def maximal_patterns(sizes: list[int], room: int) -> list[tuple[int, ...]]:
    """Count vectors (one entry per size in `sizes`) of the multisets of sizes that fit in
    `room` and leave less than the smallest size free: a cover may always use these."""
    sizes = sorted(sizes, reverse=True)
    least = min(sizes)
    out: list[tuple[int, ...]] = []
    counts = [0] * len(sizes)

    def walk(i: int, left: int) -> None:
        if i == len(sizes):
            if left < least:
                out.append(tuple(counts))
            return
        for k in range(left // sizes[i], -1, -1):
            counts[i] = k
            walk(i + 1, left - k * sizes[i])
        counts[i] = 0

    walk(0, room)
    order = sorted(range(len(sizes)), key=lambda j: sizes[j])
    # Back to the caller's order of sizes (ascending here).
    return [tuple(p[j] for j in order) for p in out]


@dataclass
class ShareGroup:
    """One group's share rows, as the model built them: the fresh GPUs its shares may open and
    the shares placed there, by size."""

    fresh: cp_model.IntVar
    fresh_top: int
    by_size: dict[int, list[cp_model.IntVar]]
    partial: Counter[int] = field(default_factory=Counter)  # residual milli -> GPUs with it


def add_pattern_rows(
    model: cp_model.CpModel | model_builder.Model, groups: list[ShareGroup]
) -> int:
    """Adds the pattern columns and covering rows to `model` (a copy made for the LP, of a
    CP-SAT model or of one built as an LP); returns the number of columns added (0: too many,
    none added)."""
    plans = []
    total = 0
    for g in groups:
        sizes = sorted(g.by_size)
        rooms = [(1000, g.fresh, g.fresh_top)] + [
            (r, None, k) for r, k in sorted(g.partial.items()) if r >= sizes[0]
        ]
        per_room = []
        for room, var, top in rooms:
            fits = [s for s in sizes if s <= room]
            if not fits:
                continue
            pats = maximal_patterns(fits, room)
            per_room.append((fits, pats, var, top))
            total += len(pats)
        plans.append((g, sizes, per_room))
    if total > MAX_COLUMNS:
        return 0

    if isinstance(model, model_builder.Model):
        expr, own = model_builder.LinearExpr, lambda var: model.var_from_index(var.index)
    else:
        expr, own = cp_model.LinearExpr, lambda var: model.get_int_var_from_proto_index(var.index)

    for g, sizes, per_room in plans:
        cover: dict[int, list[tuple[int, cp_model.IntVar]]] = {s: [] for s in sizes}
        for fits, pats, var, top in per_room:
            cols = [model.new_int_var(0, top, "") for _ in pats]
            used = expr.sum(cols)
            model.add(used <= own(var) if var is not None else used <= top)
            for col, pat in zip(cols, pats, strict=True):
                for s, k in zip(fits, pat, strict=True):
                    if k:
                        cover[s].append((k, col))
        for s in sizes:
            placed = expr.sum([own(x) for x in g.by_size[s]])
            model.add(
                placed <= expr.weighted_sum([c for _, c in cover[s]], [k for k, _ in cover[s]])
            )
    return total
