"""Fixtures for the end-to-end suite: a fresh real control plane (etcd, kube-apiserver, KWOK)
per test, with wattpack's manifests applied, and the operator as a real process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests/: builders

from controlplane import ControlPlane, binaries
from kube import Cluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def k8s_bin() -> Path:
    # Built from Go modules by tests/e2e/k8sbin/build.sh (cached; .ci/run builds it first).
    return binaries()


@pytest.fixture
def control_plane(k8s_bin: Path, tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(k8s_bin, root=tmp_path / "cp")
    cp.root.mkdir()
    try:
        cp.start()
        cp.start_kwok()
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Iterator[Cluster]:
    """A control plane with `kubectl apply --server-side -k manifests/` done."""
    c = Cluster(control_plane)
    c.apply_manifests(REPO / "manifests")
    try:
        yield c
    finally:
        c.stop_operators()
        for p in c.operators:  # shown by pytest when the test failed
            print(f"--- {p.name} log\n{p.tail(80)}")
