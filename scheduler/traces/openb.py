"""Import the Alibaba cluster-trace-gpu-v2023 ("openb") node and pod lists as a ClusterSnapshot.

The trace records requests and an inventory, not kinds, priorities, power or racks. Everything
below that the trace does not say is an assumption, chosen to be simple and stated here:

GPU models (TDP / idle watts; public figures, see docs/power-and-health.md):
    T4 70/10, P100 250/30, V100M16 300/35, V100M32 300/35, A10 150/20.
    G1, G2 and G3 are undisclosed internal models. Assumed: G1 250/30 (an older PCIe-class card),
    G2 300/40 (the bulk 8-GPU training nodes, V100-class), G3 400/50 (the newer 8-GPU nodes,
    A100-SXM-class). Only models that a node or a pod's gpu_spec names are listed.
    CPU-only nodes (gpu 0, empty model) keep their CPU and memory, with 0 GPUs and the
    placeholder model "cpu-only" (1/0 W), which no pod can ask for and no GPU draws.

Pod kind (heuristics from the trace README's proxies; not ground truth):
    1. num_gpu >= 2 -> training (distributed or large jobs).
    2. GPU-sharing (num_gpu 1, gpu_milli < 1000) -> inference (serving and development pods).
    3. otherwise (one whole GPU, or CPU-only) by qos: BE -> fine-tuning (small batch jobs, whose
       draw is closer to fine-tuning's than to full training's), any other qos -> inference.
    Pod lists without a qos column (the multigpu variants) are read as BE.
CPU-only pods get gpus 0 and gpuMilli 1000 (the format's value for "no share").
Priority is 0 for every pod: qos is a Kubernetes QoS class, not a priority, and the FGD paper
evaluates allocation without priorities. Every pod is preemptible and pending (node null).
gpu_spec becomes gpuModels with duplicates removed, in the order given.

Power domains: one root "facility"; nodes in file order fill racks of `nodes_per_rack`, racks
fill rows of `racks_per_row`. Budgets are null (no power budget) unless a fraction is given;
then a domain's budget is floor(fraction x nameplate), nameplate being the summed TDP of the GPUs
below it (a domain with no GPUs gets no budget).

Row numbers in errors are file line numbers: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scheduler.errors import UserError
from scheduler.model import (
    ClusterSnapshot,
    GpuModel,
    Node,
    Pod,
    PodKind,
    PowerDomain,
    SnapshotMeta,
)
from scheduler.model import limits as lim

# name -> (tdpWatts, idleWatts, memoryMiB); G1-G3 watts are assumptions (module docstring).
GPU_CATALOGUE: dict[str, tuple[int, int, int]] = {
    "G1": (250, 30, 0),
    "G2": (300, 40, 0),
    "G3": (400, 50, 0),
    "T4": (70, 10, 16384),
    "P100": (250, 30, 16384),
    "V100M16": (300, 35, 16384),
    "V100M32": (300, 35, 32768),
    "A10": (150, 20, 24576),
}
CPU_ONLY_MODEL = "cpu-only"

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
POD_OPTIONAL_COLUMNS = ("gpu_spec", "qos")

Row = Mapping[str, Any]


def _fix(where: str) -> str:
    return f"fix {where} or use an unmodified file from the openb trace"


def _bad(source: str, line: int, column: str, problem: str) -> UserError:
    return UserError(f"{source} line {line}, column '{column}': {problem}", _fix("that row"))


def _text(row: Row, column: str, source: str, line: int) -> str:
    value = row.get(column)
    if value is None:
        raise _bad(source, line, column, "missing value")
    return str(value).strip()


# The most each column may hold; any other (a time) is at most MAX_SECONDS.
_HIGH = {
    "gpu": lim.MAX_GPUS_PER_NODE,
    "num_gpu": lim.MAX_GPUS_PER_NODE,
    "gpu_milli": 1000,
    "cpu_milli": lim.MAX_CPU_MILLI,
    "memory_mib": lim.MAX_MEMORY_MIB,
}


def _int(row: Row, column: str, source: str, line: int) -> int:
    text = _text(row, column, source, line)
    try:
        value = int(text)
    except ValueError:
        raise _bad(source, line, column, f"'{text}' is not an integer") from None
    if value < 0:
        raise _bad(source, line, column, f"{value} is negative")
    high = _HIGH.get(column, lim.MAX_SECONDS)
    if value > high:
        raise _bad(source, line, column, f"{value} is above {high}, the limit")
    return value


def _node(row: Row, source: str, line: int, domain: str) -> Node:
    gpus = _int(row, "gpu", source, line)
    model = _text(row, "model", source, line)
    if gpus == 0:
        model = CPU_ONLY_MODEL
    elif model not in GPU_CATALOGUE:
        known = ", ".join(GPU_CATALOGUE)
        raise _bad(source, line, "model", f"unknown GPU model '{model}' (known: {known})")
    return Node(
        name=_text(row, "sn", source, line),
        power_domain=domain,
        gpu_model=model,
        gpus=gpus,
        cpu_milli=_int(row, "cpu_milli", source, line),
        memory_mi_b=_int(row, "memory_mib", source, line),
    )


def _kind(num_gpu: int, gpu_milli: int, qos: str) -> PodKind:
    if num_gpu >= 2:
        return PodKind.TRAINING
    if num_gpu == 1 and gpu_milli < 1000:
        return PodKind.INFERENCE
    return PodKind.FINE_TUNING if qos == "BE" else PodKind.INFERENCE


def _gpu_spec(row: Row, source: str, line: int) -> list[str]:
    models: list[str] = []
    for part in str(row.get("gpu_spec") or "").split("|"):
        name = part.strip()
        if not name:
            continue
        if name not in GPU_CATALOGUE:
            known = ", ".join(GPU_CATALOGUE)
            raise _bad(source, line, "gpu_spec", f"unknown GPU model '{name}' (known: {known})")
        if name not in models:
            models.append(name)
    return models


def _pod(row: Row, source: str, line: int) -> Pod:
    num_gpu = _int(row, "num_gpu", source, line)
    milli = _int(row, "gpu_milli", source, line)
    if num_gpu == 0 and milli != 0:
        raise _bad(source, line, "gpu_milli", f"{milli} on a pod with num_gpu 0; expected 0")
    if num_gpu == 1 and not 1 <= milli <= 1000:
        raise _bad(source, line, "gpu_milli", f"{milli} is outside 1..1000")
    if num_gpu >= 2 and milli != 1000:
        raise _bad(source, line, "gpu_milli", f"{milli} on a multi-GPU pod; expected 1000")
    qos = str(row.get("qos") or "BE").strip() or "BE"
    return Pod(
        name=_text(row, "name", source, line),
        kind=_kind(num_gpu, milli, qos),
        gpus=num_gpu,
        gpu_milli=milli if num_gpu else 1000,
        gpu_models=_gpu_spec(row, source, line),
        cpu_milli=_int(row, "cpu_milli", source, line),
        memory_mi_b=_int(row, "memory_mib", source, line),
    )


def _check_unique(names: list[str], source: str, column: str) -> None:
    first: dict[str, int] = {}
    for line, name in enumerate(names, start=2):
        if name in first:
            raise _bad(source, line, column, f"'{name}' repeats line {first[name]}")
        first[name] = line


def _budget(fraction: float | None, nameplate: int, what: str) -> int | None:
    if fraction is None or nameplate == 0:
        return None
    if not fraction > 0:
        raise UserError(f"{what} budget fraction {fraction} is not positive", "use a value > 0")
    return math.floor(fraction * nameplate)


def _domains(
    nodes_tdp: list[int],
    nodes_per_rack: int,
    racks_per_row: int,
    fractions: tuple[float | None, float | None, float | None],
) -> tuple[list[PowerDomain], list[str]]:
    """The facility/row/rack tree and, per node in file order, its rack."""
    rack_f, row_f, facility_f = fractions
    racks = math.ceil(len(nodes_tdp) / nodes_per_rack)
    rows = math.ceil(racks / racks_per_row)
    rack_tdp = [sum(nodes_tdp[r * nodes_per_rack : (r + 1) * nodes_per_rack]) for r in range(racks)]
    row_tdp = [sum(rack_tdp[w * racks_per_row : (w + 1) * racks_per_row]) for w in range(rows)]
    total = _budget(facility_f, sum(rack_tdp), "facility")
    domains = [PowerDomain(name="facility", budget_watts=total)]
    domains += [
        PowerDomain(name=f"row-{w:02d}", parent="facility", budget_watts=_budget(row_f, tdp, "row"))
        for w, tdp in enumerate(row_tdp)
    ]
    domains += [
        PowerDomain(
            name=f"rack-{r:03d}",
            parent=f"row-{r // racks_per_row:02d}",
            budget_watts=_budget(rack_f, tdp, "rack"),
        )
        for r, tdp in enumerate(rack_tdp)
    ]
    leaf = [f"rack-{i // nodes_per_rack:03d}" for i in range(len(nodes_tdp))]
    return domains, leaf


def snapshot_from_openb(
    node_rows: Iterable[Row],
    pod_rows: Iterable[Row],
    *,
    name: str = "openb",
    nodes_per_rack: int = 16,
    racks_per_row: int = 8,
    rack_budget_fraction: float | None = None,
    row_budget_fraction: float | None = None,
    facility_budget_fraction: float | None = None,
    pending: bool = True,
    node_source: str = "node list",
    pod_source: str = "pod list",
) -> ClusterSnapshot:
    """A snapshot of the trace's inventory and, when `pending`, all its pods waiting to be placed.

    Rows are mappings from column name to value (strings, as csv.DictReader yields, or ints).
    `pending=False` imports the inventory alone: the trace has no placements to import, so a
    replay can submit the pods itself. The sources name the inputs in error messages.
    """
    if nodes_per_rack < 1 or racks_per_row < 1:
        raise UserError("nodes_per_rack and racks_per_row must be at least 1", "pass values >= 1")
    node_rows = list(node_rows)
    node_list = [_node(r, node_source, i, "") for i, r in enumerate(node_rows, start=2)]
    _check_unique([n.name for n in node_list], node_source, "sn")
    pods = [_pod(r, pod_source, i) for i, r in enumerate(pod_rows, start=2)] if pending else []
    _check_unique([p.name for p in pods], pod_source, "name")

    tdp = {m: spec[0] for m, spec in GPU_CATALOGUE.items()}
    nodes_tdp = [n.gpus * tdp.get(n.gpu_model, 0) for n in node_list]
    fractions = (rack_budget_fraction, row_budget_fraction, facility_budget_fraction)
    domains, leaf = _domains(nodes_tdp, nodes_per_rack, racks_per_row, fractions)
    nodes = [n.model_copy(update={"power_domain": d}) for n, d in zip(node_list, leaf, strict=True)]

    used = {n.gpu_model for n in nodes} | {m for p in pods for m in p.gpu_models}
    models = [
        GpuModel(name=m, tdp_watts=t, idle_watts=i, memory_mi_b=mem)
        for m, (t, i, mem) in GPU_CATALOGUE.items()
        if m in used
    ]
    if CPU_ONLY_MODEL in used:
        models.append(GpuModel(name=CPU_ONLY_MODEL, tdp_watts=1, idle_watts=0))
    try:
        return ClusterSnapshot(
            metadata=SnapshotMeta(name=name),
            gpu_models=models,
            power_domains=domains,
            nodes=nodes,
            pods=pods,
        )
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise UserError(f"{node_source} + {pod_source}: {msg}", _fix("them")) from None


def _read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    return _read_table(path, required)[1]


def _read_table(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV file that must have the `required` columns."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            for column in required:
                if column not in header:
                    raise _bad(str(path), 1, column, "missing from the header")
            return header, list(reader)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})", _fix("the file")) from None


def read_openb(node_csv_path: str | Path, pod_csv_path: str | Path, **opts: Any) -> ClusterSnapshot:
    """Read an openb node list and pod list; options as for snapshot_from_openb."""
    node_path, pod_path = Path(node_csv_path), Path(pod_csv_path)
    node_rows = _read_rows(node_path, NODE_COLUMNS)
    pod_rows = _read_rows(pod_path, POD_COLUMNS) if opts.get("pending", True) else []
    opts.setdefault("node_source", str(node_path))
    opts.setdefault("pod_source", str(pod_path))
    return snapshot_from_openb(node_rows, pod_rows, **opts)
