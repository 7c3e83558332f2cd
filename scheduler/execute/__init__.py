"""The one plan-execution contract: a Plan as steps in phases, each with the steps it waits for,
carried out the same way by every target (the simulator's ledger, a recording dry run, and the
Kubernetes API)."""

from scheduler.execute.carry import Execution, Target, UnknownStep
from scheduler.execute.record import Recording
from scheduler.execute.steps import Step, StepKind, plan_steps

__all__ = ["Execution", "Recording", "Step", "StepKind", "Target", "UnknownStep", "plan_steps"]
