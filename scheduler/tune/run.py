"""One tuning run: search on the tuning slice, then score the front and the base policy on the
holdout and choose."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna

from scheduler.model import ClusterSnapshot, PackingPolicy
from scheduler.simulate.replay import ReplaySettings
from scheduler.traces.workload import TraceJob
from scheduler.tune.outcome import Entry, Scored, TuneReport, choose
from scheduler.tune.search import Problem, front, run_workers, safe_url
from scheduler.tune.space import TuningSpace

FRONT_SCORED = 8  # front policies scored on the holdout, best allocation first


@dataclass(frozen=True)
class TuneSettings:
    storage: str
    study: str
    trials: int
    jobs: int = 1
    seed: int = 0
    replay: ReplaySettings = field(default_factory=ReplaySettings)


def tune(
    space: TuningSpace,
    inventory: ClusterSnapshot,
    tuning: Sequence[TraceJob],
    holdout: Sequence[TraceJob],
    settings: TuneSettings,
    trace: str,
    progress: Callable[[optuna.Study], None] | None = None,
    setup: Callable[[], None] | None = None,
) -> tuple[TuneReport, PackingPolicy]:
    problem = Problem(inventory, tuple(tuning), settings.replay)
    study = run_workers(
        space, problem, settings.storage, settings.study, settings.trials, settings.jobs,
        settings.seed, progress, setup,
    )  # fmt: skip
    best = front(study)
    check = Problem(inventory, tuple(holdout), settings.replay) if holdout else None
    base = space.policy({})

    def entry(label: str, params: dict, tuned) -> Entry:  # type: ignore[no-untyped-def, type-arg]
        policy = space.policy(params)
        hold = None if check is None else Scored.of(check.score(policy))
        return Entry(label=label, params=params, tuning=Scored.of(tuned), holdout=hold)

    default = entry("default", {}, problem.score(base))
    entries = []
    for t in best[:FRONT_SCORED]:
        tuned = Scored(
            allocation_while_waiting=t.values[0],
            inference_p95_wait_seconds=t.values[1],
            lost_gpu_hours=t.values[2],
            budget_violations=0,
        )
        entries.append(entry(f"trial {t.number}", dict(t.params), tuned.scores()))
    chosen, why = choose(default, entries)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    finished = study.get_trials(deepcopy=False, states=states)
    infeasible = sum(1 for t in finished if t.user_attrs.get("budgetViolations", 1))
    report = TuneReport(
        study=settings.study,
        storage=safe_url(settings.storage),
        trace=trace,
        trials=len(finished),
        infeasible=infeasible,
        default=default,
        front=entries,
        chosen=chosen,
        why=why,
        importances=_importances(study),
    )
    params = next((e.params for e in entries if e.label == chosen), {})
    return report, space.policy(params)


def _importances(study: optuna.Study) -> dict[str, float]:
    """Importances for allocation (optuna's evaluator ranks what drives its target low, so the
    target is the allocation negated); empty where the study is too small to say."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its note that it ranks for low targets: we negate
            raw = optuna.importance.get_param_importances(
                study, target=lambda t: -t.values[0], normalize=True
            )
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: round(float(v), 4) for k, v in raw.items()}
