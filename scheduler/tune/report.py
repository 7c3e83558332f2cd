"""Write a tuning run to disk: report.json, a self-contained report.html (the front, the holdout
comparison, parameter importances) and the chosen policy as PackingPolicy YAML. Plots are drawn
as the simulation report draws them (Agg canvas, embedded PNG; scheduler.simulate.report)."""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from scheduler.model import PackingPolicy
from scheduler.simulate.report import _CSS, _e, _figure_html, _head_row, _table
from scheduler.tune.outcome import Entry, TuneReport


def write(report: TuneReport, chosen: PackingPolicy, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "report.json", directory / "report.html", directory / "policy.yaml"]
    paths[0].write_text(report.model_dump_json(by_alias=True, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(render_html(report), encoding="utf-8")
    data = chosen.model_dump(by_alias=True, mode="json", exclude_defaults=True)
    data = {"apiVersion": chosen.api_version, "kind": chosen.kind, **data}
    header = f"# wattpack tune, study {report.study}: {report.chosen} ({report.why})\n"
    paths[2].write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return paths


def rows(report: TuneReport) -> list[list[str]]:
    """The default and the front, as table rows: tuning slice, then holdout."""

    def cells(e: Entry) -> list[str]:
        out = [e.label + (" (chosen)" if e.label == report.chosen else "")]
        for s in (e.tuning, e.holdout):
            if s is None:
                out += ["", "", ""]
            else:
                out += [
                    f"{s.allocation_while_waiting:.2%}",
                    f"{s.inference_p95_wait_seconds:.0f}",
                    f"{s.lost_gpu_hours:.2f}",
                ]
        out.append(", ".join(f"{k}={_short(v)}" for k, v in e.params.items()))
        return out

    return [cells(report.default)] + [cells(e) for e in report.front]


HEAD = [
    "policy",
    "alloc (tune)",
    "inf p95 s (tune)",
    "lost GPU-h (tune)",
    "alloc (holdout)",
    "inf p95 s (holdout)",
    "lost GPU-h (holdout)",
    "values",
]


FRONT_CAPTION = (
    "Tuning slice: allocation while work waits against inference p95 wait; the default in black"
)
HOLDOUT_CAPTION = (
    "Allocation while work waits: tuning slice against holdout, per policy (overfitting shows "
    "as a drop)"
)


def _short(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render_html(report: TuneReport) -> str:
    body = [
        f"<header><h1>wattpack tune: study {_e(report.study)}</h1>"
        f"<p>{_e(report.trace)}; storage {_e(report.storage)}; {report.trials} trials, "
        f"{report.infeasible} infeasible.</p>"
        f"<p>Chosen: <b>{_e(report.chosen)}</b> ({_e(report.why)}).</p></header>",
        "<h2>Pareto front and holdout</h2>",
        _table(_head_row(HEAD), rows(report)),
        _figure_html(_front_png(report), "front", FRONT_CAPTION),
    ]
    if report.default.holdout is not None:
        body.append(_figure_html(_holdout_png(report), "holdout", HOLDOUT_CAPTION))
    if report.importances:
        body.append("<h2>Parameter importances (allocation)</h2>")
        body.append(
            _table(
                _head_row(["parameter", "importance"]),
                [[k, f"{v:.3f}"] for k, v in report.importances.items()],
            )
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>wattpack tune {_e(report.study)}</title>\n<style>{_CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _png(fig) -> bytes:  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _front_png(report: TuneReport) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    xs = [e.tuning.inference_p95_wait_seconds for e in report.front]
    ys = [100 * e.tuning.allocation_while_waiting for e in report.front]
    ax.scatter(xs, ys, label="front")
    d = report.default.tuning
    ax.scatter([d.inference_p95_wait_seconds], [100 * d.allocation_while_waiting], c="black",
               marker="x", label="default")  # fmt: skip
    ax.set_xlabel("inference p95 wait (s)")
    ax.set_ylabel("allocation while waiting (%)")
    ax.legend()
    return _png(fig)


def _holdout_png(report: TuneReport) -> bytes:
    from matplotlib.figure import Figure

    entries = [report.default, *report.front]
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    x = range(len(entries))
    tune = [100 * e.tuning.allocation_while_waiting for e in entries]
    hold = [100 * (e.holdout.allocation_while_waiting if e.holdout else 0) for e in entries]
    ax.bar([i - 0.2 for i in x], tune, width=0.4, label="tuning slice")
    ax.bar([i + 0.2 for i in x], hold, width=0.4, label="holdout")
    ax.set_xticks(list(x), [e.label for e in entries], rotation=30, ha="right")
    ax.set_ylabel("allocation while waiting (%)")
    ax.set_ylim(min(tune + hold) - 2, min(100, max(tune + hold) + 2))
    ax.legend()
    return _png(fig)
