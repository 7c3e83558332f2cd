"""Dual feasible functions: valid inequalities that teach an aggregate model GPU-share packing.

A share that is larger than half a GPU cannot sit beside another such share; mass alone does not
see that. For any items that fit in one bin, the Fekete-Schepers functions u_k still sum to at most
1, so sum_k u_k(items) <= number of bins is a valid cut. Scaled by k(k+1) to stay in integers.
"""

from __future__ import annotations


def dff_scaled(k: int, milli: int) -> int:
    """k(k+1) x u_k(milli / 1000), an integer; the capacity of one GPU is k(k+1)."""
    top = (k + 1) * milli
    if top % 1000 == 0:
        return k * top // 1000
    return (k + 1) * (top // 1000)


def dff_capacity(k: int) -> int:
    return k * (k + 1)


DFF_ORDERS = (1, 2, 3, 4, 5)


def eps_scaled(eps: int, milli: int) -> int:
    """The threshold function u^eps (eps <= 500), x1000: a share above 1000 - eps fills a GPU (no
    share of eps or more fits beside it), a share below eps counts as nothing, others as they are.
    Capacity of one GPU: 1000."""
    if milli > 1000 - eps:
        return 1000
    if milli < eps:
        return 0
    return milli


def eps_thresholds(shares: set[int]) -> list[int]:
    """One cut per large share: eps just above what fits beside it."""
    big = {1001 - v for v in shares if v > 500}
    small = {v for v in shares if v <= 500}
    return sorted(big | small)
