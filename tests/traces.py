"""Where the shared workload traces are: ../shared/traces beside the checkout, as on every
developer machine and in CI, or WATTPACK_TRACES. A missing trace fails loudly: never a skip."""

from __future__ import annotations

import os
from pathlib import Path

TRACES = Path(
    os.environ.get("WATTPACK_TRACES", Path(__file__).resolve().parents[2] / "shared" / "traces")
)


def trace_dir(name: str) -> Path:
    path = TRACES / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"trace folder {path} is missing: check out shared/ beside the repository "
            "or set WATTPACK_TRACES"
        )
    return path
