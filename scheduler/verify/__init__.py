"""Independent checks of a plan: feasibility from first principles, and what it allocates."""

from scheduler.verify.feasibility import (
    Placement,
    check_plan,
    explanation_problems,
    final_placement,
    gpu_allocation,
)
from scheduler.verify.phases import check_steps

__all__ = [
    "Placement",
    "check_plan",
    "check_steps",
    "explanation_problems",
    "final_placement",
    "gpu_allocation",
]
