"""The only room that imports OR-Tools: classify, build the aggregated model, solve it. Turning
its counts into a plan is the planner's (scheduler.planner)."""

from scheduler.solver.aggregate import AggregateModel, Counts, OutOfTime
from scheduler.solver.groups import Group, group_classes
from scheduler.solver.pod_classes import Demand, classify

__all__ = [
    "AggregateModel",
    "Counts",
    "Demand",
    "Group",
    "OutOfTime",
    "classify",
    "group_classes",
]
