"""One tuning run: search on the tuning slice, then score the front and the base policy on the
holdout and choose."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import optuna

from scheduler.model import ClusterSnapshot, PackingPolicy
from scheduler.simulate.replay import ReplaySettings
from scheduler.traces.workload import TraceJob
from scheduler.tune.outcome import Entry, Scored, TuneReport, choose
from scheduler.tune.search import FINISHED, Problem, Scores, front, run_workers, safe_url
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
    best = front(study)[:FRONT_SCORED]
    check = Problem(inventory, tuple(holdout), settings.replay) if holdout else None
    base = space.base_values()
    best = [t for t in best if dict(t.params) != base]  # the base is the default row
    params = [{}] + [dict(t.params) for t in best]  # the base policy first
    # The replays left: the base on the tuning slice unless a trial was it, and every policy
    # on the holdout, over the same worker processes as the search.
    as_trial = _scores_of_trial(study, base)
    runs = [] if as_trial is not None else [(problem, {})]
    runs += [(check, p) for p in params] if check is not None else []
    scores = _score_all(space, runs, settings.jobs, setup)
    if as_trial is None:
        as_trial, scores = scores[0], scores[1:]
    tuned_base, held = as_trial, scores

    def hold(i: int) -> Scored | None:
        return Scored.of(held[i]) if check is not None else None

    default = Entry(label="default", params={}, tuning=Scored.of(tuned_base), holdout=hold(0))
    entries = [
        Entry(
            label=f"trial {t.number}",
            params=dict(t.params),
            tuning=Scored(
                allocation_while_waiting=t.values[0],
                inference_p95_wait_seconds=t.values[1],
                lost_gpu_hours=t.values[2],
                budget_violations=0,
            ),
            holdout=hold(i + 1),
        )
        for i, t in enumerate(best)
    ]
    chosen, why = choose(default, entries)
    finished = study.get_trials(deepcopy=False, states=FINISHED)
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
    chosen_params = next((e.params for e in entries if e.label == chosen), {})
    return report, space.policy(chosen_params)


def _scores_of_trial(study: optuna.Study, values: dict[str, Any] | None) -> Scores | None:
    """The scores of a finished trial with exactly these values, if the study has one."""
    if values is None:
        return None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if dict(t.params) == values:
            a, p95, lost = t.values
            return Scores(a, p95, lost, int(t.user_attrs.get("budgetViolations", 0)))
    return None


def _score(space: TuningSpace, problem: Problem, params: dict[str, Any]) -> Scores:
    return problem.score(space.policy(params))


def _score_all(
    space: TuningSpace,
    runs: list[tuple[Problem, dict[str, Any]]],
    jobs: int,
    setup: Callable[[], None] | None,
) -> list[Scores]:
    if jobs <= 1 or len(runs) <= 1:
        return [_score(space, problem, params) for problem, params in runs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=ctx, initializer=setup) as pool:
        futures = [pool.submit(_score, space, problem, params) for problem, params in runs]
        return [f.result() for f in futures]


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
