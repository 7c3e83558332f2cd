"""One scheduling cycle: snapshot and policy in, plan out."""

from scheduler.planner.cycle import plan

__all__ = ["plan"]
