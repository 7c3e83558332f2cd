"""The openb default trace as one batch of pending pods, in several formulations.

    python3 benchmarks/openb_batches.py [-o DIR]

`openb_batches()` reads openb_node_list_gpu_node.csv (1,213 nodes, 6,212 GPUs) and
openb_pod_list_default.csv (8,152 pods) with the project's importer (scheduler.traces.openb) and
returns every pod pending at once, formulated five ways. The node inventory (nodes, GPU models)
is the same in all five; so is the power-domain tree (facility > rows of 8 racks > racks of 16
nodes, in file order): only budgets, the pods kept and their kinds differ.

1. `openb-default`: as imported. Kinds by the importer's heuristic: 2+ GPUs -> training; a share
   of one GPU -> inference; any other pod (one whole GPU, or CPU-only) -> fine-tuning when its
   qos is BE, else inference. No power budgets.
2. `openb-gpu-only`: the 1,088 CPU-only pods dropped (7,064 GPU pods left).
3. `openb-gpu-only-facility`: 2, with the facility (the root every rack and row hangs from, so
   every node is below it) budgeted at nameplate: the summed TDP of every GPU. It can never
   bind; it makes the power model part of the problem without changing what fits.
4. `openb-kinds-by-qos`: 1 with kinds assigned by size and QoS instead (an assumption; the trace
   records no kinds, and its README offers qos LS as a proxy for online work and BE for batch):
   - a share of one GPU (gpu_milli < 1000) -> inference, whatever its qos;
   - any other pod (whole GPUs, one or more, or CPU-only) by qos: LS or Guaranteed ->
     inference, BE -> training, Burstable -> fine-tuning (work that may run over its request:
     a middle guess).
   On default this gives 1,079 training, 100 fine-tuning and 6,973 inference pods, where the
   importer gives 75, 1,079 and 6,998: the 52 LS multi-GPU pods become inference and the BE
   whole-GPU pods training.
5. `openb-gpu-only-facility-kinds-by-qos`: 3 and 4 combined.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script from a checkout: make the repository's `scheduler` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from instances import print_and_write

from scheduler.model import ClusterSnapshot, Pod, PodKind, SnapshotMeta
from scheduler.traces.openb import read_openb

OPENB = Path(__file__).resolve().parents[2] / "shared" / "traces" / "alibaba-gpu-v2023-openb"
NODES = OPENB / "openb_node_list_gpu_node.csv"
PODS = OPENB / "openb_pod_list_default.csv"

# Formulation 4's kinds for pods that are not GPU shares, by qos (a missing qos reads as BE,
# as the importer reads it).
KIND_BY_QOS = {
    "LS": PodKind.INFERENCE,
    "Guaranteed": PodKind.INFERENCE,
    "BE": PodKind.TRAINING,
    "Burstable": PodKind.FINE_TUNING,
}


def kind_by_qos(pod: Pod, qos: str) -> PodKind:
    """Formulation 4's kind: shares are inference, other pods by qos (KIND_BY_QOS)."""
    if pod.fractional:
        return PodKind.INFERENCE
    return KIND_BY_QOS.get(qos, PodKind.TRAINING)


def _qos(path: Path) -> dict[str, str]:
    """Pod name -> qos column, read as the importer reads it (missing or empty = BE)."""
    with path.open(newline="", encoding="utf-8") as f:
        return {
            row["name"].strip(): (str(row.get("qos") or "BE").strip() or "BE")
            for row in csv.DictReader(f)
        }


def nameplate_watts(snap: ClusterSnapshot) -> int:
    """Summed TDP of every GPU in the cluster, in watts."""
    tdp = {m.name: m.tdp_watts for m in snap.gpu_models}
    return sum(n.gpus * tdp[n.gpu_model] for n in snap.nodes)


def _variant(
    base: ClusterSnapshot,
    name: str,
    *,
    gpu_only: bool = False,
    facility: bool = False,
    qos: dict[str, str] | None = None,
) -> ClusterSnapshot:
    pods = [p for p in base.pods if p.gpus > 0] if gpu_only else list(base.pods)
    if qos is not None:
        pods = [p.model_copy(update={"kind": kind_by_qos(p, qos[p.name])}) for p in pods]
    domains = base.power_domains
    if facility:
        plate = nameplate_watts(base)
        domains = [
            d.model_copy(update={"budget_watts": plate}) if d.parent is None else d for d in domains
        ]
    # Built anew, not copied: every formulation passes the snapshot's consistency checks.
    return ClusterSnapshot(
        metadata=SnapshotMeta(name=name),
        gpu_models=base.gpu_models,
        power_domains=domains,
        nodes=base.nodes,
        pods=pods,
    )


def openb_batches() -> list[tuple[str, ClusterSnapshot]]:
    """The five formulations (module docstring), as (name, snapshot), in that order."""
    base = read_openb(NODES, PODS, name="openb-default")
    if [d.name for d in base.power_domains if d.parent is None] != ["facility"]:
        raise AssertionError("the importer's tree has one root, facility")
    qos = _qos(PODS)
    snaps = [
        _variant(base, "openb-default"),
        _variant(base, "openb-gpu-only", gpu_only=True),
        _variant(base, "openb-gpu-only-facility", gpu_only=True, facility=True),
        _variant(base, "openb-kinds-by-qos", qos=qos),
        _variant(
            base, "openb-gpu-only-facility-kinds-by-qos", gpu_only=True, facility=True, qos=qos
        ),
    ]
    return [(s.metadata.name, s) for s in snaps]


def describe(snap: ClusterSnapshot) -> dict:
    """Headline numbers: nodes, GPUs, pods (CPU-only among them), kinds, facility budget."""
    facility = next(d for d in snap.power_domains if d.parent is None)
    return {
        "nodes": len(snap.nodes),
        "gpus": sum(n.gpus for n in snap.nodes),
        "pending_pods": sum(p.node is None for p in snap.pods),
        "cpu_only_pods": sum(p.gpus == 0 for p in snap.pods),
        "requested_gpus": sum(p.milli_total for p in snap.pods) / 1000,
        "kinds": dict(sorted(Counter(p.kind.value for p in snap.pods).items())),
        "facility_budget_watts": facility.budget_watts,
        "nameplate_watts": nameplate_watts(snap),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", metavar="DIR", help="write <name>.json files here")
    args = ap.parse_args(argv)
    print_and_write(openb_batches(), describe, args.output)


if __name__ == "__main__":
    main()
