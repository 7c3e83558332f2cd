"""docs/operations.md works as written: each shell block marked `<!-- guide-test: NAME -->` is
run, as the file has it, with bash against a real API server (helm, kubectl and wattpack on
PATH, KUBECONFIG set), and what it did is checked. Blocks that need a real cluster, registry or
GPU are marked `guide-untested` with the reason; every block is one or the other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from controlplane import ControlPlane
from kube import QUICK, Cluster, scheduled_condition, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "operations.md"
NS = "wattpack-system"
CRDS = ("gpunodes.wattpack.io", "powerdomains.wattpack.io")
_MARKED = re.compile(r"<!-- guide-(test|untested): ([^>]+?) -->\n```sh\n(.*?)```", re.S)
_VALUES = re.compile(r"<!-- guide-values: ([^>]+?) -->\n```yaml\n(.*?)```", re.S)


def _blocks() -> dict[str, str]:
    return {name: body for kind, name, body in _MARKED.findall(GUIDE.read_text()) if kind == "test"}


def _commands(block: str) -> list[str]:
    """The block's commands, a backslash-continued line joined to the next; comments out."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [c for c in joined.splitlines() if c.strip() and not c.lstrip().startswith("#")]


class Guide:
    """Runs the guide's blocks in a scratch folder that sees the repository's charts/,
    manifests/ and pyproject.toml, as a checkout would."""

    def __init__(self, k8s_bin: Path, tmp_path: Path, kubeconfig: Path | None) -> None:
        self.cwd = tmp_path / "checkout"
        self.cwd.mkdir()
        for name in ("charts", "manifests", "pyproject.toml"):
            (self.cwd / name).symlink_to(REPO / name)
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join(
                [str(k8s_bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
            ),
            "PYTHONPATH": str(REPO),  # the wattpack command runs this tree
            "HOME": str(tmp_path),  # helm's caches, no ~/.kube/config
        }
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)
        self.blocks = _blocks()

    def run(self, name: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
        return self.sh(prelude + self.blocks[name])

    def run_ok(self, name: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
        out = self.run(name, prelude)
        assert out.returncode == 0, f"{name}:\n{out.stdout}\n{out.stderr}"
        return out

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture
def guide(k8s_bin: Path, tmp_path: Path, control_plane: ControlPlane) -> Guide:
    return Guide(k8s_bin, tmp_path, control_plane.kubeconfig)


def _names(cp: ControlPlane, what: str, ns: str = NS) -> set[str]:
    out = cp.kubectl("-n", ns, "get", what, "-o", "name", check=False)
    return set(out.stdout.split())


def test_every_shell_block_is_run_or_says_why_not() -> None:
    text = GUIDE.read_text()
    fences = text.count("```sh\n")
    marked = _MARKED.findall(text)
    assert fences == len(marked), "a ```sh block in docs/operations.md has no guide- marker"
    names = [n for kind, n, _ in marked if kind == "test"]
    assert len(names) == len(set(names)), "two guide-test blocks share a name"
    tested = set(names)
    assert tested == {
        "install-helm",
        "bad-value",
        "install-template",
        "install-kustomize",
        "release-version",
        "package-chart",
        "upgrade-helm",
        "uninstall-helm",
        "uninstall-kustomize",
        "pending-pods",
        "dry-run-plan",
        "leader",
        "gpunodes",
        "budgets",
        "shadow-mode",
    }, "a guide-test block this file does not run"


def test_commands_split_as_bash_reads_them() -> None:
    assert _commands("a \\\n  b\n# note\nc\n") == ["a b", "c"]


def test_helm_install_upgrade_uninstall(guide: Guide, control_plane: ControlPlane) -> None:
    cp = control_plane
    # Deleting a namespace waits for the namespace controller to empty it.
    cp.start_controller_manager("namespace,garbagecollector")
    out = guide.run_ok("install-helm")
    assert "deployment.apps/wattpack-operator" in out.stdout
    assert "daemonset.apps/wattpack-agent" in out.stdout
    assert "configmap/wattpack-config" in out.stdout

    bad = guide.run("bad-value")
    assert bad.returncode != 0
    (shown,) = [c for c in guide.blocks["bad-value"].splitlines() if "at '/policy" in c]
    assert shown.lstrip("# ") in bad.stderr

    guide.run_ok("upgrade-helm")
    cm = yaml.safe_load(
        cp.kubectl("-n", NS, "get", "configmap", "wattpack-config", "-o", "yaml").stdout
    )
    policy = yaml.safe_load(cm["data"]["policy.yaml"])
    assert policy["solver"] == {"timeLimitSeconds": 8, "workers": 4}

    uninstall, *purge = _commands(guide.blocks["uninstall-helm"])
    out = guide.sh(uninstall)
    assert out.returncode == 0, out.stderr
    assert not _names(cp, "deployment,daemonset,configmap")
    # helm uninstall keeps the CRDs (crds.keep), so the power tree survives a reinstall.
    for crd in CRDS:
        assert cp.kubectl("get", "crd", crd, check=False).returncode == 0
    out = guide.sh("\n".join(purge))
    assert out.returncode == 0, out.stderr
    for crd in CRDS:
        assert cp.kubectl("get", "crd", crd, check=False).returncode != 0
    assert cp.kubectl("get", "namespace", NS, check=False).returncode != 0


def test_template_install(guide: Guide, control_plane: ControlPlane) -> None:
    guide.run_ok("install-template")
    assert {"deployment.apps/wattpack-operator", "daemonset.apps/wattpack-agent"} <= _names(
        control_plane, "deployment,daemonset"
    )


def test_kustomize_install_and_uninstall(guide: Guide, control_plane: ControlPlane) -> None:
    cp = control_plane
    cp.start_controller_manager("namespace,garbagecollector")
    guide.run_ok("install-kustomize")
    assert "deployment.apps/wattpack-operator" in _names(cp, "deployment")
    guide.run_ok("uninstall-kustomize")
    for crd in CRDS:
        assert cp.kubectl("get", "crd", crd, check=False).returncode != 0
    assert cp.kubectl("get", "namespace", NS, check=False).returncode != 0


def test_release_version_and_chart_package(k8s_bin: Path, tmp_path: Path) -> None:
    guide = Guide(k8s_bin, tmp_path, None)
    version = guide.run_ok("release-version").stdout.strip()
    chart = yaml.safe_load((REPO / "charts" / "wattpack" / "Chart.yaml").read_text())
    # One number: the package, the image tag the chart and the manifests deploy, the chart.
    assert version == chart["appVersion"] == chart["version"]
    for f in ("operator.yaml", "agent.yaml"):
        text = (REPO / "manifests" / f).read_text()
        assert f"image: ghcr.io/wattpack/wattpack:{version}\n" in text, f
    guide.run_ok("package-chart")
    assert (guide.cwd / f"wattpack-{version}.tgz").is_file()


def test_troubleshooting_commands(k8s_bin: Path, tmp_path: Path, cluster: Cluster) -> None:
    guide = Guide(k8s_bin, tmp_path, cluster.cp.kubeconfig)
    h100 = {"name": "H100-SXM", "tdpWatts": 700, "idleWatts": 75, "memoryMiB": 81920}
    cluster.set_config(QUICK, [h100])
    # 8 idle GPUs draw 600 W: room under 2000 W for one busy GPU (625 W), not for four more.
    cluster.power_domain("facility", None, 2000)
    cluster.gpu_node("gpu-a1", "facility", gpus=8)
    cluster.nodes_ready(1)
    cluster.namespace("ml")
    cluster.pod("fits", gpus=1)
    cluster.pod("too-big", gpus=4)
    cluster.start_operator("--leader-elect", "--identity=operator-0", "--interval=1")

    def reason() -> str | None:
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        cond = scheduled_condition(pods["too-big"]) or {}
        return cond.get("message") if pods["fits"]["spec"].get("nodeName") else None

    why = wait_until(reason, 90, "fits bound and too-big marked unschedulable")
    assert why.startswith("power: facility would draw")

    out = guide.run_ok("pending-pods")
    assert "too-big" in out.stdout and "fits" not in out.stdout
    assert "FailedScheduling" in out.stdout and "power: facility" in out.stdout

    out = guide.run_ok("dry-run-plan")
    assert (guide.cwd / "snapshot.yaml").is_file() and (guide.cwd / "policy.yaml").is_file()
    assert "ml/too-big" in out.stdout and "power: facility" in out.stdout

    assert guide.run_ok("leader").stdout.strip().splitlines()[0] == "operator-0"
    assert "wattpack-agent" in guide.run_ok("gpunodes").stdout

    budgets = guide.run_ok("budgets").stdout.splitlines()
    assert budgets[0].split()[:4] == ["NAME", "PARENT", "BUDGET", "W"]
    (row,) = [line.split() for line in budgets if line.startswith("facility ")]
    assert row[1] == "2000"
    planned = wait_until(
        lambda: (
            cluster.custom.get_cluster_custom_object(
                "wattpack.io", "v1alpha1", "powerdomains", "facility"
            )
            .get("status", {})
            .get("powerWatts")
        ),
        30,
        "the facility's planned power in its status",
    )
    assert 600 < planned <= 2000


def test_values_example_and_shadow_mode(guide: Guide, control_plane: ControlPlane) -> None:
    ((name, text),) = _VALUES.findall(GUIDE.read_text())
    (guide.cwd / name).write_text(text)
    out = guide.sh(f"helm template wattpack charts/wattpack -f {name}")
    assert out.returncode == 0, out.stderr
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}
    example = yaml.safe_load(text)
    agent = objs["DaemonSet", "wattpack-agent"]["spec"]["template"]["spec"]
    assert agent["containers"][0]["image"].startswith(example["image"]["repository"] + ":")
    assert agent["tolerations"] == example["agent"]["tolerations"]
    assert ("ServiceMonitor", "wattpack-operator") in objs
    assert ("PrometheusRule", "wattpack") in objs

    guide.run_ok("shadow-mode")
    dep = control_plane.kubectl("-n", NS, "get", "deployment", "wattpack-operator", "-o", "yaml")
    (container,) = yaml.safe_load(dep.stdout)["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == "--dry-run"
