"""Write a `SimReport` to disk: the JSON as it is, and one self-contained HTML page.

The page needs nothing outside itself: styles are inline and every plot is a PNG embedded as
base64. Plots are drawn on `matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot, so writing a report touches no global backend state, needs no display, and is safe to do
from several threads. Matplotlib is imported only when a report is written, so importing this
module stays cheap for the command line.

Every string that comes from the report is HTML-escaped; ratios are shown as percentages with two
decimals.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.simulate.result import InflationCurve, KindWaits, Percentiles, RunResult, SimReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["write_report"]

JSON_NAME = "report.json"
HTML_NAME = "report.html"

DPI = 100
WIDTH_IN = 8.0
HEIGHT_IN = 3.5
DOMAIN_HEIGHT_IN = 2.0  # per subplot in the power figure
MAX_DOMAINS = 8  # power subplots drawn; the rest are named under the figure

# Kinds in the order a reader expects them; unknown kinds follow in order of appearance.
KIND_ORDER = ("training", "fine-tuning", "inference")


def write_report(report: SimReport, directory: Path) -> list[Path]:
    """Create `directory` and write `report.json` and `report.html` in it; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / JSON_NAME
    html_path = directory / HTML_NAME
    json_path.write_text(report.model_dump_json(by_alias=True, indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return [json_path, html_path]


def render_html(report: SimReport) -> str:
    """The whole page as one string."""
    looks = _scheduler_looks(report)
    # A protocol's section only where it has results: a report holds one protocol's.
    sections = [
        _replay_section(report.runs, looks, report.gpus) if report.runs else "",
        _fgd_section(report.curves, looks) if report.curves else "",
    ]
    if not any(sections):
        sections = ['<p class="note">No replay runs and no FGD curves in this report.</p>']
    body = [
        _header(report),
        *[section for section in sections if section],
        "<footer><p>Wall-clock figures (cycle times, run times) are the only numbers that differ "
        "between two runs with the same seed.</p></footer>",
    ]
    title = _e(f"wattpack simulation: {report.protocol} on {report.cluster}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------------------------
# Formatting


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _pct(x: float | None) -> str:
    return f"{x * 100:.2f}%" if _finite(x) else "n/a"


def _num(x: float | None, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if _finite(x) else "n/a"


def _int(x: int | None) -> str:
    return f"{x:,}" if x is not None else "n/a"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    s = float(seconds)
    if s == 0:
        return "0 s"
    if abs(s) < 1:
        return f"{s * 1000:.1f} ms"
    if abs(s) < 120:
        return f"{s:.2f} s"
    if abs(s) < 2 * 3600:
        return f"{s / 60:.1f} min"
    if abs(s) < 2 * 86400:
        return f"{s / 3600:.2f} h"
    return f"{s / 86400:.2f} d"


def _watts(w: float | None) -> str:
    if w is None or not math.isfinite(w):
        return "none"
    if abs(w) >= 10_000:
        return f"{w / 1000:,.1f} kW"
    return f"{w:,.0f} W"


def _time_unit(max_seconds: float) -> tuple[float, str]:
    """Divisor and label for a time axis that spans `max_seconds`."""
    if max_seconds <= 2 * 3600:
        return (60.0, "minutes") if max_seconds > 600 else (1.0, "seconds")
    if max_seconds <= 3 * 86400:
        return 3600.0, "hours"
    return 86400.0, "days"


def _wait_unit(max_seconds: float) -> tuple[float, str]:
    if max_seconds < 120:
        return 1.0, "s"
    if max_seconds < 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


# --------------------------------------------------------------------------------------------
# HTML pieces


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em;
       color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; margin-bottom: 0.3em; } h2 { font-size: 1.25em; margin-top: 1.6em;
     border-bottom: 1px solid #ccc; } h3 { font-size: 1.05em; margin-top: 1.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
th { background: #f2f2f2; text-align: center; }
td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name, th.name { text-align: left; }
td.bad { color: #b00020; font-weight: bold; }
table.meta td { text-align: left; white-space: normal; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
p.note { color: #555; font-size: 0.9em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _cell(text: str, cls: str | None = None) -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{_e(text)}</td>"


def _table(head: str, rows: Iterable[Sequence[str]], bad: Iterable[tuple[int, int]] = ()) -> str:
    """A table whose header is given as HTML and whose cells are plain text (escaped here).

    The first column is a name (left-aligned); `bad` marks (row, column) cells in red.
    """
    marked = set(bad)
    lines = ['<div class="scroll"><table>', f"<thead>{head}</thead>", "<tbody>"]
    for r, row in enumerate(rows):
        cells = [
            _cell(text, "name" if c == 0 else ("bad" if (r, c) in marked else None))
            for c, text in enumerate(row)
        ]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _head_row(names: Sequence[str]) -> str:
    cells = [f'<th class="name">{_e(names[0])}</th>'] if names else []
    cells += [f"<th>{_e(n)}</th>" for n in names[1:]]
    return "<tr>" + "".join(cells) + "</tr>"


def _figure_html(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _header(report: SimReport) -> str:
    meta = [
        ("Trace", report.trace),
        ("Cluster", report.cluster),
        ("Protocol", report.protocol),
        ("Usable GPUs", _int(report.gpus)),
        ("Replay runs", str(len(report.runs))),
        ("FGD curves", str(len(report.curves))),
        ("Format", f"{report.api_version} {report.kind}"),
    ]
    rows = "".join(f'<tr><th class="name">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in meta)
    if report.settings:
        settings = "".join(
            f"<tr><td><code>{_e(k)}</code></td><td>{_e(v)}</td></tr>"
            for k, v in sorted(report.settings.items())
        )
        settings_html = (
            '<h3>Settings</h3><table class="meta"><thead><tr><th class="name">Setting</th>'
            f'<th class="name">Value</th></tr></thead><tbody>{settings}</tbody></table>'
        )
    else:
        settings_html = '<p class="note">No settings given.</p>'
    return (
        f"<header><h1>wattpack simulation report: {_e(report.protocol)}</h1>"
        f'<table class="meta"><tbody>{rows}</tbody></table>{settings_html}</header>'
    )


def _kinds(runs: Sequence[RunResult]) -> list[str]:
    seen: list[str] = []
    for run in runs:
        for w in run.waits:
            if w.kind not in seen:
                seen.append(w.kind)
    known = [k for k in KIND_ORDER if k in seen]
    return known + [k for k in seen if k not in KIND_ORDER]


def _replay_section(runs: Sequence[RunResult], looks: dict[str, _Look], gpus: int) -> str:
    parts = ["<section><h2>Time replay</h2>"]
    kinds = _kinds(runs)

    # Summary table with grouped headers.
    groups = [
        ("Whole run", ["allocation", "busy GPUs"]),
        (
            "While work waited",
            [
                "allocation",
                "time at ≥90%",
                "power-feasible bound",
                "% of bound",
                "unallocated GPUs",
                "idle GPUs",
            ],
        ),
        ("Power", ["budget violations"]),
        ("Queue wait p50 / p95", kinds or ["(none)"]),
        ("Scheduling cycles", ["cycles", "p50", "p95", "max"]),
    ]
    top = '<tr><th class="name" rowspan="2">scheduler</th>' + "".join(
        f'<th colspan="{len(cols)}">{_e(g)}</th>' for g, cols in groups
    )
    sub = "<tr>" + "".join(f"<th>{_e(c)}</th>" for _, cols in groups for c in cols) + "</tr>"
    rows: list[list[str]] = []
    bad: list[tuple[int, int]] = []
    violations_col = 1 + sum(len(cols) for _, cols in groups[:2])  # after scheduler, 2 groups
    for r, run in enumerate(runs):
        waits = {w.kind: w for w in run.waits}
        wait_cells = []
        for k in kinds:
            w = waits.get(k)
            if w is None or w.wait_seconds.count == 0:
                wait_cells.append("–")
            else:
                wait_cells.append(
                    f"{_duration(w.wait_seconds.p50)} / {_duration(w.wait_seconds.p95)}"
                )
        if not kinds:
            wait_cells = ["–"]
        cyc = run.timings.cycle_seconds
        row = [
            run.scheduler,
            _pct(run.allocation),
            _pct(run.busy_gpus),
            _pct(run.allocation_while_waiting),
            _pct(run.share_at_90_while_waiting),
            _pct(run.bound_while_waiting),
            _pct(run.of_bound_while_waiting),
            _num(run.unallocated_gpus_while_waiting),
            _num(run.idle_gpus_while_waiting),
            _int(run.budget_violations),
            *wait_cells,
            _int(run.cycles),
            _duration(cyc.p50),
            _duration(cyc.p95),
            _duration(cyc.max),
        ]
        if run.budget_violations:
            bad.append((r, violations_col))
        rows.append(row)
    parts.append("<h3>Summary</h3>")
    parts.append(_table(top + "</tr>" + sub, rows, bad))
    parts.append(
        '<p class="note">Allocation is allocated milli-GPU over usable capacity '
        f"({_e(_int(gpus))} GPUs); busy GPUs is the share of GPUs with any work. "
        "“While work waited” averages over the simulated time during which some pod waited: "
        "the power-feasible bound is the most that could be allocated under the power budgets "
        "for the work present, and unallocated GPUs is the capacity left free at saturation.</p>"
    )

    # Work table.
    work_rows = []
    for run in runs:
        never = sum(w.never_started for w in run.waits)
        work_rows.append(
            [
                run.scheduler,
                _int(run.jobs),
                _int(run.pods),
                _int(run.started),
                _int(run.finished),
                _int(never),
                _int(run.evictions),
                _int(run.unplaceable),
                _int(run.gpu_failures),
                _int(run.pods_killed),
                f"{run.gpu_seconds_lost / 3600:,.1f}",
                _duration(run.span_seconds),
                _duration(run.waiting_seconds),
                _duration(run.timings.total_seconds),
            ]
        )
    parts.append("<h3>Work</h3>")
    parts.append(
        _table(
            _head_row(
                [
                    "scheduler",
                    "jobs",
                    "pods",
                    "started",
                    "finished",
                    "never started",
                    "evictions",
                    "unplaceable",
                    "GPU failures",
                    "pods killed",
                    "GPU-hours lost",
                    "simulated span",
                    "time with work waiting",
                    "wall time",
                ]
            ),
            work_rows,
        )
    )

    # Queue waits per kind.
    if kinds:
        wait_rows = []
        for run in runs:
            for w in sorted(run.waits, key=lambda w: kinds.index(w.kind)):
                p = w.wait_seconds
                empty = p.count == 0
                wait_rows.append(
                    [
                        run.scheduler,
                        w.kind,
                        _int(w.started),
                        _int(w.never_started),
                        "–" if empty else _duration(p.p50),
                        "–" if empty else _duration(p.p95),
                        "–" if empty else _duration(p.max),
                    ]
                )
        parts.append("<h3>Queue waits by kind</h3>")
        parts.append(
            _table(
                _head_row(["scheduler", "kind", "started", "never started", "p50", "p95", "max"]),
                wait_rows,
            )
        )

    # Power per domain.
    power_rows: list[list[str]] = []
    power_bad: list[tuple[int, int]] = []
    for run in runs:
        for d in run.power:
            peak_share = _pct(d.peak_watts / d.budget_watts) if d.budget_watts else "n/a"
            if d.violations:
                power_bad.append((len(power_rows), 6))
            power_rows.append(
                [
                    run.scheduler,
                    d.domain,
                    _watts(d.budget_watts),
                    _watts(d.peak_watts),
                    peak_share,
                    _watts(d.mean_watts),
                    _int(d.violations),
                ]
            )
    if power_rows:
        parts.append("<h3>Power per domain</h3>")
        parts.append(
            _table(
                _head_row(
                    [
                        "scheduler",
                        "domain",
                        "budget",
                        "peak",
                        "peak / budget",
                        "time-weighted mean",
                        "violations",
                    ]
                ),
                power_rows,
                power_bad,
            )
        )

    # Plots.
    parts.append("<h3>Plots</h3>")
    parts.append(
        _figure_html(
            _plot_allocation(runs, looks),
            "Allocation over time",
            "Allocation over time per scheduler (solid) and the power-feasible bound for the "
            "work present (dashed, same colour).",
        )
    )
    png, omitted = _plot_power(runs, looks)
    caption = "Power draw per budgeted domain, every scheduler overlaid; budget in red dashes."
    if omitted:
        caption += " Not drawn: " + ", ".join(omitted) + "."
    parts.append(_figure_html(png, "Power per domain", caption))
    parts.append(
        _figure_html(
            _plot_queue(runs, looks), "Queue length over time", "Pods waiting, per scheduler."
        )
    )
    if kinds:
        caption = "Queue wait from submit to start, p50 and p95, per kind and scheduler."
        unstarted = _unstarted(runs)
        if unstarted:
            caption += (
                f" {unstarted:,} pods never started: they count as waiting until the replay "
                "ended (censored there; their real wait is longer); hatched bars hold such "
                "pods, +N says how many."
            )
        parts.append(_figure_html(_plot_waits(runs, kinds, looks), "Queue waits by kind", caption))
    parts.append("</section>")
    return "\n".join(parts)


def _curve_stats(curve: InflationCurve) -> dict[str, list[float]] | None:
    """Mean, min and max over seeds at each demand level; None when there is nothing to draw."""
    import numpy as np

    series = (("milli", curve.milli), ("whole", curve.whole))
    if not curve.demand or not all(any(per_seed) for _, per_seed in series):
        return None
    # Seeds should all have one value per level; draw only the levels every seed has.
    levels = min([len(curve.demand)] + [len(r) for _, per_seed in series for r in per_seed if r])
    out: dict[str, list[float]] = {"demand": list(curve.demand[:levels])}
    for name, per_seed in series:
        a = np.array([r[:levels] for r in per_seed if r], dtype=float)
        out[f"{name}_mean"] = a.mean(axis=0).tolist()
        out[f"{name}_min"] = a.min(axis=0).tolist()
        out[f"{name}_max"] = a.max(axis=0).tolist()
    return out


def _fgd_section(curves: Sequence[InflationCurve], looks: dict[str, _Look]) -> str:
    parts = ["<section><h2>FGD protocol: allocation as demand grows</h2>"]
    stats = {id(c): _curve_stats(c) for c in curves}

    def level_rows(pick_last: bool) -> list[list[str]]:
        rows = []
        for c in curves:
            s = stats[id(c)]
            if s is None:
                blanks = 7 + (4 if pick_last else 0)  # demand, 2x3 stats (+ 3 unallocated, time)
                rows.append([c.scheduler, _int(len(c.seeds)), *["n/a"] * blanks])
                continue
            demand = s["demand"]
            i = (
                len(demand) - 1
                if pick_last
                else min(range(len(demand)), key=lambda j: abs(demand[j] - 1.0))
            )
            row = [
                c.scheduler,
                _int(len(c.seeds)),
                _pct(demand[i]),
                _pct(s["milli_mean"][i]),
                _pct(s["milli_min"][i]),
                _pct(s["milli_max"][i]),
                _pct(s["whole_mean"][i]),
                _pct(s["whole_min"][i]),
                _pct(s["whole_max"][i]),
            ]
            if pick_last:
                u = [x for x in c.unallocated_gpus if _finite(x)]
                if u:
                    row += [_num(sum(u) / len(u)), _num(min(u)), _num(max(u))]
                else:
                    row += ["n/a"] * 3
                row.append(_duration(c.timings.total_seconds))
            rows.append(row)
        return rows

    def head(pick_last: bool) -> str:
        groups = [("milli-GPU allocation", 3), ("GPUs with any work", 3)]
        if pick_last:
            groups.append(("unallocated GPUs", 3))
        top = (
            '<tr><th class="name" rowspan="2">scheduler</th><th rowspan="2">seeds</th>'
            '<th rowspan="2">demand</th>'
            + "".join(f'<th colspan="{n}">{_e(g)}</th>' for g, n in groups)
            + ('<th rowspan="2">wall time</th>' if pick_last else "")
            + "</tr>"
        )
        sub = "<tr>" + "<th>mean</th><th>min</th><th>max</th>" * len(groups) + "</tr>"
        return top + sub

    parts.append("<h3>At the last demand level</h3>")
    parts.append(_table(head(True), level_rows(True)))
    parts.append("<h3>At 100% demand (nearest level)</h3>")
    parts.append(_table(head(False), level_rows(False)))
    parts.append(
        '<p class="note">Demand is arrived GPU requests over GPU capacity. Mean, min and max '
        "are over seeds; unallocated GPUs is the GPU capacity left free at the last level.</p>"
    )
    drawable = [(c, stats[id(c)]) for c in curves if stats[id(c)] is not None]
    parts.append("<h3>Plots</h3>")
    parts.append(
        _figure_html(
            _plot_curves(drawable, "milli", looks),
            "Milli-GPU allocation vs demand",
            "Milli-GPU allocation against arrived demand: mean over seeds, band from min to max; "
            "dotted grey is min(demand, 100%).",
        )
    )
    parts.append(
        _figure_html(
            _plot_curves(drawable, "milli", looks, zoom_from=0.8),
            "Milli-GPU allocation from 80% demand",
            "The same from 80% demand on, the y axis fitted to the data.",
        )
    )
    parts.append(
        _figure_html(
            _plot_curves(drawable, "whole", looks),
            "Whole-GPU allocation vs demand",
            "Share of GPUs with any work against arrived demand: mean over seeds, band from min "
            "to max.",
        )
    )
    parts.append("</section>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Plots


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
MARKS_PER_LINE = 8
DASH = 5.0  # points: the length of each colour's turn on lines drawn by several schedulers


@dataclass(frozen=True)
class _Twin:
    """A line that several schedulers drew alike: the first to draw it, this one's place among
    them, and how many they are."""

    first: str
    place: int
    of: int


@dataclass(frozen=True)
class _Look:
    """How one scheduler is drawn in every plot: its colour, and its marker at staggered points.
    Two schedulers with the same results draw the same line, and the later one covered the
    earlier: such lines are dashed in turns, each colour in its own gaps, so every one shows."""

    color: str
    marker: str
    index: int
    of: int

    def line(self, n_points: int, twin: _Twin | None = None) -> dict[str, object]:
        step = max(1, n_points // MARKS_PER_LINE)
        out: dict[str, object] = {
            "color": self.color,
            "marker": self.marker,
            "markersize": 5,
            "markevery": (self.index * step // self.of, step),
        }
        if twin is not None:
            out["linestyle"] = (twin.place * DASH, (DASH, DASH * (twin.of - 1)))
            out["markersize"] = 5 + 2 * (twin.of - 1 - twin.place)  # the first, largest, below
        return out


def _scheduler_looks(report: SimReport) -> dict[str, _Look]:
    """One colour and marker per scheduler name, the same in every plot."""
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
        "#d62728",
    ]
    names: list[str] = []
    for name in [r.scheduler for r in report.runs] + [c.scheduler for c in report.curves]:
        if name not in names:
            names.append(name)
    return {
        n: _Look(palette[i % len(palette)], MARKERS[i % len(MARKERS)], i, len(names))
        for i, n in enumerate(names)
    }


def _twins(series: Sequence[tuple[str, object]]) -> dict[str, _Twin]:
    """The names whose series (any hashable key) equal another's, each with its group."""
    groups: dict[object, list[str]] = {}
    for name, key in series:
        groups.setdefault(key, []).append(name)
    return {
        name: _Twin(names[0], i, len(names))
        for names in groups.values()
        if len(names) > 1
        for i, name in enumerate(names)
    }


def _named(name: str, twins: dict[str, _Twin]) -> str:
    """A legend label; "(= first)" where the line is another scheduler's too."""
    twin = twins.get(name)
    same = twin is not None and twin.place > 0
    return _label(name) + (f" (= {_label(twin.first, 24)})" if same else "")  # type: ignore[union-attr]


_NO_LOOK = _Look("#555", "o", 0, 1)


def _new_figure(height: float = HEIGHT_IN) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _label(text: str, limit: int = 40) -> str:
    """A legend label: matplotlib reads `$` as mathtext and `_` prefix as hidden."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$").lstrip("_") or " "


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#777")


def _percent_axis(ax: Axes, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PercentFormatter(xmax=1.0))


def _series(t: Sequence[float], y: Sequence[float], div: float) -> tuple[list[float], list[float]]:
    n = min(len(t), len(y))
    return [x / div for x in t[:n]], list(y[:n])


def _max_t(runs: Sequence[RunResult]) -> float:
    return max((max(r.timeline.t) for r in runs if r.timeline.t), default=0.0)


def _legend(fig: Figure, ax: Axes) -> None:
    """One legend for the figure, right of the plots, from `ax`'s labelled artists only."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)


def _plot_allocation(runs: Sequence[RunResult], looks: dict[str, _Look]) -> bytes:
    fig = _new_figure()
    ax = fig.add_subplot()
    div, unit = _time_unit(_max_t(runs))
    drawn = False
    twins = _twins(
        [(r.scheduler, (tuple(r.timeline.t), tuple(r.timeline.allocation))) for r in runs]
    )
    for run in runs:
        tl = run.timeline
        look = looks.get(run.scheduler, _NO_LOOK)
        x, y = _series(tl.t, tl.allocation, div)
        if x:
            drawn = True
            ax.plot(
                x,
                y,
                drawstyle="steps-post",
                lw=1.2,
                label=_named(run.scheduler, twins),
                **look.line(len(x), twins.get(run.scheduler)),
            )
        xb, yb = _series(tl.t, tl.bound, div)
        if xb:
            ax.plot(
                xb,
                yb,
                color=look.color,
                drawstyle="steps-post",
                lw=1.0,
                ls="--",
                alpha=0.8,
                **({"marker": "x", "markersize": 5} if len(xb) == 1 else {}),
            )
    if drawn:
        ax.plot([], [], color="#555", ls="--", lw=1.0, label="power-feasible bound")
    else:
        _no_data(ax)
    ax.set_ylim(0, 1.05)
    _percent_axis(ax)
    ax.set_xlabel(f"simulated time ({unit})")
    ax.set_ylabel("allocation")
    ax.set_title("Allocation over time", fontsize="medium")
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return _png(fig)


def _plot_queue(runs: Sequence[RunResult], looks: dict[str, _Look]) -> bytes:
    fig = _new_figure()
    ax = fig.add_subplot()
    div, unit = _time_unit(_max_t(runs))
    drawn = False
    twins = _twins([(r.scheduler, (tuple(r.timeline.t), tuple(r.timeline.queue))) for r in runs])
    for run in runs:
        x, y = _series(run.timeline.t, run.timeline.queue, div)
        if x:
            drawn = True
            ax.plot(
                x,
                y,
                drawstyle="steps-post",
                lw=1.2,
                label=_named(run.scheduler, twins),
                **looks.get(run.scheduler, _NO_LOOK).line(len(x), twins.get(run.scheduler)),
            )
    if not drawn:
        _no_data(ax)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"simulated time ({unit})")
    ax.set_ylabel("pods waiting")
    ax.set_title("Queue length over time", fontsize="medium")
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return _png(fig)


def _plot_power(runs: Sequence[RunResult], looks: dict[str, _Look]) -> tuple[bytes, list[str]]:
    """One subplot per domain (union over runs, first run's order), every run overlaid."""
    domains: list[str] = []
    budgets: dict[str, int] = {}
    for run in runs:
        for name in run.timeline.power:
            if name not in domains:
                domains.append(name)
        for d in run.power:
            if d.budget_watts is not None:
                budgets.setdefault(d.domain, d.budget_watts)
    omitted = domains[MAX_DOMAINS:]
    domains = domains[:MAX_DOMAINS]
    n = max(1, len(domains))
    fig = _new_figure(height=max(HEIGHT_IN, DOMAIN_HEIGHT_IN * n))
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    div, unit = _time_unit(_max_t(runs))
    peak = max(
        [max(v) for r in runs for v in r.timeline.power.values() if v]
        + [budgets.get(d, 0) for d in domains]
        + [0]
    )
    wdiv, wunit = (1000.0, "kW") if peak >= 10_000 else (1.0, "W")
    if not domains:
        _no_data(axes[0])
        axes[0].set_title("Power per domain", fontsize="medium")
    twins = _twins(
        [
            (
                r.scheduler,
                (tuple(r.timeline.t), tuple((d, tuple(v)) for d, v in r.timeline.power.items())),
            )
            for r in runs
        ]
    )
    for ax, domain in zip(axes, domains, strict=False):
        for run in runs:
            x, y = _series(run.timeline.t, run.timeline.power.get(domain, []), div)
            if x:
                ax.plot(
                    x,
                    [v / wdiv for v in y],
                    lw=1.1,
                    drawstyle="steps-post",
                    label=_named(run.scheduler, twins),
                    **looks.get(run.scheduler, _NO_LOOK).line(len(x), twins.get(run.scheduler)),
                )
        if domain in budgets:
            ax.axhline(budgets[domain] / wdiv, color="#d62728", ls="--", lw=1.0)
        ax.margins(y=0.12)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(wunit)
        ax.set_title(_label(domain, 80), fontsize="small", loc="left")
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel(f"simulated time ({unit})")
    if domains:
        axes[0].plot([], [], color="#d62728", ls="--", lw=1.0, label="budget")
        _legend(fig, axes[0])
    return _png(fig), omitted


def _waits_drawn(w: KindWaits) -> tuple[Percentiles, int]:
    """The wait percentiles a bar shows, and how many pods in them never started: censored at
    the end of the replay, they count (a pod that waited all along is the longest wait of all,
    not a pod to leave out). Reports from before the censored figures: the started pods."""
    if w.censored_wait_seconds is None:
        return w.wait_seconds, 0
    return w.censored_wait_seconds, w.censored_wait_seconds.count - w.started


def _unstarted(runs: Sequence[RunResult]) -> int:
    return sum(_waits_drawn(w)[1] for run in runs for w in run.waits)


def _plot_waits(runs: Sequence[RunResult], kinds: list[str], looks: dict[str, _Look]) -> bytes:
    import numpy as np

    fig = _new_figure()
    axes = fig.subplots(1, 2, sharey=True)
    values: dict[tuple[int, str], tuple[float, float, int]] = {}
    for r, run in enumerate(runs):
        for w in run.waits:
            p, unstarted = _waits_drawn(w)
            if p.count > 0:
                values[(r, w.kind)] = (p.p50, p.p95, unstarted)
    top = max((max(v[:2]) for v in values.values() if all(map(_finite, v[:2]))), default=0.0)
    div, unit = _wait_unit(top)
    x = np.arange(len(kinds))
    width = 0.8 / max(1, len(runs))
    for col, (ax, title) in enumerate(zip(axes, ("p50", "p95"), strict=True)):
        for r, run in enumerate(runs):
            got = [values.get((r, k), (math.nan, math.nan, 0)) for k in kinds]
            bars = ax.bar(
                x - 0.4 + width * (r + 0.5),
                [v[col] / div for v in got],
                width,
                color=looks.get(run.scheduler, _NO_LOOK).color,
                label=_label(run.scheduler) if col == 0 else None,
            )
            for bar, v in zip(bars, got, strict=True):
                if v[2]:
                    # Hatched, and how many never started: their wait is longer than drawn.
                    bar.set_hatch("//")
                    bar.set_edgecolor("white")
                    ax.annotate(
                        f"+{v[2]}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize="x-small",
                    )
        ax.set_xticks(x, [_label(k, 16) for k in kinds], fontsize="small")
        ax.set_title(f"queue wait {title}", fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
        ax.margins(y=0.12)
    axes[0].set_ylabel(f"wait ({unit})")
    axes[0].set_ylim(bottom=0)
    if not values:
        _no_data(axes[0])
    _legend(fig, axes[0])
    return _png(fig)


def _from(s: dict[str, list[float]], low: float) -> dict[str, list[float]]:
    """The curve's points at demand `low` and above (all of them when none is)."""
    keep = [i for i, d in enumerate(s["demand"]) if d >= low - 1e-9] or list(
        range(len(s["demand"]))
    )
    return {k: [v[i] for i in keep] for k, v in s.items()}


def _plot_curves(
    drawable: Sequence[tuple[InflationCurve, dict[str, list[float]] | None]],
    which: str,
    looks: dict[str, _Look],
    zoom_from: float | None = None,
) -> bytes:
    """With zoom_from, only demand from there on, and the y axis fitted to the data: where the
    schedulers part ways, the differences are tenths of a point."""
    fig = _new_figure()
    ax = fig.add_subplot()
    top = 1.0
    lows: list[float] = []
    highs: list[float] = []
    twins = _twins(
        [
            (c.scheduler, (tuple(st["demand"]), tuple(st[f"{which}_mean"])))
            for c, st in drawable
            if st
        ]
    )
    for curve, s in drawable:
        if s is None:
            continue
        if zoom_from is not None:
            s = _from(s, zoom_from)
            lows += s[f"{which}_min"]
            highs += s[f"{which}_max"]
        d = s["demand"]
        look = looks.get(curve.scheduler, _NO_LOOK)
        color = look.color
        ax.plot(
            d,
            s[f"{which}_mean"],
            lw=1.4,
            label=_named(curve.scheduler, twins),
            **look.line(len(d), twins.get(curve.scheduler)),
        )
        if len(d) > 1:
            ax.fill_between(d, s[f"{which}_min"], s[f"{which}_max"], color=color, alpha=0.2, lw=0)
        else:
            ax.vlines(d, s[f"{which}_min"], s[f"{which}_max"], color=color, lw=2, alpha=0.4)
        top = max(top, *d)
    if drawable:
        if which == "milli" and zoom_from is None:
            ax.plot([0, 1, top], [0, 1, 1], color="#999", ls=":", lw=1.0, label="min(demand, 100%)")
    else:
        _no_data(ax)
    if zoom_from is not None and lows:
        pad = max(0.002, (max(highs) - min(lows)) * 0.05)
        ax.set_ylim(min(lows) - pad, min(1.0, max(highs)) + pad)
    else:
        ax.set_ylim(0, 1.05)
        ax.set_xlim(left=0)
    _percent_axis(ax, "y")
    _percent_axis(ax, "x")
    ax.set_xlabel("arrived demand (GPU requests / capacity)")
    ax.set_ylabel("milli-GPU allocation" if which == "milli" else "GPUs with any work")
    title = "Milli-GPU allocation" if which == "milli" else "Whole-GPU allocation"
    title += f", from {zoom_from:.0%} demand" if zoom_from is not None else " vs demand"
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return _png(fig)
