"""`wattpack tune`: search packing policies on a trace replay (scheduler.tune)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.table import Table

from scheduler.cli import files, logs, render
from scheduler.cli.formats import OutputFormat, output_option, print_document
from scheduler.cli.numbers import MAX_RUNS, MAX_SCALE, finite
from scheduler.cli.simulate import (
    CheckpointSeconds,
    FacilityBudget,
    RackBudget,
    ResumeEvicted,
    TraceFormat,
    console_progress,
    detect_format,
    load_cluster,
)
from scheduler.errors import UserError
from scheduler.model import limits as lim
from scheduler.tune.space import TuningSpace

log = structlog.get_logger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_command(
        trace: Annotated[str, typer.Option(metavar="CSV", help="Trace to tune on.")],
        cluster: Annotated[
            str, typer.Option(metavar="FILE", help="Cluster spec (as for simulate).")
        ],
        space_file: Annotated[
            str, typer.Option("--space", metavar="SPACE", help="What to search (TuningSpace).")
        ],
        trials: Annotated[
            int, typer.Option(min=1, max=MAX_RUNS, help="Finished trials the study needs.")
        ] = 40,
        storage: Annotated[
            str | None,
            typer.Option(
                metavar="URL",
                help="optuna storage: sqlite:///FILE, or postgresql://user:pass@host/db for "
                "workers on many machines. Default: OUT/study.db.",
            ),
        ] = None,
        study: Annotated[
            str, typer.Option(help="Study name; workers with the same name share it; resumes.")
        ] = "wattpack",
        jobs: Annotated[
            int, typer.Option(min=1, max=MAX_RUNS, help="Worker processes on this machine.")
        ] = 1,
        out: Annotated[
            str, typer.Option(metavar="DIR", help="report.json, report.html, policy.yaml.")
        ] = "tune-out",
        holdout: Annotated[
            float,
            typer.Option(
                min=0.0,
                max=0.9,
                callback=finite,
                help="Share of the trace's later arrivals kept for the holdout.",
            ),
        ] = 0.3,
        holdout_trace: Annotated[
            str | None,
            typer.Option(metavar="CSV", help="Score the front on this trace instead (whole)."),
        ] = None,
        trace_format: Annotated[TraceFormat, typer.Option()] = TraceFormat.AUTO,
        cycle_seconds: Annotated[
            float, typer.Option(min=0.0, max=lim.MAX_SECONDS, callback=finite)
        ] = 10.0,
        arrival_scale: Annotated[
            float, typer.Option(min=0.000001, max=MAX_SCALE, callback=finite)
        ] = 1.0,
        horizon: Annotated[
            float | None,
            typer.Option(metavar="S", min=0, max=lim.MAX_SECONDS, callback=finite),
        ] = None,
        resume_evicted: ResumeEvicted = False,
        checkpoint_seconds: CheckpointSeconds = None,
        time_limit: Annotated[
            float | None,
            typer.Option(
                metavar="S",
                min=0.001,
                max=lim.MAX_TIME_LIMIT_SECONDS,
                callback=finite,
                help="The solver's budget per cycle in every replay, the default policy's "
                "included (as simulate's --time-limit; the default policy's own is 10 s). "
                "Default: each policy's timeLimitSeconds.",
            ),
        ] = None,
        facility_budget: FacilityBudget = None,
        rack_budget: RackBudget = None,
        gpus_per_node: Annotated[int, typer.Option(min=1, max=lim.MAX_GPUS_PER_NODE)] = 8,
        nodes_per_rack: Annotated[int, typer.Option(min=1, max=lim.MAX_NODES)] = 4,
        node_step: Annotated[
            int, typer.Option(min=1, max=lim.MAX_NODES, help="Keep every N-th node.")
        ] = 1,
        seed: Annotated[int, typer.Option(min=0, max=lim.MAX_SEED, help="Sampler seed.")] = 0,
        output: Annotated[
            OutputFormat, output_option(OutputFormat, "table for people; json or yaml: the report.")
        ] = OutputFormat.TABLE,
        progress: Annotated[bool, typer.Option(help="A progress bar on stderr.")] = True,
    ) -> None:
        """Search packing policies with optuna (multi-objective) over the trace replay; score
        the Pareto front on a holdout; write the chosen policy as PackingPolicy YAML.

        Exit codes: 0 ok, 2 bad input (space, trace, cluster, storage)."""
        from scheduler.simulate import every_kth_node, with_budgets
        from scheduler.simulate.replay import ReplaySettings
        from scheduler.traces import read_trace, require_times
        from scheduler.tune.outcome import split
        from scheduler.tune.report import HEAD, rows, write
        from scheduler.tune.run import TuneSettings, tune

        space = with_time_limit(files.load(space_file, TuningSpace, "space"), time_limit)
        space.check()
        inventory = with_budgets(
            every_kth_node(load_cluster(cluster, nodes_per_rack), node_step),
            facility=facility_budget,
            leaf=rack_budget,
        )

        def read(path: str) -> list:  # type: ignore[type-arg]
            kind = detect_format(path) if trace_format is TraceFormat.AUTO else trace_format.value
            require_times(kind, path)
            opts = {"gpus_per_node": gpus_per_node} if kind == "itp" else {}
            return list(read_trace(kind, path, **opts))

        jobs_all = read(trace)
        if holdout_trace is not None:
            tuning, check = jobs_all, read(holdout_trace)
            described = f"{trace} (tuning), {holdout_trace} (holdout)"
        else:
            tuning, check = split(jobs_all, holdout)
            described = f"{trace}: first {len(tuning)} jobs to tune, last {len(check)} held out"
        if not tuning:
            raise UserError(f"{trace}: nothing left to tune on", "lower --holdout")
        folder = Path(out)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {out}: {e.strerror}", "name a writable folder") from None
        url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
        settings = TuneSettings(
            storage=url,
            study=study,
            trials=trials,
            jobs=jobs,
            seed=seed,
            # The base policy's power factors are the GPUs' real draw; a trial's are only
            # what its planner believes.
            replay=ReplaySettings(
                cycle_seconds,
                arrival_scale,
                horizon,
                resume_evicted=resume_evicted,
                checkpoint_seconds=checkpoint_seconds,
                physics=space.policy({}).power_factors,
            ),
        )
        bar = console_progress(progress)
        task = bar.add_task("trials", total=trials) if bar is not None else None

        def tick(s) -> None:  # type: ignore[no-untyped-def]
            if bar is None or task is None:
                return
            done = [t for t in s.get_trials(deepcopy=False) if t.values is not None]
            ok = [t for t in done if not t.user_attrs.get("budgetViolations", 1)]
            best = max((t.values[0] for t in ok), default=0.0)
            bar.update(task, completed=len(done), description=f"trials (best alloc {best:.2%})")

        if bar is not None:
            bar.start()
        try:
            setup = partial(logs.configure, *logs.current())  # for worker processes
            report, chosen = tune(space, inventory, tuning, check, settings, described, tick, setup)
        finally:
            if bar is not None:
                bar.stop()
        written = write(report, chosen, folder)
        log.info("tune_written", files=[str(p) for p in written])
        if output is not OutputFormat.TABLE:
            print_document(report.model_dump(by_alias=True, mode="json"), output.value)
            return
        table = Table(title=f"study {report.study}: {report.trials} trials, Pareto front")
        for h in HEAD[:-1]:  # the values are in report.json and report.html
            table.add_column(h)
        for r in rows(report):
            table.add_row(*r[:-1])
        console = render.stdout_console()
        console.print(table)
        console.print(f"chosen: {report.chosen} ({report.why})")
        console.print(f"policy: {written[2]}; report: {written[1]}")


def with_time_limit(space: TuningSpace, seconds: float | None) -> TuningSpace:
    """The space with the solver's budget fixed in its base, so that every trial and the
    default row are replayed with it."""
    if seconds is None:
        return space
    if any(p.path == "solver.timeLimitSeconds" for p in space.params):
        raise UserError(
            "--time-limit: the space searches solver.timeLimitSeconds",
            "drop the flag or that entry of the space",
        )
    solver = space.base.get("solver") or {}
    if not isinstance(solver, dict):
        raise UserError("space base.solver: not a mapping", "give solver settings as a mapping")
    base = {**space.base, "solver": {**solver, "timeLimitSeconds": seconds}}
    return space.model_copy(update={"base": base})
