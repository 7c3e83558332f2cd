"""The plan as tables for a person: what goes where, what stays pending and why, power, solver."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scheduler.model import ClusterSnapshot, PackingPolicy, Plan
from scheduler.power import budgets, domain_power

T = TypeVar("T")


class _StdoutConsole(Console):
    def on_broken_pipe(self) -> None:
        # rich would exit 1, which means "problems" here; main's _ExitCodes exits 0 instead.
        raise BrokenPipeError


def stdout_console() -> Console:
    return _StdoutConsole(file=sys.stdout)


def plan_tables(
    console: Console,
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    plan: Plan,
    max_rows: int,
) -> None:
    pending = [p for p in snapshot.pods if p.node is None]
    gpus = sum(n.gpus for n in snapshot.nodes)
    console.print(
        f"[bold]{escape(snapshot.metadata.name)}[/bold]: {len(snapshot.nodes)} nodes, {gpus} GPUs, "
        f"{len(snapshot.pods)} pods ({len(pending)} pending)"
    )
    _rows(
        console,
        "Bindings (new placements)",
        ["pod", "node", "GPUs"],
        plan.bindings,
        lambda b: [b.pod, b.node, _indices(b.gpu_indices)],
        max_rows,
    )
    if plan.bindings:
        # Where the NVIDIA device plugin hands out GPUs, it picks the devices itself; DRA
        # claims are allocated by wattpack to the planned devices.
        console.print(
            "[dim]GPU indices: with the NVIDIA device plugin, the node and the GPU count hold "
            "and the indices are advisory (wattpack.io/gpu-indices); for pods with DRA "
            "ResourceClaims they hold; docs/kubernetes.md[/dim]"
        )
    _rows(
        console,
        "Evictions",
        ["pod", "node", "reason"],
        plan.evictions,
        lambda e: [e.pod, e.node, e.reason],
        max_rows,
    )
    if plan.moves:
        _rows(
            console,
            "Moves",
            ["pod", "from", "to", "GPUs", "cost (GPU-s)", "reason"],
            plan.moves,
            lambda m: [
                m.pod,
                m.from_node,
                m.to_node,
                _indices(m.gpu_indices),
                f"{m.cost:g}",
                m.reason,
            ],
            max_rows,
        )
    _rows(
        console,
        "Still pending",
        ["pod", "why"],
        plan.unplaced,
        lambda u: [u.pod, u.reason],
        max_rows,
    )
    console.print("[bold]Power per domain[/bold] (watts)")
    console.print(_power_table(snapshot, policy, plan))
    console.print("[bold]Summary[/bold]")
    console.print(_summary_table(plan))


def _rows(
    console: Console,
    title: str,
    columns: Sequence[str],
    items: Sequence[T],
    row: Callable[[T], list[str]],
    max_rows: int,
) -> None:
    if not items:
        console.print(f"[bold]{title}[/bold]: none")
        return
    # A heading line, not a table title: rich wraps titles wider than a narrow table.
    console.print(f"[bold]{title}[/bold] ({len(items)})")
    table = Table()
    for c in columns:
        table.add_column(c, overflow="fold")
    shown = items if max_rows <= 0 else items[:max_rows]
    for item in shown:
        # Names and reasons are user text: brackets in them are not markup.
        table.add_row(*(escape(cell) for cell in row(item)))
    console.print(table)
    if len(shown) < len(items):
        console.print(
            f"... and {len(items) - len(shown)} more; use --max-rows 0 or --output json for all"
        )


def _power_table(snapshot: ClusterSnapshot, policy: PackingPolicy, plan: Plan) -> Table:
    placed = [(p, p.node) for p in snapshot.pods if p.node is not None]
    before = domain_power(snapshot, placed, policy)
    budget = {**budgets(snapshot), **plan.summary.power_budget_watts}
    table = Table()
    for c in ("domain", "before W", "after W", "budget W", "% of budget"):
        table.add_column(c, justify="left" if c == "domain" else "right")
    for name, depth in _tree_order(snapshot):
        after = plan.summary.power_watts.get(name)
        limit = budget.get(name)
        share = "-" if limit is None or after is None else _percent(after, limit)
        table.add_row(
            "  " * depth + escape(name),
            _watts(before.get(name)),
            _watts(after),
            _watts(limit),
            share,
        )
    return table


def _tree_order(snapshot: ClusterSnapshot) -> list[tuple[str, int]]:
    """Domains depth-first from the roots, each with its depth, in the snapshot's order."""
    children: dict[str | None, list[str]] = {}
    for d in snapshot.power_domains:
        children.setdefault(d.parent, []).append(d.name)
    out: list[tuple[str, int]] = []
    stack = [(name, 0) for name in reversed(children.get(None, []))]
    while stack:
        name, depth = stack.pop()
        out.append((name, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(name, [])))
    return out


def _summary_table(plan: Plan) -> Table:
    s = plan.summary
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("solver status", s.status)
    table.add_row("pods placed", f"{s.placed_pods} of {s.pending_pods} pending")
    table.add_row("GPU allocation before", f"{s.gpu_allocation_before:.1%}")
    table.add_row("GPU allocation after", f"{s.gpu_allocation:.1%}")
    table.add_row("objective", f"{s.objective:,.1f}")
    table.add_row("bound", f"{s.bound:,.1f}")
    table.add_row("gap", f"{s.gap:.2%}")
    table.add_row("solve seconds", f"{s.solve_seconds:.2f}")
    for note in s.notes:
        table.add_row("[yellow]degraded[/yellow]", note)
    return table


def _percent(watts: int, budget: int) -> str:
    if budget == 0:
        return "[red]over[/red]" if watts > 0 else "-"
    ratio = watts / budget
    # Rounded down, so a domain just under its budget never reads 100.0%.
    text = f"{math.floor(ratio * 1000) / 10:.1f}%"
    if ratio > 1:
        return f"[red]{text}[/red]"
    return f"[yellow]{text}[/yellow]" if ratio >= 0.95 else text


def _watts(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _indices(indices: list[int]) -> str:
    return ",".join(str(i) for i in indices)
