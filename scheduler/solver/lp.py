"""The LP relaxation of a CP-SAT model, solved with GLOP.

The aggregated model decides counts in the tens and hundreds, so its LP relaxation is nearly
tight: its optimum is a proven upper bound, and its solution rounded down is a strong start for
CP-SAT, which on two cores needs longer than a planning cycle has to find one by itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ortools.linear_solver import linear_solver_pb2, pywraplp
from ortools.linear_solver.python import model_builder
from ortools.sat.python import cp_model


@dataclass
class LpResult:
    values: list[float]  # by CP-SAT variable index
    bound: float  # the relaxation's optimum: no integer solution does better
    seconds: float  # GLOP's own wall time


def _linear(vars_: list[int], coeffs: list[int]) -> tuple[list[int], list[float]]:
    """Indices and coefficients with negated references folded in and repeats summed."""
    if all(v >= 0 for v in vars_) and len(set(vars_)) == len(vars_):
        return vars_, [float(c) for c in coeffs]
    summed: dict[int, float] = {}
    for ref, c in zip(vars_, coeffs, strict=True):
        i, sign = (ref, 1) if ref >= 0 else (-ref - 1, -1)
        summed[i] = summed.get(i, 0.0) + sign * c
    return list(summed), list(summed.values())


def _bound(value: int) -> float:
    if value <= cp_model.INT_MIN:
        return -math.inf
    if value >= cp_model.INT_MAX:
        return math.inf
    return float(value)


def solve_lp(
    model: cp_model.CpModel,
    time_limit: float,
    clock: Callable[[], float] = time.perf_counter,
    upper: list[int] | None = None,
) -> LpResult | None:
    """The relaxation's optimum and solution, or None: not linear, not solved to optimality, or
    out of time. `time_limit` covers copying the model as well as solving it (at 40,000
    variables the copy alone takes seconds). `upper`, if the caller kept them, are the upper
    bounds of variables that all start at 0, by index: they are not read back from the model."""
    start = clock()
    proto = model.proto
    mp = linear_solver_pb2.MPModelProto()
    if upper is not None and len(upper) == len(proto.variables):
        for ub in upper:
            var = mp.variable.add()
            var.lower_bound, var.upper_bound = 0.0, float(ub)  # the proto's default is -inf
    else:
        for v in proto.variables:
            # list() first: the wrapper answers [-1] with the first element.
            domain = list(v.domain)
            var = mp.variable.add()
            var.lower_bound, var.upper_bound = float(domain[0]), float(domain[-1])
    # Bulk copies of repeated fields: one Python call a row, not one a term.
    for ct in proto.constraints:
        if not ct.has_linear() or len(ct.enforcement_literal):
            return None  # only plain linear models are relaxed here
        lin = ct.linear
        domain = list(lin.domain)
        row = mp.constraint.add()
        row.lower_bound, row.upper_bound = _bound(domain[0]), _bound(domain[-1])
        index, coeff = _linear(list(lin.vars), list(lin.coeffs))
        row.var_index.extend(index)
        row.coefficient.extend(coeff)
    index, coeff = _linear(list(proto.objective.vars), list(proto.objective.coeffs))
    for i, c in zip(index, coeff, strict=True):
        mp.variable[i].objective_coefficient = c
    mp.maximize = False  # CP-SAT stores a maximisation as the minimisation of its negation
    left = time_limit - (clock() - start)
    if left <= 0:
        return None
    lp = pywraplp.Solver.CreateSolver("GLOP")
    if lp is None or lp.LoadModelFromProto(mp):
        return None
    lp.SetTimeLimit(max(1, int(left * 1000)))
    if lp.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    scale = proto.objective.scaling_factor or 1.0
    best = (lp.Objective().Value() + proto.objective.offset) * scale
    return LpResult([x.solution_value() for x in lp.variables()], best, lp.wall_time() / 1000)


def solve_built(model: model_builder.Model, time_limit: float) -> LpResult | None:
    """The optimum and solution of a model built as an LP (maximising), or None: not solved to
    optimality within `time_limit` seconds."""
    if time_limit <= 0:
        return None
    solver = model_builder.Solver("glop")
    solver.set_time_limit_in_seconds(time_limit)
    if solver.solve(model) != model_builder.SolveStatus.OPTIMAL:
        return None
    values = [solver.value(model.var_from_index(i)) for i in range(model.num_variables)]
    return LpResult(values, solver.objective_value, solver.wall_time)
