"""Hypothesis runs derandomized by default, so a CI run can never fail on a draw the previous one
did not make; `HYPOTHESIS_PROFILE=wide pytest -m slow` runs the wide random search."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("pinned", derandomize=True)
settings.register_profile("wide", derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pinned"))
