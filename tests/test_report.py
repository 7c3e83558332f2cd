"""The simulation report writer: JSON that round-trips, and one self-contained, escaped HTML page
with a plot per section, also when a section is empty or a timeline has a single point."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from scheduler.model import PackingPolicy, Pod, PodKind
from scheduler.simulate import ReplaySettings, make_cluster, replay
from scheduler.simulate.report import (
    _plot_allocation,
    _scheduler_looks,
    render_html,
    write_report,
)
from scheduler.simulate.result import (
    DomainPower,
    InflationCurve,
    KindWaits,
    Percentiles,
    RunResult,
    RunTimings,
    SimReport,
    Timeline,
)
from scheduler.simulate.run import simulation_policy
from scheduler.traces.workload import TraceJob

EVIL = "binpack<script>alert('x')</script>"
IMG = '<img src="data:image/png;base64,'
REPLAY_PLOTS = (
    "Allocation over time",
    "Power per domain",
    "Queue length over time",
    "Queue waits by kind",
)
FGD_PLOTS = (
    "Milli-GPU allocation vs demand",
    "Milli-GPU allocation from 80% demand",
    "Whole-GPU allocation vs demand",
)


def pct(count: int, p50: float, p95: float, top: float) -> Percentiles:
    return Percentiles(count=count, p50=p50, p95=p95, max=top)


def timeline(points: int, scale: float) -> Timeline:
    t = [600.0 * i for i in range(points)]
    return Timeline(
        t=t,
        allocation=[min(1.0, 0.2 * scale * (i + 1)) for i in range(points)],
        busy_gpus=[min(1.0, 0.25 * scale * (i + 1)) for i in range(points)],
        bound=[0.95] * points,
        queue=[max(0, 5 - i) for i in range(points)],
        power={
            "root": [20_000 + 3_000 * i for i in range(points)],
            "row-a": [9_000 + 1_000 * i for i in range(points)],
        },
    )


def run(name: str, points: int = 5, scale: float = 1.0, violations: int = 0) -> RunResult:
    return RunResult(
        scheduler=name,
        jobs=10,
        pods=14,
        started=12,
        finished=9,
        evictions=1,
        cycles=40,
        span_seconds=600.0 * max(points - 1, 0),
        allocation=0.71234 * scale,
        busy_gpus=0.8,
        waiting_seconds=1800.0,
        allocation_while_waiting=0.9 * scale,
        share_at_90_while_waiting=0.5,
        bound_while_waiting=0.95,
        of_bound_while_waiting=0.9 * scale / 0.95,
        unallocated_gpus_while_waiting=1.25,
        idle_gpus_while_waiting=0.5,
        budget_violations=violations,
        power=[
            DomainPower(
                domain="root",
                budget_watts=40_000,
                peak_watts=32_000,
                mean_watts=26_000.5,
                violations=0,
            ),
            DomainPower(
                domain="row-a",
                budget_watts=14_000,
                peak_watts=13_000,
                mean_watts=11_000.0,
                violations=violations,
            ),
        ],
        waits=[
            KindWaits(
                kind="training",
                started=4,
                never_started=1,
                wait_seconds=pct(4, 120.0, 3_600.0, 7_200.0),
            ),
            KindWaits(
                kind="inference",
                started=8,
                never_started=0,
                wait_seconds=pct(8, 0.5, 30.0 * scale, 60.0),
            ),
            KindWaits(kind="fine-tuning", started=0, never_started=1, wait_seconds=pct(0, 0, 0, 0)),
        ],
        timeline=timeline(points, scale),
        timings=RunTimings(cycle_seconds=pct(40, 0.012, 0.2, 1.5), total_seconds=3.25),
    )


def curve(name: str, levels: int = 6, offset: float = 0.0) -> InflationCurve:
    demand = [0.25 * (i + 1) for i in range(levels)]
    return InflationCurve(
        scheduler=name,
        seeds=[1, 2],
        demand=demand,
        milli=[
            [min(d, 0.9 - offset) for d in demand],
            [min(d, 0.88 - offset) for d in demand],
        ],
        whole=[[min(1.0, d * 1.1) for d in demand], [min(1.0, d * 1.05) for d in demand]],
        unallocated_gpus=[3.5, 4.25],
        timings=RunTimings(cycle_seconds=pct(12, 0.01, 0.02, 0.03), total_seconds=12.0),
    )


def full_report() -> SimReport:
    return SimReport(
        trace="openb default (fraction & friends)",
        cluster="test <cluster> 4 nodes",
        protocol="replay",
        gpus=16,
        settings={"seed": "7", "budget": "<40kW>"},
        runs=[run("wattpack"), run(EVIL, scale=0.9, violations=2)],
        curves=[curve("wattpack"), curve(EVIL, offset=0.1)],
    )


def empty_report() -> SimReport:
    return SimReport(trace="t", cluster="c", protocol="fgd", gpus=0, settings={})


VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}


class TagBalance(HTMLParser):
    """Fails on any non-void element that is not closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def assert_well_formed(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert not parser.errors, parser.errors
    assert not parser.stack, parser.stack
    # Every body row of a table has as many cells as the others.
    for body in re.findall(r"<tbody>(.*?)</tbody>", page, flags=re.S):
        widths = {row.count("<td") for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)}
        assert len(widths) <= 1, body


def images(page: str) -> dict[str, bytes]:
    """alt text -> decoded PNG, for every embedded image."""
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">', page)
    return {alt: base64.b64decode(data, validate=True) for data, alt in found}


def test_full_report_writes_json_and_self_contained_html(tmp_path: Path) -> None:
    report = full_report()
    out = tmp_path / "nested" / "report"
    paths = write_report(report, out)

    assert paths == [out / "report.json", out / "report.html"]
    assert all(p.is_file() for p in paths)

    assert SimReport.model_validate_json(paths[0].read_text(encoding="utf-8")) == report
    assert '"apiVersion"' in paths[0].read_text(encoding="utf-8")  # camelCase on the wire

    page = paths[1].read_text(encoding="utf-8")
    assert_well_formed(page)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "binpack&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "test &lt;cluster&gt; 4 nodes" in page and "&lt;40kW&gt;" in page
    assert "wattpack" in page

    pngs = images(page)
    assert page.count(IMG) == len(REPLAY_PLOTS) + len(FGD_PLOTS)
    assert set(pngs) == set(REPLAY_PLOTS) | set(FGD_PLOTS)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs.values())

    # Ratios as percentages with two decimals; the violating run is flagged.
    assert "71.23%" in page and "64.11%" in page
    assert '<td class="bad">2</td>' in page
    # Every kind heads a wait column, and the FGD tables show the 100% level.
    for kind in ("training", "fine-tuning", "inference"):
        assert kind in page
    assert "At 100% demand" in page and "100.00%" in page
    assert len(page) < 1_500_000


def test_empty_report_still_writes_valid_files(tmp_path: Path) -> None:
    report = empty_report()
    json_path, html_path = write_report(report, tmp_path)

    assert SimReport.model_validate_json(json_path.read_text(encoding="utf-8")) == report
    page = html_path.read_text(encoding="utf-8")
    assert_well_formed(page)
    assert "No replay runs and no FGD curves" in page and "<section>" not in page
    assert IMG not in page
    assert "http://" not in page and "https://" not in page


def test_single_points_and_empty_timelines_draw(tmp_path: Path) -> None:
    """One timeline point, an empty timeline, no waits, one demand level, a curve with no seeds."""
    blank = run("blank", points=0).model_copy(update={"waits": [], "power": []})
    no_seeds = curve("none", levels=3).model_copy(
        update={"seeds": [], "milli": [], "whole": [], "unallocated_gpus": []}
    )
    report = SimReport(
        trace="t",
        cluster="c",
        protocol="replay",
        gpus=4,
        settings={},
        runs=[run("one", points=1), blank],
        curves=[curve("one", levels=1), no_seeds],
    )
    _, html_path = write_report(report, tmp_path)
    page = html_path.read_text(encoding="utf-8")
    assert_well_formed(page)
    assert set(images(page)) == set(REPLAY_PLOTS) | set(FGD_PLOTS)

    # Runs with no timelines at all, and curves that cannot be drawn, still give every plot.
    report = report.model_copy(update={"runs": [blank], "curves": [no_seeds]})
    _, html_path = write_report(report, tmp_path / "blank")
    page = html_path.read_text(encoding="utf-8")
    assert_well_formed(page)
    assert set(images(page)) == {"Allocation over time", "Power per domain"} | {
        "Queue length over time"
    } | set(FGD_PLOTS)


def test_writing_a_report_never_loads_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "sys.path.insert(0, 'tests'); import test_report as t; "
        "from scheduler.simulate.report import write_report; "
        f"write_report(t.full_report(), Path({str(tmp_path)!r})); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot loaded'"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


# -- each problem a reader met: identical runs, unstarted pods, Python values, empty sections --


def test_a_report_shows_only_the_sections_it_has_results_for(tmp_path: Path) -> None:
    replay_only = full_report().model_copy(update={"curves": []})
    page = write_report(replay_only, tmp_path / "r")[1].read_text(encoding="utf-8")
    assert "<h2>Time replay</h2>" in page and "FGD protocol:" not in page
    fgd_only = full_report().model_copy(update={"runs": [], "protocol": "fgd"})
    page = write_report(fgd_only, tmp_path / "f")[1].read_text(encoding="utf-8")
    assert "FGD protocol: allocation as demand grows" in page and "Time replay" not in page
    assert "No replay runs" not in page and "No FGD curves" not in page


def _pixels_of(png: bytes, color: str) -> int:
    """Pixels of `color` left of the legend (which sits right of the plot)."""
    import io

    import numpy as np
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    image = imread(io.BytesIO(png))[:, :, :3]
    plot = image[:, : int(image.shape[1] * 0.7)]
    return int((np.abs(plot - np.array(to_rgb(color))).max(axis=2) < 0.1).sum())


def test_identical_runs_each_show_in_the_plots() -> None:
    twins = [run("first"), run("second")]  # the same results under two names
    report = full_report().model_copy(update={"runs": twins, "curves": []})
    looks = _scheduler_looks(report)
    png = _plot_allocation(twins, looks)
    # The second line lay over the first and hid it (no pixel of its colour was left); now
    # the two take turns along the line, and the first's markers are drawn larger.
    assert _pixels_of(png, looks["first"].color) > 20
    assert _pixels_of(png, looks["second"].color) > 20


def test_pods_that_never_started_count_in_the_queue_waits() -> None:
    # One 8-GPU node: "long" holds it past the end, so "blocked" never starts.
    jobs = [
        TraceJob("long", 0.0, 10_000.0, (Pod(name="long", kind=PodKind.TRAINING, gpus=8),)),
        TraceJob("quick", 0.0, 10.0, (Pod(name="quick", kind=PodKind.TRAINING, gpus=0),)),
        TraceJob("blocked", 100.0, 10.0, (Pod(name="blocked", kind=PodKind.TRAINING, gpus=8),)),
    ]
    policy = simulation_policy(PackingPolicy())
    result = replay(make_cluster(nodes=1), jobs, "best-fit", policy, ReplaySettings(0, 1, 1000))
    (waits,) = result.waits
    assert waits.started == 2 and waits.never_started == 1
    assert waits.wait_seconds.max == 0  # the started pods never waited
    censored = waits.censored_wait_seconds
    assert censored is not None and censored.count == 3
    assert censored.max == 900  # from its arrival at 100 s to the end at 1,000 s
    report = full_report().model_copy(update={"runs": [result], "curves": []})
    page = render_html(report)
    assert "1 pods never started: they count as waiting until the replay ended" in page


def test_the_settings_table_prints_plain_values(tmp_path: Path) -> None:
    from scheduler.simulate import simulate

    jobs = [TraceJob("one", 0.0, 10.0, (Pod(name="one", kind=PodKind.TRAINING, gpus=1),))]
    report = simulate(make_cluster(nodes=1), jobs, ["best-fit"], PackingPolicy(), trace="t")
    settings = re.search(r"<h3>Settings</h3>(.*?)</table>", render_html(report), flags=re.S)
    assert settings is not None
    cells = re.findall(r"<td>(.*?)</td>", settings.group(1))
    values = cells[1::2]
    assert "<code>horizon</code>" in cells and "null" in values and "false" in values
    for python in ("None", "True", "False", "(", "{", "&#x27;"):
        assert not any(python in v for v in values), (python, values)
