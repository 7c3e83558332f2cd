"""A recording target: a dry run that writes each step as one line and changes nothing."""

from __future__ import annotations

from scheduler.execute.steps import Step


class Recording:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def _line(self, step: Step, text: str) -> bool:
        waits = f" after {', '.join(f'#{a}' for a in step.after)}" if step.after else ""
        self.lines.append(f"#{step.id} phase {step.phase}: {text}{waits}")
        return True

    def evict(self, step: Step) -> bool:
        return self._line(step, f"evict {step.pod} from {step.node} ({step.reason})")

    def stop(self, step: Step) -> bool:
        return self._line(step, f"stop {step.pod} on {step.node} ({step.reason})")

    def start(self, step: Step) -> bool:
        how = "surge replica of" if step.surge else "restart"
        return self._line(step, f"start {how} {step.pod} on {step.node} GPUs {list(step.gpus)}")

    def bind(self, steps: list[Step]) -> bool:
        for s in steps:
            gang = f" (gang {s.group})" if s.group else ""
            self._line(s, f"bind {s.pod} to {s.node} GPUs {list(s.gpus)}{gang}")
        return True
