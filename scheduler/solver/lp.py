"""The LP relaxation of a CP-SAT model, solved with GLOP.

The aggregated model decides counts in the tens and hundreds, so its LP relaxation is nearly
tight: its optimum is a proven upper bound, and its solution rounded down is a strong start for
CP-SAT, which on two cores needs longer than a planning cycle has to find one by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model


@dataclass
class LpResult:
    values: list[float]  # by CP-SAT variable index
    bound: float  # the relaxation's optimum: no integer solution does better
    seconds: float  # GLOP's own wall time


def _ref(ref: int) -> tuple[int, int]:
    """A CP-SAT linear reference: index and sign (a negative reference is the negation)."""
    return (ref, 1) if ref >= 0 else (-ref - 1, -1)


def solve_lp(model: cp_model.CpModel, time_limit: float) -> LpResult | None:
    proto = model.proto
    lp = pywraplp.Solver.CreateSolver("GLOP")
    if lp is None:
        return None
    lp.SetTimeLimit(max(1, int(time_limit * 1000)))
    # list() first: the proto wrapper answers [-1] with the first element, not the last.
    domains = [list(v.domain) for v in proto.variables]
    xs = [lp.NumVar(float(d[0]), float(d[-1]), "") for d in domains]
    for ct in proto.constraints:
        if not ct.has_linear() or len(ct.enforcement_literal):
            return None  # only plain linear models are relaxed here
        lin = ct.linear
        bounds = list(lin.domain)
        lo, hi = bounds[0], bounds[-1]
        row = lp.RowConstraint(
            -math.inf if lo <= cp_model.INT_MIN else float(lo),
            math.inf if hi >= cp_model.INT_MAX else float(hi),
        )
        # Sum in Python first: a reference may repeat, and each SWIG call is dear at scale.
        coeffs: dict[int, int] = {}
        for ref, coeff in zip(lin.vars, lin.coeffs, strict=True):
            i, sign = _ref(ref)
            coeffs[i] = coeffs.get(i, 0) + sign * coeff
        for i, coeff in coeffs.items():
            row.SetCoefficient(xs[i], coeff)
    obj = lp.Objective()
    for ref, coeff in zip(proto.objective.vars, proto.objective.coeffs, strict=True):
        i, sign = _ref(ref)
        obj.SetCoefficient(xs[i], obj.GetCoefficient(xs[i]) + sign * coeff)
    obj.SetMinimization()  # CP-SAT stores a maximisation as the minimisation of its negation
    if lp.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    scale = proto.objective.scaling_factor or 1.0
    best = (obj.Value() + proto.objective.offset) * scale
    return LpResult([x.solution_value() for x in xs], best, lp.wall_time() / 1000)
