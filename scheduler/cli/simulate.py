"""`wattpack simulate` and `wattpack make-cluster`: replay traces against schedulers."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from scheduler.cli import documents, files, render
from scheduler.cli.formats import (
    DocumentFormat,
    OutputFormat,
    out_option,
    output_option,
    print_document,
    write_document,
)
from scheduler.cli.numbers import (
    MAX_HOURS,
    MAX_RATE,
    MAX_RUNS,
    MAX_SCALE,
    MAX_TARGET,
    finite,
    fraction,
)
from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot
from scheduler.model import limits as lim
from scheduler.simulate.result import SimReport

log = structlog.get_logger("wattpack.cli")


class TraceFormat(StrEnum):
    AUTO = "auto"
    OPENB = "openb"
    ITP = "itp"
    CSV = "csv"


class Protocol(StrEnum):
    REPLAY = "replay"
    FGD = "fgd"


class MigrationMode(StrEnum):
    NONE = "none"
    REACTIVE = "reactive"
    PROACTIVE = "proactive"


# Replay assumptions `simulate` and `tune` share: how much work an eviction or a failure costs.
ResumeEvicted = Annotated[
    bool,
    typer.Option(
        help="replay: an evicted pod checkpoints and later runs only what it had left "
        "(else it restarts from the beginning and its work counts as lost)."
    ),
]
CheckpointSeconds = Annotated[
    float | None,
    typer.Option(
        metavar="S",
        min=0,
        max=lim.MAX_SECONDS,
        callback=finite,
        help="replay: jobs checkpoint this often; a killed pod loses only the work "
        "since its last checkpoint (default: it restarts from the beginning).",
    ),
]
# The replay's budgets: simulate and tune take the same.
FacilityBudget = Annotated[
    float | None, fraction("Facility budget = F x GPU nameplate (replaces it).")
]
RackBudget = Annotated[float | None, fraction("Every leaf domain's budget = F x its nameplate.")]


def detect_format(path: str) -> str:
    """The trace kind from the header line: openb, ITP or the generic CSV."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = {c.strip() for c in f.readline().split(",")}
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}", "check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file", "give a CSV trace") from None
    if {"job_id", "submission_time", "num_gpu"} <= header:
        return "itp"
    if {"name", "num_gpu", "gpu_milli"} <= header:
        return "openb"
    if "submit" in header:
        return "csv"
    raise UserError(
        f"{path} line 1: header matches no known trace format",
        "pass --trace-format openb|itp|csv, or see docs/trace-csv.md for the generic columns",
    )


def load_cluster(path: str, nodes_per_rack: int) -> ClusterSnapshot:
    """A snapshot file with no pods, or an openb node list (CSV)."""
    if path.endswith(".csv"):
        from scheduler.traces import read_openb

        return read_openb(path, "", pending=False, nodes_per_rack=nodes_per_rack)
    cluster = files.load_snapshot(path)
    if cluster.pods:
        raise UserError(
            f"{path}: the cluster spec lists {len(cluster.pods)} pods",
            "remove them: the trace brings the pods (a spec is a snapshot with pods: [])",
        )
    return cluster


def console_progress(enabled: bool) -> Progress | None:
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        return None
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    return bar


def register(app: typer.Typer, problems: type[Exception]) -> None:
    @app.command("simulate")
    def simulate_command(
        trace: Annotated[str, typer.Option(metavar="CSV", help="Trace file to replay.")],
        cluster: Annotated[
            str,
            typer.Option(
                metavar="FILE",
                help="Cluster spec: a snapshot (YAML/JSON) with no pods, or an openb node list.",
            ),
        ],
        scheduler: Annotated[
            list[str] | None,
            typer.Option(
                metavar="NAME",
                help="wattpack | spread | binpack | volcano-binpack | best-fit | fgd | all; "
                "repeat to compare several. Default: wattpack.",
            ),
        ] = None,
        policy_file: Annotated[
            str | None, typer.Option("--policy", metavar="FILE", help="Packing policy.")
        ] = None,
        trace_format: Annotated[
            TraceFormat, typer.Option(help="auto: from the trace's header line.")
        ] = TraceFormat.AUTO,
        protocol: Annotated[
            Protocol,
            typer.Option(
                help="replay: arrivals and departures in time. fgd: random order, no "
                "departures, until --target x capacity (the FGD paper's protocol)."
            ),
        ] = Protocol.REPLAY,
        seeds: Annotated[
            int, typer.Option(min=1, max=MAX_RUNS, help="fgd: runs, seeds first-seed on.")
        ] = 10,
        first_seed: Annotated[
            int, typer.Option(min=0, max=lim.MAX_SEED, help="fgd: the first seed.")
        ] = 0,
        target: Annotated[
            float,
            typer.Option(
                min=0.01,
                max=MAX_TARGET,
                callback=finite,
                help="fgd: stop at this demand / GPU capacity.",
            ),
        ] = 1.3,
        step: Annotated[
            float,
            typer.Option(
                min=0.001, max=1, callback=finite, help="fgd: demand step between measurements."
            ),
        ] = 0.05,
        cycle_seconds: Annotated[
            float,
            typer.Option(
                min=0.0,
                max=lim.MAX_SECONDS,
                callback=finite,
                help="replay: wattpack cycles at most this often.",
            ),
        ] = 10.0,
        arrival_scale: Annotated[
            float,
            typer.Option(
                min=0.000001,
                max=MAX_SCALE,
                callback=finite,
                help="replay: divide submit times by this (>1: denser).",
            ),
        ] = 1.0,
        horizon: Annotated[
            float | None,
            typer.Option(
                metavar="S",
                min=0,
                max=lim.MAX_SECONDS,
                callback=finite,
                help="replay: stop at this simulated time.",
            ),
        ] = None,
        resume_evicted: ResumeEvicted = False,
        facility_budget: FacilityBudget = None,
        rack_budget: RackBudget = None,
        time_limit: Annotated[
            float,
            typer.Option(
                metavar="S",
                max=lim.MAX_TIME_LIMIT_SECONDS,
                callback=finite,
                help="wattpack's solver budget per cycle, in CP-SAT deterministic seconds "
                "(reproducible; replaces the policy's timeLimitSeconds).",
            ),
        ] = 1.0,
        gpus_per_node: Annotated[
            int,
            typer.Option(
                min=1,
                max=lim.MAX_GPUS_PER_NODE,
                help="itp: GPUs per node, to split big jobs into gangs.",
            ),
        ] = 8,
        nodes_per_rack: Annotated[
            int,
            typer.Option(
                min=1, max=lim.MAX_NODES, help="openb node list as cluster: nodes per rack."
            ),
        ] = 16,
        gpu_failures: Annotated[
            float,
            typer.Option(
                metavar="R",
                min=0,
                max=MAX_RATE,
                callback=finite,
                help="replay: inject GPU failures, R per 1,000 GPU-days (a seeded Poisson "
                "process); the work on a failed GPU restarts from the queue.",
            ),
        ] = 0.0,
        failure_seed: Annotated[
            int, typer.Option(min=0, max=lim.MAX_SEED, help="replay: failure seed.")
        ] = 0,
        migration: Annotated[
            MigrationMode,
            typer.Option(
                help="replay: what a GPU failure meets. none: it goes unnoticed until the job "
                "hangs --hang-seconds past it; reactive: the job is queued again at once; "
                "proactive: as reactive, and alarms before failures (--warned-share, "
                "--lead-hours, --false-alarms) turn GPUs degraded, so wattpack migrates first."
            ),
        ] = MigrationMode.REACTIVE,
        checkpoint_seconds: CheckpointSeconds = None,
        hang_seconds: Annotated[
            float,
            typer.Option(
                metavar="S",
                min=0,
                max=lim.MAX_SECONDS,
                callback=finite,
                help="replay, --migration none: see there.",
            ),
        ] = 1800.0,
        warned_share: Annotated[
            float,
            typer.Option(
                min=0,
                max=1,
                callback=finite,
                help="replay: share of failures that raise an alarm first.",
            ),
        ] = 0.7,
        lead_hours: Annotated[
            float,
            typer.Option(
                min=0,
                max=MAX_HOURS,
                callback=finite,
                help="replay: mean hours from an alarm to its failure.",
            ),
        ] = 6.0,
        false_alarms: Annotated[
            float,
            typer.Option(
                min=0,
                max=MAX_RATE,
                callback=finite,
                help="replay: GPUs that raise an alarm and never fail, per failure.",
            ),
        ] = 0.5,
        node_step: Annotated[
            int,
            typer.Option(
                min=1,
                max=lim.MAX_NODES,
                help="Keep every N-th node of the cluster (a smaller replica).",
            ),
        ] = 1,
        report: Annotated[
            str | None,
            typer.Option(metavar="DIR", help="Write report.json and report.html there."),
        ] = None,
        snapshot_at: Annotated[
            list[float] | None,
            typer.Option(
                metavar="T",
                callback=finite,
                help="replay: write the cluster as each scheduler left it at simulated time T "
                "(seconds, after --arrival-scale) as a snapshot: running pods in place, queued "
                "pods pending with waitingSeconds. Repeatable; needs --snapshot-dir.",
            ),
        ] = None,
        snapshot_dir: Annotated[
            str | None,
            typer.Option(
                metavar="DIR", help="replay: where --snapshot-at writes <scheduler>-t<T>.json."
            ),
        ] = None,
        output: Annotated[
            OutputFormat, output_option(OutputFormat, "table for people; json or yaml: the report.")
        ] = OutputFormat.TABLE,
        progress: Annotated[
            bool, typer.Option(help="A progress bar on stderr (only on a terminal).")
        ] = True,
    ) -> None:
        """Replay a trace on a cluster with one or more schedulers; report the metrics.

        Exit codes: 0 ok, 1 a power budget was exceeded (a bug), 2 bad input."""
        from scheduler.simulate import (
            SCHEDULERS,
            InflationSettings,
            ReplaySettings,
            every_kth_node,
            simulate,
            with_budgets,
        )
        from scheduler.simulate.failures import Degradation, alarms_for, random_failures
        from scheduler.traces import read_trace, require_times

        names = _scheduler_names(scheduler or ["wattpack"], SCHEDULERS)
        times = tuple(sorted(set(snapshot_at or ())))
        written: set[tuple[str, float]] = set()
        sink = _snapshot_writer(times, snapshot_dir, protocol, written)
        policy = files.load_policy(policy_file)
        if time_limit <= 0:
            raise UserError(f"--time-limit {time_limit} is not positive", "give a value > 0")
        solver = policy.solver.model_copy(update={"time_limit_seconds": time_limit})
        policy = policy.model_copy(update={"solver": solver})
        inventory = with_budgets(
            every_kth_node(load_cluster(cluster, nodes_per_rack), node_step),
            facility=facility_budget,
            leaf=rack_budget,
        )
        kind = detect_format(trace) if trace_format is TraceFormat.AUTO else trace_format.value
        if protocol is Protocol.REPLAY:
            require_times(kind, trace)
        opts = {"gpus_per_node": gpus_per_node} if kind == "itp" else {}
        jobs = read_trace(kind, trace, **opts)
        log.info("trace_loaded", kind=kind, jobs=len(jobs), nodes=len(inventory.nodes))
        if protocol is Protocol.FGD and "wattpack" in names and policy.preemption:
            # Where the trace has priorities, wattpack would have evicted: say it will not.
            ranked = len({p.priority for j in jobs for p in j.pods}) > 1
            (log.warning if ranked else log.info)(
                "fgd_without_preemption",
                reason="the FGD protocol has no evictions: wattpack plans it with preemption off",
            )
        bar = console_progress(progress)
        tasks: dict[str, TaskID] = {}

        def tick(name: str, done: int, total: int) -> None:
            if bar is None:
                return
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        failures: tuple = ()
        alarms: tuple = ()
        if gpu_failures:
            first = min(j.submit for j in jobs) / arrival_scale
            last = horizon if horizon is not None else max(j.submit for j in jobs) / arrival_scale
            failures = random_failures(inventory, gpu_failures, first, last, failure_seed)
            model = Degradation(warned_share, lead_hours * 3600, false_alarms, failure_seed)
            alarms = alarms_for(inventory, failures, model, first, last)
        described = f"{trace} ({kind})"
        if arrival_scale != 1:
            described += f", arrivals x{arrival_scale:g} denser"
        if bar is not None:
            bar.start()
        try:
            result = simulate(
                inventory,
                jobs,
                names,
                policy,
                trace=described,
                protocol=protocol.value,
                replay_settings=ReplaySettings(
                    cycle_seconds,
                    arrival_scale,
                    horizon,
                    failures,
                    resume_evicted,
                    times,
                    sink,
                    alarms,
                    migration.value,
                    checkpoint_seconds,
                    hang_seconds,
                ),
                inflation_settings=InflationSettings(
                    tuple(range(first_seed, first_seed + seeds)), target, step
                ),
                progress=tick,
            )
        finally:
            if bar is not None:
                bar.stop()
        missed = [(n, t) for n in names for t in times if (n, t) not in written]
        if missed:
            log.warning(
                "snapshots_not_taken",
                reason="past the end of the replay (the last arrival, or --horizon)",
                times=sorted({t for _, t in missed}),
            )
        if report is not None:
            from scheduler.simulate.report import write_report

            try:
                written = write_report(result, Path(report))
            except OSError as e:
                raise UserError(
                    f"--report: cannot write {report} ({e.strerror})", "name a writable folder"
                ) from None
            log.info("report_written", files=[str(p) for p in written])
            typer.echo(f"report: {' and '.join(str(p) for p in reversed(written))}", err=True)
        if output is OutputFormat.TABLE:
            summary_tables(render.stdout_console(), result)
        else:
            print_document(result.model_dump(by_alias=True, mode="json"), output.value)
        bad = sum(r.budget_violations for r in result.runs)
        if bad:
            raise problems(f"{bad} events exceeded a power budget")

    @app.command("make-cluster")
    def make_cluster_command(
        nodes: Annotated[int, typer.Option(min=1, max=lim.MAX_NODES, help="Number of GPU nodes.")],
        gpus_per_node: Annotated[
            int, typer.Option(min=1, max=lim.MAX_GPUS_PER_NODE, help="GPUs per node.")
        ] = 8,
        model: Annotated[str, typer.Option(help="GPU model name.")] = "H100-SXM",
        tdp_watts: Annotated[
            int, typer.Option(min=1, max=lim.MAX_GPU_WATTS, help="GPU TDP, watts.")
        ] = 700,
        idle_watts: Annotated[
            int, typer.Option(min=0, max=lim.MAX_GPU_WATTS, help="GPU idle draw, watts.")
        ] = 75,
        cpu_milli: Annotated[
            int, typer.Option(min=0, max=lim.MAX_CPU_MILLI, help="CPU per node, millicores.")
        ] = 128_000,
        memory_mib: Annotated[
            int, typer.Option(min=0, max=lim.MAX_MEMORY_MIB, help="Memory per node, MiB.")
        ] = 2_097_152,
        nodes_per_rack: Annotated[
            int, typer.Option(min=1, max=lim.MAX_NODES, help="Nodes per rack.")
        ] = 4,
        racks_per_row: Annotated[
            int, typer.Option(min=1, max=lim.MAX_NODES, help="Racks per row.")
        ] = 8,
        facility_budget: Annotated[
            float | None,
            fraction("Facility budget = F x nameplate."),
        ] = None,
        rack_budget: Annotated[
            float | None,
            fraction("Rack budgets = F x nameplate."),
        ] = None,
        name: Annotated[str, typer.Option(help="Cluster name.")] = "generated",
        out: Annotated[str | None, out_option()] = None,
        output: Annotated[
            DocumentFormat | None,
            output_option(DocumentFormat, "Default: from the --out extension, else yaml."),
        ] = None,
    ) -> None:
        """Write a cluster spec of identical GPU nodes (for traces without an inventory)."""
        from scheduler.simulate import make_cluster, with_budgets

        if idle_watts > tdp_watts:
            raise UserError(
                f"--idle-watts {idle_watts} exceeds --tdp-watts {tdp_watts}", "lower the idle draw"
            )
        spec = with_budgets(
            make_cluster(
                nodes=nodes,
                gpus_per_node=gpus_per_node,
                model=model,
                tdp_watts=tdp_watts,
                idle_watts=idle_watts,
                cpu_milli=cpu_milli,
                memory_mib=memory_mib,
                nodes_per_rack=nodes_per_rack,
                racks_per_row=racks_per_row,
                name=name,
            ),
            facility=facility_budget,
            leaf=rack_budget,
        )
        write_document(spec.model_dump(by_alias=True, mode="json"), output, out, "cluster")


def _snapshot_writer(
    times: tuple[float, ...],
    folder: str | None,
    protocol: Protocol,
    written: set[tuple[str, float]],
) -> Callable[[str, float, ClusterSnapshot], None] | None:
    """The sink that writes each replay snapshot to FOLDER/<scheduler>-t<T>.json, or None."""
    if not times and folder is None:
        return None
    if not times:
        raise UserError(
            "--snapshot-dir without --snapshot-at writes nothing",
            "add --snapshot-at T (simulated seconds), or drop --snapshot-dir",
        )
    if folder is None:
        raise UserError("--snapshot-at needs --snapshot-dir", "name the folder to write them to")
    if protocol is not Protocol.REPLAY:
        raise UserError(
            "--snapshot-at works only with --protocol replay", "drop it, or replay in time"
        )
    if times[0] < 0:
        raise UserError(f"--snapshot-at {times[0]:g} is negative", "give times of 0 or more")
    from scheduler.simulate.snapshot_at import time_label

    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"--snapshot-dir: cannot create {folder} ({e.strerror})", "name a writable folder"
        ) from None

    def write(scheduler: str, at: float, snapshot: ClusterSnapshot) -> None:
        path = out / f"{scheduler}-t{time_label(at)}.json"
        data = snapshot.model_dump(by_alias=True, mode="json")
        documents.write_text(str(path), documents.render(data, "json"))
        written.add((scheduler, at))
        pending = sum(p.node is None for p in snapshot.pods)
        log.info("snapshot_written", path=str(path), pods=len(snapshot.pods), pending=pending)

    return write


def _scheduler_names(given: list[str], known: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for name in given:
        for part in name.split(","):
            part = part.strip()
            if part == "all":
                names.extend(known)
            elif part in known:
                names.append(part)
            else:
                raise UserError(
                    f"--scheduler: unknown scheduler '{part}'",
                    f"use one of: {', '.join(known)}, or all",
                )
    return list(dict.fromkeys(names))


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def summary_tables(console: Console, report: SimReport) -> None:
    console.print(f"[bold]{report.trace}[/bold] on {report.cluster} ({report.protocol})")
    if report.runs:
        t = Table(title="Replay: allocation (allocated milli-GPU / capacity)")
        for col in ("scheduler", "overall", "while waiting", "time >=90%", "of bound", "over"):
            t.add_column(col, justify="left" if col == "scheduler" else "right")
        for r in report.runs:
            t.add_row(
                r.scheduler,
                _pct(r.allocation),
                _pct(r.allocation_while_waiting),
                _pct(r.share_at_90_while_waiting),
                _pct(r.of_bound_while_waiting),
                str(r.budget_violations),
            )
        console.print(t)
        console.print(
            "while waiting: time-weighted while work waited; time >=90%: share of that time at "
            "90% or more; of bound: against the power-feasible maximum; over: budget violations"
        )
        w = Table(title="Replay: queue waits (seconds) and cycle times")
        for col in ("scheduler", "kind", "p50", "p95", "never started", "cycle p95 s"):
            w.add_column(col, justify="left" if col in ("scheduler", "kind") else "right")
        for r in report.runs:
            for k in r.waits:
                w.add_row(
                    r.scheduler,
                    k.kind,
                    f"{k.wait_seconds.p50:.0f}",
                    f"{k.wait_seconds.p95:.0f}",
                    str(k.never_started),
                    f"{r.timings.cycle_seconds.p95:.3f}",
                )
        console.print(w)
    if report.curves:
        t = Table(title="FGD protocol: milli-GPU allocation, mean over seeds")
        t.add_column("scheduler")
        levels = report.curves[0].demand
        at_full = min(range(len(levels)), key=lambda i: abs(levels[i] - 1.0))
        shown = sorted({at_full, len(levels) - 1})
        for i in shown:
            t.add_column(f"{levels[i]:.0%} demand", justify="right")
        t.add_column("GPUs with work", justify="right")
        t.add_column("unallocated GPUs", justify="right")
        for c in report.curves:
            means = [sum(s[i] for s in c.milli) / len(c.milli) for i in shown]
            whole = sum(s[-1] for s in c.whole) / len(c.whole)
            unalloc = sum(c.unallocated_gpus) / len(c.unallocated_gpus)
            t.add_row(c.scheduler, *map(_pct, means), _pct(whole), f"{unalloc:.1f}")
        console.print(t)
