"""Independent checks of a plan: feasibility from first principles, and what it allocates."""

from scheduler.verify.feasibility import (
    Placement,
    check_plan,
    explanation_problems,
    final_placement,
    gpu_allocation,
)

__all__ = [
    "Placement",
    "check_plan",
    "explanation_problems",
    "final_placement",
    "gpu_allocation",
]
