"""The benchmark instance generator, for tests: benchmarks/ holds scripts, not a package, so the
file itself is loaded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "instances.py"
_spec = importlib.util.spec_from_file_location("benchmark_instances", _PATH)
instances = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules[_spec.name] = instances  # type: ignore[union-attr]  # dataclasses look it up
_spec.loader.exec_module(instances)  # type: ignore[union-attr]

_LIVE = _PATH.parent / "live_states.py"
_live_spec = importlib.util.spec_from_file_location("benchmark_live_states", _LIVE)
live_states = importlib.util.module_from_spec(_live_spec)  # type: ignore[arg-type]
sys.modules[_live_spec.name] = live_states  # type: ignore[union-attr]
_live_spec.loader.exec_module(live_states)  # type: ignore[union-attr]
