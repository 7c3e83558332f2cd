"""Trace-driven simulation: replay or FGD-protocol runs of wattpack and the baselines."""

from scheduler.simulate.cluster import every_kth_node, make_cluster, with_budgets
from scheduler.simulate.inflation import InflationSettings, inflate
from scheduler.simulate.replay import ReplaySettings, replay
from scheduler.simulate.result import SimReport
from scheduler.simulate.run import simulate
from scheduler.simulate.runners import SCHEDULERS

__all__ = [
    "SCHEDULERS",
    "InflationSettings",
    "ReplaySettings",
    "SimReport",
    "every_kth_node",
    "inflate",
    "make_cluster",
    "replay",
    "simulate",
    "with_budgets",
]
