"""`wattpack export` and `wattpack operator` with bad input: one line naming what is wrong, exit 2,
no traceback (no cluster needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "operators.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["export", "operator"])
def test_a_missing_kubeconfig_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    out = _run(command, f"--kubeconfig={tmp_path / 'nope'}")
    assert out.returncode == 2
    assert out.stderr.startswith("error: --kubeconfig: cannot load")
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_an_unreachable_api_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # A port nobody listens on: export reads once and says what failed.
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    out = _run("export", f"--kubeconfig={path}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: cannot reach the API server")
    assert "Traceback" not in out.stderr
