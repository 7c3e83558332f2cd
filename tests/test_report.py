"""The simulation report writer: JSON that round-trips, and one self-contained, escaped HTML page
with a plot per section, also when a section is empty or a timeline has a single point."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from scheduler.simulate.report import write_report
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
    assert "No replay runs" in page and "No FGD curves" in page
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
