"""Heuristic schedulers for comparison; each returns the same Plan type as the planner."""

from scheduler.baselines.best_fit import best_fit

__all__ = ["best_fit"]
