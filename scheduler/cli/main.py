"""The `wattpack` command. Exit codes are decided in one place, _ExitCodes: 0 ok, 1 the result
has problems (check found violations, plan --fail-on-unplaced left pods pending, a simulation
exceeded a power budget), 2 bad input."""

from __future__ import annotations

import os
import signal
import sys
from enum import StrEnum
from importlib import metadata
from typing import Annotated

import structlog
import typer
from typer.core import TyperGroup

from scheduler.cli import files, logs, render
from scheduler.cli import simulate as simulate_commands
from scheduler.cli import tune as tune_commands
from scheduler.cli.formats import (
    DocumentFormat,
    OutputFormat,
    out_option,
    output_option,
    print_document,
    write_document,
)
from scheduler.cli.numbers import finite, fraction
from scheduler.cli.spinner import spinner
from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan
from scheduler.model.limits import MAX_NODES, MAX_TIME_LIMIT_SECONDS
from scheduler.tune.space import TuningSpace

log = structlog.get_logger("wattpack.cli")


# The shell's code for a command ended by SIGINT; SIGTERM gets the same (README, Exit codes).
INTERRUPTED = 130


class Problems(Exception):
    """The command ran, and its result has problems (exit 1)."""


class _ExitCodes(TyperGroup):
    """The one place where errors become exit codes (also under typer's CliRunner)."""

    def main(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Parsing errors (an unknown option, a missing argument) happen before invoke: they get
        # the same one line and exit code 2 as every other bad input.
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except typer.Abort:
            # Ctrl-C, or SIGTERM (see run): the command was stopped, not failed.
            sys.exit(INTERRUPTED)
        except Exception as e:
            # Click's usage errors (typer vendors its own click): exit code 2, a message.
            if getattr(e, "exit_code", None) != 2 or not hasattr(e, "format_message"):
                raise
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                where = ctx.command_path if ctx is not None else "wattpack"
                typer.echo(f"error: {e.format_message()}; see '{where} --help'", err=True)
            sys.exit(2)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except UserError as e:
            typer.echo(e.line(), err=True)
            raise typer.Exit(2) from None
        except Problems as e:
            typer.echo(f"problem: {e}", err=True)
            raise typer.Exit(1) from None
        except BrokenPipeError:
            # The reader (`| head`) closed stdout early: not a failure. Point stdout at devnull
            # so that flushing it at exit does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None


app = typer.Typer(
    cls=_ExitCodes,
    name="wattpack",
    help="Power-capped GPU scheduling: plan where pods go under per-domain power budgets.\n\n"
    "Every command: -o/--output names the format (table, json or yaml), --out FILE a file to "
    "write; results go to stdout, logs to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


class SchemaName(StrEnum):
    SNAPSHOT = "snapshot"
    POLICY = "policy"
    PLAN = "plan"
    SPACE = "space"


_SCHEMAS: dict[SchemaName, type[ClusterSnapshot | PackingPolicy | Plan | TuningSpace]] = {
    SchemaName.SNAPSHOT: ClusterSnapshot,
    SchemaName.POLICY: PackingPolicy,
    SchemaName.PLAN: Plan,
    SchemaName.SPACE: TuningSpace,
}


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(metadata.version("wattpack"))
        except metadata.PackageNotFoundError:
            typer.echo("unknown (not installed)")
        raise typer.Exit(0)


@app.callback()
def main(
    log_level: Annotated[
        logs.LogLevel, typer.Option(help="Least severe log events shown (on stderr).")
    ] = logs.LogLevel.WARNING,
    log_format: Annotated[
        logs.LogFormat,
        typer.Option(help="auto: readable on a terminal, JSON lines otherwise."),
    ] = logs.LogFormat.AUTO,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    logs.configure(log_level, log_format)


@app.command("plan")
def plan_command(
    snapshot_file: Annotated[
        str, typer.Argument(metavar="SNAPSHOT", help="Cluster snapshot, JSON or YAML ('-': stdin).")
    ],
    policy_file: Annotated[
        str | None,
        typer.Option("--policy", metavar="FILE", help="Packing policy; defaults when omitted."),
    ] = None,
    output: Annotated[
        OutputFormat, output_option(OutputFormat, "table for people; json or yaml: the plan.")
    ] = OutputFormat.TABLE,
    time_limit: Annotated[
        float | None,
        typer.Option(
            metavar="S",
            max=MAX_TIME_LIMIT_SECONDS,
            callback=finite,
            help="Solver time limit in seconds (overrides the policy).",
        ),
    ] = None,
    fail_on_unplaced: Annotated[
        bool, typer.Option(help="Exit 1 when the plan leaves pods pending.")
    ] = False,
    max_rows: Annotated[
        int, typer.Option(min=0, help="Rows per table in table output; 0 = all.")
    ] = 50,
    export_model: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Also write the CP-SAT model (text proto), to debug."),
    ] = None,
    progress: Annotated[
        bool,
        typer.Option(
            help="A spinner on stderr with the phase and the solver's progress "
            "(only on a terminal)."
        ),
    ] = True,
) -> None:
    """Plan one scheduling cycle for a snapshot. A dry run: prints the plan, changes nothing."""
    snapshot = files.load_snapshot(snapshot_file)
    policy = _with_time_limit(files.load_policy(policy_file), time_limit)
    pending = sum(1 for p in snapshot.pods if p.node is None)
    log.info("snapshot_loaded", nodes=len(snapshot.nodes), pods=len(snapshot.pods), pending=pending)

    # Imported here: OR-Tools takes a while to load and only this command needs it.
    from scheduler.planner import plan

    def write_model(text: str) -> None:
        try:
            with open(export_model, "w", encoding="utf-8") as out:  # type: ignore[arg-type]
                out.write(text)
        except OSError as e:
            raise UserError(
                f"--export-model: cannot write {export_model} ({e.strerror})",
                "name a writable file",
            ) from None

    with spinner("planning", progress):
        result = plan(snapshot, policy, model_sink=write_model if export_model else None)
    s = result.summary
    log.info(
        "plan_done",
        status=s.status,
        bindings=len(result.bindings),
        evictions=len(result.evictions),
        unplaced=len(result.unplaced),
        gap=s.gap,
        solve_seconds=s.solve_seconds,
    )
    if output is OutputFormat.TABLE:
        render.plan_tables(render.stdout_console(), snapshot, policy, result, max_rows)
    else:
        print_document(result.model_dump(by_alias=True, mode="json"), output.value)
    if fail_on_unplaced and result.unplaced:
        raise Problems(f"{len(result.unplaced)} pods stay pending (--fail-on-unplaced)")


def _with_time_limit(policy: PackingPolicy, seconds: float | None) -> PackingPolicy:
    if seconds is None:
        return policy
    if seconds <= 0:
        raise UserError(f"--time-limit {seconds} is not positive", "give a time limit above 0")
    solver = policy.solver.model_copy(update={"time_limit_seconds": seconds})
    return policy.model_copy(update={"solver": solver})


@app.command("schema")
def schema_command(
    what: Annotated[SchemaName, typer.Argument(help="Which format to describe.")],
    output: Annotated[
        DocumentFormat, output_option(DocumentFormat, "The schema as JSON (default) or YAML.")
    ] = DocumentFormat.JSON,
) -> None:
    """Print the JSON Schema of the snapshot, policy, plan or tuning-space format."""
    print_document(_SCHEMAS[what].model_json_schema(by_alias=True), output.value)


@app.command("check")
def check_command(
    snapshot_file: Annotated[
        str, typer.Argument(metavar="SNAPSHOT", help="Cluster snapshot the plan was made for.")
    ],
    plan_file: Annotated[
        str, typer.Option("--plan", metavar="PLAN", help="Plan as printed by plan -o json|yaml.")
    ],
    policy_file: Annotated[
        str | None,
        typer.Option("--policy", metavar="FILE", help="Policy the plan was made with."),
    ] = None,
) -> None:
    """Check a plan against its snapshot and policy; exit 1 if it breaks any rule."""
    from scheduler.verify import check_plan

    snapshot = files.load_snapshot(snapshot_file)
    policy = files.load_policy(policy_file)
    plan = files.load_plan(plan_file)
    violations = check_plan(snapshot, policy, plan)
    log.info("plan_checked", violations=len(violations))
    for v in violations:
        typer.echo(v)
    if violations:
        raise Problems(f"the plan breaks {len(violations)} rules")
    typer.echo("plan is feasible")


@app.command("import-openb")
def import_openb_command(
    nodes: Annotated[
        str, typer.Option(metavar="CSV", help="openb node list (openb_node_list*.csv).")
    ],
    pods: Annotated[
        str | None, typer.Option(metavar="CSV", help="openb pod list (openb_pod_list*.csv).")
    ] = None,
    out: Annotated[str | None, out_option()] = None,
    output: Annotated[
        DocumentFormat | None,
        output_option(DocumentFormat, "Default: from the --out extension, else yaml."),
    ] = None,
    name: Annotated[str, typer.Option(help="Snapshot name (metadata.name).")] = "openb",
    nodes_per_rack: Annotated[
        int, typer.Option(min=1, max=MAX_NODES, help="Nodes per rack domain.")
    ] = 16,
    racks_per_row: Annotated[
        int, typer.Option(min=1, max=MAX_NODES, help="Racks per row domain.")
    ] = 8,
    budget_fraction: Annotated[
        float | None,
        fraction("Every domain's budget = F x the TDP of the GPUs below it. Omitted: no budgets."),
    ] = None,
    rack_budget_fraction: Annotated[
        float | None,
        fraction("Racks only (overrides --budget-fraction)."),
    ] = None,
    row_budget_fraction: Annotated[
        float | None,
        fraction("Rows only (overrides --budget-fraction)."),
    ] = None,
    facility_budget_fraction: Annotated[
        float | None,
        fraction("The facility only (overrides --budget-fraction)."),
    ] = None,
    inventory_only: Annotated[
        bool, typer.Option("--inventory-only", help="Import the nodes alone, no pods.")
    ] = False,
) -> None:
    """Turn an openb (Alibaba cluster-trace-gpu-v2023) node and pod list into a snapshot."""
    from scheduler.traces import read_openb

    if pods is None and not inventory_only:
        raise UserError("--pods is missing", "give the pod list, or pass --inventory-only")
    snapshot = read_openb(
        nodes,
        pods or "",
        name=name,
        nodes_per_rack=nodes_per_rack,
        racks_per_row=racks_per_row,
        rack_budget_fraction=_first(rack_budget_fraction, budget_fraction),
        row_budget_fraction=_first(row_budget_fraction, budget_fraction),
        facility_budget_fraction=_first(facility_budget_fraction, budget_fraction),
        pending=not inventory_only,
    )
    log.info("openb_imported", nodes=len(snapshot.nodes), pods=len(snapshot.pods))
    write_document(snapshot.model_dump(by_alias=True, mode="json"), output, out, "snapshot")


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


simulate_commands.register(app, Problems)
tune_commands.register(app)


def stop_like_ctrl_c() -> None:
    """SIGTERM stops a command as Ctrl-C does, so that its cleanup runs: `tune --jobs` then
    stops its worker processes rather than leaving them running. The long-running operator and
    agent put their own handlers in its place."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run() -> None:
    """Console-script entry point."""
    stop_like_ctrl_c()
    app(prog_name="wattpack")


if __name__ == "__main__":
    run()
