"""The search: optuna's multi-objective TPE sampler over the trace replay, one study in
optuna's storage (a local SQLite file, or PostgreSQL that workers on many machines share).

Each trial is a policy from the space, replayed on the tuning slice of the trace by wattpack's
simulator. Objectives: allocation while work waits (up), inference p95 wait (down), and
disruption, GPU-hours lost to evictions, failures and moves (down). A trial whose replay broke
a power budget is infeasible (optuna's constraint), never on the front."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import structlog

from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, PackingPolicy
from scheduler.simulate.replay import ReplaySettings, replay
from scheduler.simulate.result import RunResult
from scheduler.simulate.run import simulation_policy
from scheduler.traces.workload import TraceJob
from scheduler.tune.space import Param, TuningSpace

log = structlog.get_logger(__name__)

_TRIES = 4  # opening a study on a database that another worker is setting up

OBJECTIVES = ("allocationWhileWaiting", "inferenceP95WaitSeconds", "lostGpuHours")
DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True)
class Scores:
    allocation_while_waiting: float
    inference_p95_wait_seconds: float
    lost_gpu_hours: float
    budget_violations: int

    @property
    def values(self) -> tuple[float, float, float]:
        return (
            self.allocation_while_waiting,
            self.inference_p95_wait_seconds,
            self.lost_gpu_hours,
        )

    def beats(self, other: Scores) -> tuple[int, int]:
        """How many objectives this is better on, and how many worse (ties within a
        thousandth count as neither)."""
        better = worse = 0
        for mine, theirs, direction in zip(self.values, other.values, DIRECTIONS, strict=True):
            scale = max(abs(mine), abs(theirs), 1e-9)
            if abs(mine - theirs) <= 1e-3 * scale:
                continue
            if (mine > theirs) == (direction == "maximize"):
                better += 1
            else:
                worse += 1
        return better, worse


def scores_of(run: RunResult) -> Scores:
    inference = [w for w in run.waits if w.kind == "inference"]
    p95 = inference[0].wait_seconds.p95 if inference and inference[0].wait_seconds.count else 0.0
    return Scores(
        allocation_while_waiting=run.allocation_while_waiting,
        inference_p95_wait_seconds=p95,
        lost_gpu_hours=run.gpu_seconds_lost / 3600,
        budget_violations=run.budget_violations,
    )


@dataclass(frozen=True)
class Problem:
    """What every trial replays: picklable, so that worker processes get it whole."""

    inventory: ClusterSnapshot
    jobs: tuple[TraceJob, ...]
    settings: ReplaySettings

    def score(self, policy: PackingPolicy) -> Scores:
        run = replay(
            self.inventory, self.jobs, "wattpack", simulation_policy(policy), self.settings
        )
        return scores_of(run)


def suggest(trial: optuna.Trial, p: Param) -> Any:
    if p.float_range is not None:
        r = p.float_range
        return trial.suggest_float(p.path, r.low, r.high, log=r.log)
    if p.int_range is not None:
        return trial.suggest_int(p.path, p.int_range.low, p.int_range.high)
    return trial.suggest_categorical(p.path, list(p.choices or []))


def _objective(space: TuningSpace, problem: Problem) -> Callable[[optuna.Trial], Sequence[float]]:
    def run(trial: optuna.Trial) -> Sequence[float]:
        # Which worker ran it: studies are shared by processes on many machines.
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        values = {p.path: suggest(trial, p) for p in space.params}
        s = problem.score(space.policy(values))
        trial.set_user_attr("budgetViolations", s.budget_violations)
        trial.set_constraint("budgetViolations", float(s.budget_violations))  # > 0: infeasible
        return s.values

    return run


def sampler(seed: int) -> optuna.samplers.BaseSampler:
    # A replay costs minutes, so studies have tens of trials: NSGA-II's first generation (50)
    # would all be random draws, where TPE models the front after a few. The constant liar
    # keeps workers that ask at once from drawing the same policy; the budget constraint
    # (trial.set_constraint) keeps infeasible trials off the front.
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=8, multivariate=True, constant_liar=True
    )


def open_study(storage: str, name: str, seed: int) -> optuna.Study:
    """The study, made or joined (a study of that name in the storage resumes)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(_TRIES):
        try:
            return optuna.create_study(
                storage=storage,
                study_name=name,
                directions=list(DIRECTIONS),
                sampler=sampler(seed),
                load_if_exists=True,
            )
        except ValueError as e:  # e.g. a study of that name with other directions
            raise UserError(f"--study {name}: {e}", "name another study") from None
        except Exception as e:  # the storage's driver: unreachable, refused, bad URL
            text = str(e).strip()
            # Workers started together on a new database race to make optuna's tables: the
            # loser finds them made a moment later.
            if attempt + 1 < _TRIES and ("duplicate key" in text or "already exists" in text):
                time.sleep(0.5 * (attempt + 1))
                continue
            first = text.splitlines()[0] if text else type(e).__name__
            raise UserError(
                f"--storage {safe_url(storage)}: cannot open the study ({first})",
                "check the URL, that the database server runs and takes connections, and the "
                "credentials",
            ) from None
    raise AssertionError("unreachable")


def safe_url(url: str) -> str:
    """The URL without its password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


# Trials that count toward --trials: those that ended, however they ended.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)


def work(
    space: TuningSpace,
    problem: Problem,
    storage: str,
    name: str,
    trials: int,
    seed: int,
    setup: Callable[[], None] | None = None,
    progress: Callable[[optuna.Study], None] | None = None,
) -> optuna.Study:
    """One worker: trials until the study holds `trials` finished ones (whoever ran them).
    `setup` (picklable) sets the process up as its parent is: logs to stderr, as configured."""
    if setup is not None:
        setup()
    study = open_study(storage, name, seed)
    callbacks: list = [optuna.study.MaxTrialsCallback(trials, states=FINISHED)]  # type: ignore[type-arg]
    if progress is not None:
        callbacks.append(lambda s, _t: progress(s))
    if len(study.get_trials(deepcopy=False, states=FINISHED)) < trials:
        study.optimize(_objective(space, problem), n_trials=trials, callbacks=callbacks)
    return study


def run_workers(
    space: TuningSpace,
    problem: Problem,
    storage: str,
    name: str,
    trials: int,
    jobs: int,
    seed: int,
    progress: Callable[[optuna.Study], None] | None = None,
    setup: Callable[[], None] | None = None,
) -> optuna.Study:
    """`jobs` worker processes (1: this one) on one study; returns it once `trials` are done.
    A new study's first trial is the base policy, where its values lie in the space: the
    default is then scored like every trial, and on the front if nothing beats it."""
    study = open_study(storage, name, seed)
    base = space.base_values()
    if base is not None and not study.get_trials(deepcopy=False):
        study.enqueue_trial(base)
    if jobs <= 1:
        return work(space, problem, storage, name, trials, seed, progress=progress)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=work, args=(space, problem, storage, name, trials, seed + i, setup))
        for i in range(jobs)
    ]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=1.0)
            if progress is not None:
                progress(study)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed and len(study.get_trials(deepcopy=False, states=FINISHED)) < trials:
        raise UserError(
            f"{len(failed)} of {jobs} tuning workers failed (exit codes {failed})",
            "run with --jobs 1 to see the error",
        )
    return study


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The feasible Pareto-best trials, best allocation first."""
    best = [t for t in study.best_trials if t.user_attrs.get("budgetViolations", 1) == 0]
    return sorted(best, key=lambda t: (-t.values[0], t.values[1], t.values[2], t.number))
