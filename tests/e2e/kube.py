"""What the end-to-end tests do to a cluster: KWOK GPU nodes, power domains, the config, pods,
and the operator as a real `wattpack operator` process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from controlplane import ControlPlane, Proc
from kubernetes import client, config
from waiting import wait_until

NS = "wattpack-system"
GPU = "nvidia.com/gpu"


class Cluster:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=cfg)
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.operators: list[Proc] = []

    # -- set-up -------------------------------------------------------------------------------

    def apply_manifests(self, path: Path) -> subprocess.CompletedProcess[str]:
        out = self.cp.kubectl("apply", "--server-side", "-k", str(path), check=False)
        assert out.returncode == 0, out.stderr
        for crd in ("gpunodes.wattpack.io", "powerdomains.wattpack.io"):
            self.cp.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/{crd}")
        return out

    def set_config(self, policy: dict[str, Any] | None = None, models: list | None = None) -> None:
        data = {}
        if policy is not None:
            data["policy.yaml"] = yaml.safe_dump(policy)
        if models is not None:
            data["gpu-models.yaml"] = yaml.safe_dump(models)
        self.core.patch_namespaced_config_map("wattpack-config", NS, {"data": data})

    def power_domain(self, name: str, parent: str | None, budget: int | None) -> None:
        spec: dict[str, Any] = {}
        if parent:
            spec["parent"] = parent
        if budget is not None:
            spec["budgetWatts"] = budget
        body = {
            "apiVersion": "wattpack.io/v1alpha1",
            "kind": "PowerDomain",
            "metadata": {"name": name},
            "spec": spec,
        }
        self.custom.create_cluster_custom_object("wattpack.io", "v1alpha1", "powerdomains", body)

    def gpu_node(
        self,
        name: str,
        domain: str,
        gpus: int = 8,
        model: str = "H100-SXM",
        cpu: str = "192",
        memory: str = "2Ti",
        labels: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
        pods: int = 110,
        unschedulable: bool = False,
        extended: dict[str, str] | None = None,
    ) -> None:
        capacity = {"cpu": cpu, "memory": memory, "pods": str(pods), GPU: str(gpus)}
        capacity.update(extended or {})
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "wattpack.io/power-domain": domain,
                    "wattpack.io/gpu-model": model,
                    "nvidia.com/gpu.present": "true",
                    **(labels or {}),
                },
            },
            "spec": {
                **({"taints": taints} if taints else {}),
                **({"unschedulable": True} if unschedulable else {}),
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        self.core.create_node(body)

    def nodes_ready(self, n: int, timeout: float = 60) -> None:
        def ready() -> bool:
            nodes = self.core.list_node().items
            ok = [
                x
                for x in nodes
                if any(c.type == "Ready" and c.status == "True" for c in x.status.conditions or [])
            ]
            return len(ok) >= n

        wait_until(ready, timeout, f"{n} KWOK nodes Ready")
        # The API server taints every new node not-ready; the node lifecycle controller of
        # kube-controller-manager lifts the taint once the node is Ready. This control plane
        # runs no controller manager, so the test does that controller's part.
        for node in self.core.list_node().items:
            taints = [t for t in node.spec.taints or [] if t.key != "node.kubernetes.io/not-ready"]
            if len(taints) != len(node.spec.taints or []):
                self.core.patch_node(node.metadata.name, {"spec": {"taints": taints or None}})

    def namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def priority_class(self, name: str, value: int) -> None:
        client.SchedulingV1Api(self.api).create_priority_class(
            {"apiVersion": "scheduling.k8s.io/v1", "metadata": {"name": name}, "value": value}
        )

    def pod(self, name: str, ns: str = "ml", **fields: Any) -> dict[str, Any]:
        """A pod made by `pod_body` (its arguments), created in namespace `ns`."""
        body = pod_body(name, **fields)
        self.core.create_namespaced_pod(ns, body)
        return body

    # -- reading ------------------------------------------------------------------------------

    def pods(self, ns: str | None = None) -> list[dict[str, Any]]:
        if ns:
            resp = self.core.list_namespaced_pod(ns, _preload_content=False)
        else:
            resp = self.core.list_pod_for_all_namespaces(_preload_content=False)
        return list(json.loads(resp.data)["items"])

    def events(self, ns: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_event(ns, _preload_content=False)
        return list(json.loads(resp.data)["items"])

    # -- the operator -------------------------------------------------------------------------

    def start_operator(self, *args: str, name: str = "operator") -> Proc:
        cmd = [
            sys.executable,
            "-m",
            "operators.cli",
            "--log-level",
            "info",
            "--log-format",
            "json",
            "operator",
            f"--kubeconfig={self.cp.kubeconfig}",
            "--metrics-port=0",
            *args,
        ]
        proc = Proc(name, cmd, self.cp.root / f"{name}.log").start()
        self.operators.append(proc)
        return proc

    def stop_operators(self) -> None:
        for p in self.operators:
            p.stop()


def pod_body(
    name: str,
    gpus: int = 1,
    milli: int | None = None,
    kind: str = "training",
    gang: str | None = None,
    gang_size: int | None = None,
    app: str | None = None,
    max_per_node: int | None = None,
    priority_class: str | None = None,
    cpu: str = "4",
    memory: str = "16Gi",
    scheduler: str = "wattpack",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    extended: dict[str, str] | None = None,
    **spec_fields: Any,
) -> dict[str, Any]:
    """A pod's body; without `tolerations` it tolerates the GPU taint as GPU pods do, and
    `spec_fields` (nodeSelector, affinity, schedulingGates, ...) go into its spec."""
    lab = {"wattpack.io/kind": kind, **(labels or {})}
    ann = dict(annotations or {})
    if gang:
        lab["wattpack.io/gang"] = gang
        ann["wattpack.io/gang-size"] = str(gang_size)
    if app:
        lab["wattpack.io/app"] = app
    if max_per_node:
        ann["wattpack.io/max-per-node"] = str(max_per_node)
    res: dict[str, dict[str, str]] = {"requests": {"cpu": cpu, "memory": memory}}
    if extended:  # extended resources: requests equal to limits, as the API requires
        res["requests"].update(extended)
        res["limits"] = dict(extended)
    if milli is not None:
        ann["wattpack.io/gpu-milli"] = str(milli)
    elif gpus:
        res["limits"] = {**res.get("limits", {}), GPU: str(gpus)}
        res["requests"][GPU] = str(gpus)
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [{"name": "main", "image": "example.invalid/work:1", "resources": res}],
        "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
        if tolerations is None
        else tolerations,
        **spec_fields,
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    body = {"metadata": {"name": name, "labels": lab, "annotations": ann}, "spec": spec}
    return body


H100 = {"name": "H100-SXM", "tdpWatts": 700, "idleWatts": 75, "memoryMiB": 81920}
QUICK = {"solver": {"timeLimitSeconds": 5, "workers": 1, "deterministic": True}}


def one_node(cluster: Cluster, policy: dict[str, Any] | None = None, gpus: int = 8) -> None:
    """An H100 node gpu-a1 under an unbudgeted facility, namespace ml, and the quick policy
    (plus `policy`)."""
    cluster.set_config({**QUICK, **(policy or {})}, [H100])
    cluster.power_domain("facility", None, None)
    cluster.gpu_node("gpu-a1", "facility", gpus=gpus)
    cluster.nodes_ready(1)
    cluster.namespace("ml")


def full_of_low_pods(cluster: Cluster, policy: dict[str, Any] | None = None, **pod: Any) -> None:
    """one_node with preemption, priority classes high (1000) and low (10), four 2-GPU low pods
    (`pod`: more of their fields) filling gpu-a1, and the operator started and binding them."""
    one_node(cluster, {"preemption": True, **(policy or {})})
    cluster.priority_class("high", 1000)
    cluster.priority_class("low", 10)
    for i in range(4):
        cluster.pod(f"low-{i}", gpus=2, priority_class="low", **pod)
    cluster.start_operator("--interval=1")
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 4, 60, "the node filled with low pods")


def once_bound(cluster: Cluster, name: str) -> Callable[[], dict[str, dict[str, Any]] | None]:
    """For wait_until: the pods of namespace ml by name, once `name` is bound."""

    def check() -> dict[str, dict[str, Any]] | None:
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        return pods if pods.get(name, {}).get("spec", {}).get("nodeName") else None

    return check


def gpus_in_use(pods: list[dict[str, Any]]) -> list[int]:
    """Every GPU index the bound pods hold, by their annotation, once per pod holding it."""
    return sorted(
        int(i)
        for p in pods
        if p["spec"].get("nodeName")
        for i in p["metadata"]["annotations"]["wattpack.io/gpu-indices"].split(",")
    )


def required_affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    """A pod's affinity with required node affinity: a node that matches any of the terms."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def not_in(key: str, *values: str) -> dict[str, Any]:
    """A node selector term: the label is not one of the values."""
    return {"matchExpressions": [{"key": key, "operator": "NotIn", "values": list(values)}]}


def scrape(port: int) -> dict[str, float]:
    """The wattpack_ samples a process serves on its metrics port, by name with labels."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("wattpack_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def lease_holder(cluster: Cluster) -> str | None:
    """The identity of the operator replica that leads now (its Lease's holder)."""
    try:
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease("wattpack-operator", NS)
    except client.ApiException:
        return None
    return str(lease.spec.holder_identity) if lease.spec.holder_identity else None


def bound(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if p["spec"].get("nodeName")]


def scheduled_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in pod.get("status", {}).get("conditions") or []:
        if c["type"] == "PodScheduled":
            return dict(c)
    return None
