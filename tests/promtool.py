"""Prometheus's own tools on wattpack's metrics, rules and queries: `promtool check metrics` on
what a process serves, `promtool check rules` on alert rules, and `promtool test rules` to
evaluate alert rules and dashboard queries on made-up series with Prometheus's engine (Debian's
prometheus package; .ci/run installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError("promtool is not installed: .ci/run installs Debian's prometheus")
    return found


def metrics_problems(exposition: str) -> list[str]:
    """What `promtool check metrics` says of a scrape; [] when it is clean."""
    r = subprocess.run(
        [_promtool(), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = (r.stdout + r.stderr).splitlines()
    assert (r.returncode == 0) == (not said), f"promtool exit {r.returncode}: {said}"
    return said


def check_rules(groups: list[dict[str, Any]]) -> str:
    """`promtool check rules` of these rule groups, annotations included (it parses their
    templates, which `promtool test rules` on rules without annotations never sees)."""
    with tempfile.TemporaryDirectory(prefix="wattpack-promtool-") as d:
        rules = Path(d) / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": groups}))
        r = subprocess.run(
            [_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
        )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def run_rule_tests(groups: list[dict[str, Any]], tests: list[dict[str, Any]]) -> str:
    """`promtool test rules` of these rule groups against these test cases: its output, which
    names each failing case; an AssertionError when one fails."""
    with tempfile.TemporaryDirectory(prefix="wattpack-promtool-") as d:
        rules = Path(d) / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": groups}))
        cases = Path(d) / "tests.yaml"
        cases.write_text(
            yaml.safe_dump(
                {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests}
            )
        )
        r = subprocess.run(
            [_promtool(), "test", "rules", cases.name],
            cwd=d,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout
