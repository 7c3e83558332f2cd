"""The model's objective: named terms, most important first, folded into one integer.

Each term is worth less over its whole range than one unit of the term above it, so maximising
the sum maximises the terms in order. A term's encoding (its weight) and its decoding (reading
its bound back out of the solver's) sit side by side here. The LP relaxation solves the same
objective in doubles, so terms are dropped from the bottom until the folded range is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ortools.sat.python import cp_model

_EXACT = 1 << 52  # integers up to this are exact in a double


@dataclass
class Term:
    name: str
    expr: cp_model.LinearExprT
    top: int  # the largest value the term takes; terms below the first are at least 0


class Objective:
    def __init__(self, terms: list[Term]) -> None:
        kept = list(terms)
        while len(kept) > 1 and _folded_top(kept) > _EXACT:
            kept.pop()  # the least important tie-breaker goes first
        self.terms = kept
        self.weights = [math.prod(t.top + 1 for t in kept[i + 1 :]) for i in range(len(kept))]

    def expr(self) -> cp_model.LinearExprT:
        return sum(w * t.expr for w, t in zip(self.weights, self.terms, strict=True))

    def first(self, folded: float) -> int:
        """The first term's value (or bound) in a folded objective value (or bound): the lower
        terms only ever add less than one of its units."""
        return math.floor(folded + 1e-6) // self.weights[0]

    def names(self) -> list[str]:
        return [t.name for t in self.terms]


def _folded_top(terms: list[Term]) -> int:
    top = 0
    for t in terms:
        top = top * (t.top + 1) + t.top
    return top
