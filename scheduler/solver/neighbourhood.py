"""An exact repack of a few nodes: which of the given pods go where, GPU by GPU.

A plan realised from aggregated counts leaves GPU room in pieces too small for what waits (on
openb, 1,849 GPUs each with less than 250 milli free while shares of 220 to 810 wait). Taking a
few nodes' worth of this cycle's pods off and putting them back with some waiting pods, solved
exactly, pairs share sizes per GPU as the configuration LP does: a large-neighbourhood search
over the realised plan (the planner picks the nodes and applies the answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

Spot = tuple[int, tuple[int, ...]]  # (room index, GPUs)


@dataclass(frozen=True)
class Room:
    """One node of the neighbourhood with its movable pods taken off."""

    gpus: tuple[int, ...]  # milli free per GPU (0 where the GPU takes nothing)
    cpu: int
    mem: int


@dataclass(frozen=True)
class Piece:
    """A pod the neighbourhood may hold: one of its movable pods, or one that waits."""

    gpus: int  # whole GPUs, or 1 for a share
    milli: int  # a share's milli; 0 for whole GPUs
    cpu: int
    mem: int
    value: int
    rooms: tuple[int, ...]  # the rooms it may go to (GPU model, spread: the planner's say)
    watts: tuple[int, ...]  # its draw in each room, aligned with `rooms`
    at: Spot | None  # where it is now; None for a waiting pod
    # A running pod: it stays placed, here or elsewhere in the neighbourhood, and leaving its
    # spot costs this much (in the objective's units).
    must: bool = False
    cost: int = 0


def repack(
    rooms: list[Room],
    pieces: list[Piece],
    watts: int | None,
    seconds: float,
    seed: int,
    max_moved: int | None = None,
) -> list[Spot | None] | None:
    """Where each piece goes (None: left out), if that is worth more than where they are now,
    net of what moving running pieces costs; None when nothing better was found in `seconds`
    (deterministic seconds: the same answer on any machine). `watts` caps what the pieces may
    draw together (None: no budget binds); at most `max_moved` running pieces leave their
    spot."""
    m = cp_model.CpModel()
    # x[i][(r, g)]: piece i takes GPU g of room r (a share: its milli; whole GPUs: all of it).
    x: list[dict[tuple[int, int], cp_model.IntVar]] = []
    on_gpu: dict[tuple[int, int], list[tuple[int, cp_model.IntVar]]] = {}
    on_room: dict[int, list[tuple[Piece, int, cp_model.IntVar]]] = {}
    value_terms = []
    for i, p in enumerate(pieces):
        xi: dict[tuple[int, int], cp_model.IntVar] = {}
        taken = []
        for r, w in zip(p.rooms, p.watts, strict=True):
            need = p.milli if p.milli else 1000
            here = {
                g: m.new_bool_var(f"x{i}_{r}_{g}") for g, f in enumerate(rooms[r].gpus) if f >= need
            }
            if len(here) < p.gpus:
                continue
            y = m.new_bool_var(f"y{i}_{r}")
            m.add(sum(here.values()) == p.gpus * y)
            for g, v in here.items():
                on_gpu.setdefault((r, g), []).append((need, v))
                xi[(r, g)] = v
            on_room.setdefault(r, []).append((p, w, y))
            taken.append(y)
        if p.must:
            if not taken:
                return None  # a running pod with nowhere to be: not this neighbourhood
            m.add_exactly_one(taken)
        elif taken:
            m.add_at_most_one(taken)
            value_terms.append(p.value * sum(taken))
        x.append(xi)
    for (r, g), uses in on_gpu.items():
        m.add(sum(need * v for need, v in uses) <= rooms[r].gpus[g])
    draws = []
    for r, held in on_room.items():
        m.add(sum(p.cpu * y for p, _, y in held) <= rooms[r].cpu)
        m.add(sum(p.mem * y for p, _, y in held) <= rooms[r].mem)
        draws += [w * y for _, w, y in held if w]
    if watts is not None and draws:
        m.add(sum(draws) <= watts)
    if not value_terms:
        return None
    moved = []
    for p, xi in zip(pieces, x, strict=True):
        if p.must and p.at is not None:
            r, gs = p.at
            stays = m.new_bool_var("")
            for g in gs:
                if (r, g) in xi:
                    m.add_implication(stays, xi[(r, g)])
                else:
                    m.add(stays == 0)
            moved.append(stays.Not())
            value_terms.append(-p.cost * stays.Not())
    if max_moved is not None and moved:
        m.add(sum(moved) <= max_moved)
    m.maximize(sum(value_terms))
    now = 0
    for p, xi in zip(pieces, x, strict=True):
        if p.at is not None:
            now += 0 if p.must else p.value
            r, gs = p.at
            for (rr, g), v in xi.items():
                m.add_hint(v, rr == r and g in gs)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = seconds
    # Measured on openb's repacks: a third faster without presolve, and more of them kept.
    solver.parameters.cp_model_presolve = False
    if solver.solve(m) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    if solver.objective_value <= now:
        return None
    out: list[Spot | None] = []
    for xi in x:
        spots: dict[int, list[int]] = {}
        for (r, g), v in xi.items():
            if solver.boolean_value(v):
                spots.setdefault(r, []).append(g)
        out.append(next(((r, tuple(sorted(gs))) for r, gs in spots.items()), None))
    return out
