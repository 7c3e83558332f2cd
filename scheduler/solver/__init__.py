"""The only room that imports OR-Tools: build the aggregated model, solve it, expand the counts."""

from scheduler.solver.aggregate import AggregateModel, Counts
from scheduler.solver.expand import expand
from scheduler.solver.groups import group_classes
from scheduler.solver.pod_classes import classify

__all__ = ["AggregateModel", "Counts", "classify", "expand", "group_classes"]
