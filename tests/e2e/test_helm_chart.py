"""The Helm chart (charts/wattpack): helm lint, the values it takes and refuses, the same objects
as the kustomize tree (manifests/, monitoring/ included: the chart renders copies of its CRDs,
ServiceMonitors and alert rules, which tests/test_manifests.py checks and runs through
promtool), and `helm template` applied to a real API server, first as a server-side dry run and
then for real. helm and kubectl are the real binaries k8sbin/build.sh builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane
from kube import wait_until

from scheduler.model import GpuModel, PackingPolicy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "wattpack"
NS = "wattpack-system"
CRDS = ("gpunodes.wattpack.io", "powerdomains.wattpack.io")
# prometheus-operator's kinds: the kustomize tree may carry them beside the core objects, the
# chart renders them only when asked.
MONITORING = "monitoring.coreos.com/"


def _run(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, input=stdin, check=False
    )


def _template(k8s_bin: Path, *sets: str, ns: str = NS) -> str:
    args: list[str | Path] = [k8s_bin / "helm", "template", "wattpack", CHART, "--namespace", ns]
    for s in sets:
        args += ["--set", s]
    out = _run(*args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _render(k8s_bin: Path, *sets: str) -> list[dict[str, Any]]:
    return _objects(_template(k8s_bin, *sets))


def _kustomize(k8s_bin: Path) -> list[dict[str, Any]]:
    out = _run(k8s_bin / "kubectl", "kustomize", REPO / "manifests")
    assert out.returncode == 0, out.stderr
    return [d for d in _objects(out.stdout) if not d["apiVersion"].startswith(MONITORING)]


def _kustomize_monitoring(k8s_bin: Path) -> list[dict[str, Any]]:
    out = _run(k8s_bin / "kubectl", "kustomize", REPO / "manifests" / "monitoring")
    assert out.returncode == 0, out.stderr
    return _objects(out.stdout)


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {_key(o): o for o in objs}
    assert len(out) == len(objs), "two objects with one kind, namespace and name"
    return out


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# --- offline: lint, schema, the kustomize tree's objects ------------------------------------


def test_helm_lint_passes_strict(k8s_bin: Path) -> None:
    monitoring = "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true"
    for extra in ([], ["--set", monitoring]):
        out = _run(k8s_bin / "helm", "lint", "--strict", CHART, *extra)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_values_schema_is_generated_from_the_current_models() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "charts" / "values_schema.py"), "--check"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr


# What the chart renders from copies of manifests/ (helm reads no file outside the chart).
COPIED = ("crds", "monitoring")


def test_chart_files_are_copies_of_the_manifests() -> None:
    """files/crds/ and files/monitoring/ hold the CRDs, ServiceMonitors and alert rules of
    manifests/, byte for byte and all of them: one source for both install paths."""
    for folder in COPIED:
        sources = {
            p.name: p
            for p in (REPO / "manifests" / folder).glob("*.yaml")
            if p.name != "kustomization.yaml"
        }
        copies = {p.name: p for p in (CHART / "files" / folder).glob("*.yaml")}
        assert sources and set(copies) == set(sources), f"charts/wattpack/files/{folder}"
        for name, source in sources.items():
            copy = copies[name]
            assert copy.read_bytes() == source.read_bytes(), (
                f"cp {source.relative_to(REPO)} {copy.relative_to(REPO)}"
            )


def test_defaults_render_the_kustomize_objects(k8s_bin: Path) -> None:
    kust = _by_key(_kustomize(k8s_bin))
    chart = _by_key(_render(k8s_bin))
    # helm install --create-namespace makes the namespace; the Namespace object is opt-in.
    assert set(chart) == set(kust) - {("Namespace", "", NS)}
    assert set(_by_key(_render(k8s_bin, "namespace.create=true"))) == set(kust)
    for key, k in kust.items():
        if key not in chart:
            continue
        c = chart[key]
        assert c["apiVersion"] == k["apiVersion"], key
        # The labels kustomize sets stay, so a Service or ServiceMonitor selects the same pods.
        assert k["metadata"].get("labels", {}).items() <= c["metadata"]["labels"].items(), key
        if key[0] == "CustomResourceDefinition":
            assert c["spec"] == k["spec"], key
        if key[0] in ("ClusterRole", "Role"):
            assert c["rules"] == k["rules"], key
        if key[0] in ("ClusterRoleBinding", "RoleBinding"):
            assert (c["roleRef"], c["subjects"]) == (k["roleRef"], k["subjects"]), key
        if key[0] == "ConfigMap":
            for f in ("policy.yaml", "gpu-models.yaml"):
                assert yaml.safe_load(c["data"][f]) == yaml.safe_load(k["data"][f]), f
        if key[0] in ("Service", "PodDisruptionBudget"):
            assert c["spec"] == k["spec"], key
        if key[0] in ("Deployment", "DaemonSet"):
            cs, ks = c["spec"], k["spec"]
            assert cs["selector"] == ks["selector"], key
            assert cs.get("replicas") == ks.get("replicas"), key
            cp, kp = cs["template"]["spec"], ks["template"]["spec"]
            for f in (
                "serviceAccountName",
                "securityContext",
                "volumes",
                "nodeSelector",
                "tolerations",
                "runtimeClassName",
                "priorityClassName",
                "affinity",
            ):
                assert cp.get(f) == kp.get(f), f"{key} {f}"
            cc, kc = _container(c), _container(k)
            for f in (
                "image",
                "imagePullPolicy",
                # Every flag and value in order: --stuck-after as the probes expect it.
                "command",
                "ports",
                "livenessProbe",
                "readinessProbe",
                "env",
                "resources",
                "securityContext",
                "volumeMounts",
            ):
                assert cc.get(f) == kc.get(f), f"{key} {f}"


def test_monitoring_objects_are_the_kustomize_ones(k8s_bin: Path) -> None:
    """With the monitoring values on, the chart's ServiceMonitors and PrometheusRule are those
    of manifests/monitoring/: the same specs, so the same scrapes and the same alerts."""
    kust = _by_key(_kustomize_monitoring(k8s_bin))
    chart = _by_key(
        [
            o
            for o in _render(
                k8s_bin, "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true"
            )
            if o["apiVersion"].startswith(MONITORING)
        ]
    )
    assert set(chart) == set(kust)
    for key, k in kust.items():
        c = chart[key]
        assert c["apiVersion"] == k["apiVersion"], key
        assert k["metadata"]["labels"].items() <= c["metadata"]["labels"].items(), key
        assert c["spec"] == k["spec"], key


def test_default_config_validates_against_the_planners_models(k8s_bin: Path) -> None:
    cm = _one(_render(k8s_bin), "ConfigMap", "wattpack-config")
    PackingPolicy.model_validate(yaml.safe_load(cm["data"]["policy.yaml"]))
    for m in yaml.safe_load(cm["data"]["gpu-models.yaml"]):
        GpuModel.model_validate(m)


# --- offline: values ----------------------------------------------------------------------


def test_values_reach_the_objects(k8s_bin: Path) -> None:
    objs = _render(
        k8s_bin,
        "image.repository=registry.example/wattpack,image.tag=0.2.0-rc1,image.pullPolicy=Always",
        "operator.replicas=3,operator.leaderElection.leaseSeconds=20",
        "operator.resources.requests.cpu=2,agent.resources.limits.memory=1Gi",
        "metrics.operatorPort=9191,metrics.agentPort=9500",
        "agent.nodeSelector.pool=gpu,agent.tolerations[0].key=dedicated",
        "agent.tolerations[0].operator=Exists,agent.runtimeClassName=",
        "policy.preemption=false,policy.solver.timeLimitSeconds=12",
        "operator.stuckAfterSeconds=120,agent.stuckAfterSeconds=45,agent.dcgmNames=true",
        "logLevel=debug",
    )
    dep = _one(objs, "Deployment", "wattpack-operator")
    ds = _one(objs, "DaemonSet", "wattpack-agent")
    op, ag = _container(dep), _container(ds)
    for c in (op, ag):
        assert c["image"] == "registry.example/wattpack:0.2.0-rc1"
        assert c["imagePullPolicy"] == "Always"
        assert _arg(c["command"], "--log-level") == "debug"
    assert dep["spec"]["replicas"] == 3
    assert "--leader-elect" in op["command"]
    assert _arg(op["command"], "--lease-seconds") == "20"
    assert _arg(op["command"], "--stuck-after") == "120"
    assert _arg(ag["command"], "--stuck-after") == "45"
    assert "--dcgm-names" in ag["command"]
    assert op["resources"]["requests"]["cpu"] == 2
    assert ag["resources"]["limits"]["memory"] == "1Gi"
    for c, port in ((op, 9191), (ag, 9500)):
        assert _arg(c["command"], "--metrics-port") == str(port)
        assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for name, port in (("wattpack-operator-metrics", 9191), ("wattpack-agent-metrics", 9500)):
        svc = _one(objs, "Service", name)
        assert svc["spec"]["ports"][0]["port"] == port
        assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "gpu"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert "runtimeClassName" not in pod
    # The user's policy is merged over the chart's: fields not given keep the chart's values.
    cm = _one(objs, "ConfigMap", "wattpack-config")
    policy = PackingPolicy.model_validate(yaml.safe_load(cm["data"]["policy.yaml"]))
    assert policy.preemption is False
    assert policy.solver.time_limit_seconds == 12
    assert policy.solver.workers == 4


def test_one_replica_without_leader_election(k8s_bin: Path) -> None:
    objs = _render(k8s_bin, "operator.replicas=1,operator.leaderElection.enabled=false")
    op = _container(_one(objs, "Deployment", "wattpack-operator"))
    assert "--leader-elect" not in op["command"]
    # One replica under minAvailable 1 would block every drain of its node.
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]


def test_agent_can_be_left_out(k8s_bin: Path) -> None:
    objs = _render(k8s_bin, "agent.enabled=false")
    assert not [o for o in objs if o["metadata"]["name"].startswith("wattpack-agent")]
    assert _one(objs, "Deployment", "wattpack-operator")


def test_monitoring_objects_only_when_asked(k8s_bin: Path) -> None:
    kinds = {o["kind"] for o in _render(k8s_bin)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    objs = _render(
        k8s_bin,
        "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=kps",
        "metrics.prometheusRule.enabled=true",
    )
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2
    for sm in monitors:
        assert sm["metadata"]["labels"]["release"] == "kps"
        assert sm["spec"]["namespaceSelector"] == {"matchNames": [NS]}
        (svc,) = [
            s
            for s in services.values()
            if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert [e["port"] for e in sm["spec"]["endpoints"]] == [
            p["name"] for p in svc["spec"]["ports"]
        ]
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == NS


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("policy.tdpWats=700", "at '/policy': additional properties 'tdpWats' not allowed"),
        ("policy.solver.timeLimitSeconds=-1", "/policy/solver/timeLimitSeconds"),
        ("agent.nodeSelectr.pool=gpu", "additional properties 'nodeSelectr' not allowed"),
        ("operator.replicas=0", "/operator/replicas"),
        ("gpuModels[0].name=X", "/gpuModels/0"),
        (
            "operator.replicas=2,operator.leaderElection.enabled=false",
            "set operator.replicas to 1 or enable leader election",
        ),
        ("agent.stuckAfterSeconds=0", "/agent/stuckAfterSeconds"),
        (
            "policy.solver.timeLimitSeconds=300",
            "policy.solver.timeLimitSeconds (300) is not below operator.stuckAfterSeconds (300)",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_field(k8s_bin: Path, setting: str, says: str) -> None:
    out = _run(k8s_bin / "helm", "template", "wattpack", CHART, "--set", setting)
    assert out.returncode != 0
    assert says in out.stderr
    assert "goroutine" not in out.stderr


# --- against the real API server ----------------------------------------------------------


def _apply(cp: ControlPlane, text: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("apply", "--server-side", *flags, "-f", "-", check=False, stdin=text)


def test_template_applies_to_the_api_server(k8s_bin: Path, control_plane: ControlPlane) -> None:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    text = _template(k8s_bin)
    dry = _apply(cp, text, "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    assert "serverside-applied (server dry run)" in dry.stdout
    # The dry run wrote nothing.
    assert cp.kubectl("get", "crd", CRDS[0], check=False).returncode != 0
    real = _apply(cp, text)
    assert real.returncode == 0, real.stderr
    for crd in CRDS:
        cp.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/{crd}")
    names = _names(cp, "deployment,daemonset,configmap,service,poddisruptionbudget")
    assert {
        "deployment.apps/wattpack-operator",
        "daemonset.apps/wattpack-agent",
        "configmap/wattpack-config",
        "service/wattpack-operator-metrics",
        "service/wattpack-agent-metrics",
        "poddisruptionbudget.policy/wattpack-operator",
    } <= names
    # A PowerDomain is accepted by the CRD the chart installed, and its schema holds.
    _wait_served(cp, "powerdomains")
    pd = "apiVersion: wattpack.io/v1alpha1\nkind: PowerDomain\nmetadata: {name: facility}\n"
    ok = _apply(cp, pd + "spec: {budgetWatts: 1000000}\n")
    assert ok.returncode == 0, ok.stderr
    bad = _apply(cp, pd + "spec: {budgetWatts: 0}\n")
    assert bad.returncode != 0 and "budgetWatts" in bad.stderr


def test_template_with_its_namespace_applies_in_one_go(
    k8s_bin: Path, control_plane: ControlPlane
) -> None:
    # The GitOps path: no helm at apply time, no --create-namespace; the Namespace comes first.
    out = _apply(control_plane, _template(k8s_bin, "namespace.create=true", ns="gpu-sched"))
    assert out.returncode == 0, out.stderr
    dep = control_plane.kubectl(
        "-n", "gpu-sched", "get", "deployment", "wattpack-operator", "-o", "yaml"
    )
    command = _container(yaml.safe_load(dep.stdout))["command"]
    # The operator looks for its ConfigMap and Lease in the namespace it was installed into.
    assert _arg(command, "--namespace") == "gpu-sched"
    rb = control_plane.kubectl(
        "-n", "gpu-sched", "get", "rolebinding", "wattpack-operator", "-o", "yaml"
    )
    assert yaml.safe_load(rb.stdout)["subjects"][0]["namespace"] == "gpu-sched"


def test_monitoring_objects_apply_to_the_api_server(
    k8s_bin: Path, control_plane: ControlPlane
) -> None:
    cp = control_plane
    # prometheus-operator's CRDs, made by controller-gen from its API types (k8sbin/build.sh).
    for kind in ("servicemonitors", "prometheusrules"):
        crd = k8s_bin / "monitoring-crds" / f"monitoring.coreos.com_{kind}.yaml"
        cp.kubectl("apply", "--server-side", "-f", str(crd))
        cp.kubectl(
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            f"crd/{kind}.monitoring.coreos.com",
        )
    _wait_served(cp, "servicemonitors,prometheusrules")
    cp.kubectl("create", "namespace", NS)
    text = _template(
        k8s_bin,
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
        "metrics.serviceMonitor.labels.release=kps",
    )
    dry = _apply(cp, text, "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    real = _apply(cp, text)
    assert real.returncode == 0, real.stderr
    assert _names(cp, "servicemonitor,prometheusrule") == {
        "servicemonitor.monitoring.coreos.com/wattpack-operator",
        "servicemonitor.monitoring.coreos.com/wattpack-agent",
        "prometheusrule.monitoring.coreos.com/wattpack",
    }
    # The schema is there and strict: a field the ServiceMonitor does not have is refused.
    (sm,) = [
        o
        for o in _objects(text)
        if o["metadata"]["name"] == "wattpack-agent" and o["kind"] == "ServiceMonitor"
    ]
    sm["spec"]["endpoints"][0]["portt"] = "metrics"
    bad = _apply(cp, yaml.safe_dump(sm), "--dry-run=server")
    assert bad.returncode != 0 and "portt" in bad.stderr


def _names(cp: ControlPlane, what: str) -> set[str]:
    out = cp.kubectl("-n", NS, "get", what, "-o", "name")
    return set(out.stdout.split())


def _wait_served(cp: ControlPlane, resources: str) -> None:
    """Until kubectl finds the resources: an established CRD reaches the API server's discovery
    a moment later, and kubectl maps kinds through discovery."""
    wait_until(
        lambda: cp.kubectl("get", resources, "-A", check=False).returncode == 0,
        60,
        f"{resources} in discovery",
    )
