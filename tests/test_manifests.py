"""Offline checks of manifests/: they parse, the kustomizations are complete, the CRDs are
structural, the configuration validates against the planner's own models, RBAC is sane, the
probes and monitors point at what the processes serve, and the Grafana dashboard and the alert
rules only query metrics and labels the operator's and the agent's real registries export;
promtool evaluates the rules and the dashboard's power queries. No cluster needed."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from promtool import check_rules, run_rule_tests

from scheduler.model import GpuModel, PackingPolicy

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
MONITORING = MANIFESTS / "monitoring"
DASHBOARD = MANIFESTS / "grafana" / "wattpack-dashboard.json"
NAMESPACE = "wattpack-system"

YAML_FILES = sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml"))
CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
}
STANDARD_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def _rel(p: Path) -> str:
    return p.relative_to(MANIFESTS).as_posix()


def _docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _resources() -> list[dict[str, Any]]:
    """Every object the kustomization deploys."""
    kust = _docs(KUSTOMIZATION)[0]
    return [d for name in kust["resources"] for d in _docs(MANIFESTS / name)]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _resources() if d["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}"
    return found[0]


def test_manifests_exist() -> None:
    assert KUSTOMIZATION.is_file()
    assert DASHBOARD.is_file()
    assert len(YAML_FILES) >= 9


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_every_yaml_document_parses(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{_rel(path)} holds no document"
    for d in docs:
        assert isinstance(d, dict), f"{_rel(path)}: a document is not a mapping"
        assert d.get("apiVersion"), f"{_rel(path)}: a document has no apiVersion"
        assert d.get("kind"), f"{_rel(path)}: a document has no kind"
        if path.name != "kustomization.yaml":
            assert d.get("metadata", {}).get("name"), f"{_rel(path)}: {d['kind']} has no name"


def test_kustomization_lists_every_manifest() -> None:
    kust = _docs(KUSTOMIZATION)[0]
    assert kust["kind"] == "Kustomization"
    assert "namespace" not in kust, "a global namespace would be forced onto cluster objects"
    listed = kust["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for name in listed:
        assert (MANIFESTS / name).is_file(), f"kustomization lists missing {name}"
    expected = {
        _rel(p)
        for p in YAML_FILES
        if p != KUSTOMIZATION and not {"grafana", "monitoring"} & set(p.parts)
    }
    assert set(listed) == expected
    # CRDs come first, so a plain `kubectl apply -f` of the list in order also works.
    crds = [i for i, name in enumerate(listed) if name.startswith("crds/")]
    assert crds == list(range(len(crds)))


def _monitoring() -> list[dict[str, Any]]:
    """The Prometheus Operator's objects, in a kustomization of their own (their kinds are its
    CRDs: a cluster without it would refuse the main one)."""
    kust = _docs(MONITORING / "kustomization.yaml")[0]
    files = sorted(p.name for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kust["resources"]) == files
    return [d for name in kust["resources"] for d in _docs(MONITORING / name)]


def test_monitoring_kustomization_is_complete_and_namespaced() -> None:
    kinds = sorted(d["kind"] for d in _monitoring())
    assert kinds == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    for d in _monitoring():
        assert d["apiVersion"] == "monitoring.coreos.com/v1"
        assert d["metadata"]["namespace"] == NAMESPACE


def test_namespaced_objects_live_in_wattpack_system() -> None:
    for d in _resources():
        ns = d["metadata"].get("namespace")
        if d["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"cluster-scoped {d['kind']} {d['metadata']['name']} has a namespace"
        else:
            assert ns == NAMESPACE, f"{d['kind']} {d['metadata']['name']} is in {ns!r}"
    assert _one("Namespace", NAMESPACE)


# --- CRDs -------------------------------------------------------------------------------------


def _untyped(schema: Any, where: str) -> list[str]:
    """Paths of schema objects with no `type` (structural schemas need one everywhere)."""
    if not isinstance(schema, dict):
        return [f"{where} is not a mapping"]
    out = []
    if "type" not in schema and not (
        schema.get("x-kubernetes-int-or-string")
        or schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out.append(where or "<root>")
    for name, sub in schema.get("properties", {}).items():
        out += _untyped(sub, f"{where}.{name}")
    if "items" in schema:
        out += _untyped(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _untyped(schema["additionalProperties"], f"{where}{{}}")
    return out


def test_untyped_finds_a_missing_type() -> None:
    bad = {"type": "object", "properties": {"a": {"type": "array", "items": {"minimum": 1}}}}
    assert _untyped(bad, "") == [".a[]"]


def _crds() -> list[dict[str, Any]]:
    crds = _of_kind("CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} >= {
        "gpunodes.wattpack.io",
        "powerdomains.wattpack.io",
    }
    return crds


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("crd", _crds(), ids=lambda c: c["metadata"]["name"])
def test_crd_is_structural(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    assert spec["group"] == "wattpack.io"
    assert spec["scope"] == "Cluster"
    assert sum(v["storage"] for v in spec["versions"]) == 1
    schema = _schema(crd)
    assert _untyped(schema, "") == []
    jsonschema.Draft4Validator.check_schema(schema)
    for version in spec["versions"]:
        for col in version.get("additionalPrinterColumns", []):
            path = col["jsonPath"].lstrip(".").split(".")
            if path[0] == "metadata":
                continue
            node = schema
            for part in path:
                assert part in node.get("properties", {}), (
                    f"printer column {col['name']}: no {part}"
                )
                node = node["properties"][part]
            assert node["type"] == col["type"] or col["type"] == "date"


def test_powerdomain_schema() -> None:
    crd = _one("CustomResourceDefinition", "powerdomains.wattpack.io")
    assert crd["spec"]["names"]["kind"] == "PowerDomain"
    assert "pd" in crd["spec"]["names"]["shortNames"]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    schema = _schema(crd)
    validator = jsonschema.Draft4Validator(schema)

    def ok(obj: dict[str, Any]) -> bool:
        return validator.is_valid(obj)

    assert ok({"spec": {}})
    assert ok({"spec": {"parent": "row-a", "budgetWatts": 40000}})
    assert ok({"status": {"powerWatts": 0, "headroomWatts": -300}})
    assert not ok({"spec": {"budgetWatts": 0}})
    assert not ok({"spec": {"budgetWatts": "40kW"}})
    assert not ok({"spec": {"parent": 3}})
    assert not ok({"status": {"powerWatts": -1}})
    for field in ("parent", "budgetWatts"):
        assert schema["properties"]["spec"]["properties"][field].get("description")
    for field in ("powerWatts", "observedAt", "headroomWatts"):
        assert schema["properties"]["status"]["properties"][field].get("description")
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Parent", "Budget W", "Power W", "Age"]


# --- configuration ----------------------------------------------------------------------------


def _config() -> dict[str, str]:
    return _one("ConfigMap", "wattpack-config")["data"]


def test_policy_validates() -> None:
    policy = PackingPolicy.model_validate(yaml.safe_load(_config()["policy.yaml"]))
    assert policy.solver.time_limit_seconds == 5


def test_gpu_models_validate() -> None:
    raw = yaml.safe_load(_config()["gpu-models.yaml"])
    assert isinstance(raw, list) and raw
    models = [GpuModel.model_validate(m) for m in raw]
    names = [m.name for m in models]
    assert len(names) == len(set(names)), "duplicate GPU model names"
    assert {"H100-SXM", "H200-SXM", "A100-SXM4-80GB", "L40S"} <= set(names)
    assert all(m.memory_mi_b > 0 for m in models)


def test_bad_config_is_rejected() -> None:
    # The two checks above can fail: the models reject what the ConfigMap must not hold.
    with pytest.raises(ValueError):
        PackingPolicy.model_validate({"solver": {"timeLimitSeconds": 0}})
    with pytest.raises(ValueError):
        PackingPolicy.model_validate({"solverr": {}})
    with pytest.raises(ValueError):
        GpuModel.model_validate({"name": "X", "tdpWatts": 100, "idleWatts": 200})


# --- RBAC -------------------------------------------------------------------------------------


def _roles() -> list[dict[str, Any]]:
    return _of_kind("ClusterRole") + _of_kind("Role")


@pytest.mark.parametrize("role", _roles(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_rbac_rules_are_least_privilege(role: dict[str, Any]) -> None:
    assert role["rules"]
    for rule in role["rules"]:
        verbs = set(rule["verbs"])
        assert verbs and verbs <= STANDARD_VERBS, f"non-standard verbs {verbs - STANDARD_VERBS}"
        assert "*" not in rule.get("apiGroups", [])
        assert "*" not in rule.get("resources", [])
        assert "delete" not in verbs and "deletecollection" not in verbs


def _allows(role: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
        for r in role["rules"]
    )


def test_operator_and_agent_can_do_their_jobs() -> None:
    op = _one("ClusterRole", "wattpack-operator")
    for group, resource, verb in [
        ("", "pods", "watch"),
        ("", "pods", "patch"),
        ("", "pods/binding", "create"),
        ("", "pods/status", "patch"),
        ("", "pods/eviction", "create"),
        ("policy", "poddisruptionbudgets", "list"),
        ("", "nodes", "list"),
        ("", "events", "create"),
        ("events.k8s.io", "events", "create"),
        ("wattpack.io", "gpunodes", "patch"),
        ("wattpack.io", "powerdomains", "watch"),
        ("wattpack.io", "powerdomains/status", "patch"),
    ]:
        assert _allows(op, group, resource, verb), f"operator cannot {verb} {resource}"
    assert not _allows(op, "", "pods", "delete")
    assert _allows(op, "policy", "poddisruptionbudgets", "watch")
    assert not _allows(op, "wattpack.io", "powerdomains", "patch")
    local = _one("Role", "wattpack-operator")
    assert _allows(local, "", "configmaps", "watch")
    assert _allows(local, "coordination.k8s.io", "leases", "update")
    agent = _one("ClusterRole", "wattpack-agent")
    assert _allows(agent, "wattpack.io", "gpunodes", "create")
    assert _allows(agent, "wattpack.io", "gpunodes/status", "patch")
    assert not _allows(agent, "", "pods", "list")


def test_bindings_reference_existing_roles_and_accounts() -> None:
    accounts = {
        (a["metadata"]["namespace"], a["metadata"]["name"]) for a in _of_kind("ServiceAccount")
    }
    bindings = _of_kind("ClusterRoleBinding") + _of_kind("RoleBinding")
    assert bindings
    for b in bindings:
        role_kind = b["roleRef"]["kind"]
        assert role_kind == ("Role" if b["kind"] == "RoleBinding" else "ClusterRole")
        role = _one(role_kind, b["roleRef"]["name"])
        if role_kind == "Role":
            assert role["metadata"]["namespace"] == b["metadata"]["namespace"]
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount"
            assert (s["namespace"], s["name"]) in accounts
    bound = {(s["namespace"], s["name"]) for b in bindings for s in b["subjects"]}
    assert bound == accounts, "a ServiceAccount has no binding"


# --- workloads --------------------------------------------------------------------------------


def _workloads() -> list[dict[str, Any]]:
    return [_one("Deployment", "wattpack-operator"), _one("DaemonSet", "wattpack-agent")]


@pytest.mark.parametrize("workload", _workloads(), ids=lambda w: w["kind"])
def test_workload_references_existing_service_account(workload: dict[str, Any]) -> None:
    accounts = {
        (a["metadata"]["namespace"], a["metadata"]["name"]) for a in _of_kind("ServiceAccount")
    }
    pod = workload["spec"]["template"]["spec"]
    assert (workload["metadata"]["namespace"], pod["serviceAccountName"]) in accounts
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/wattpack/wattpack:0.1.0"
    assert container["command"][0] == "wattpack"
    assert all(isinstance(a, str) for a in container["command"])
    mounts = {m["name"] for m in container.get("volumeMounts", [])}
    assert mounts <= {v["name"] for v in pod.get("volumes", [])}


def test_operator_deployment() -> None:
    dep = _one("Deployment", "wattpack-operator")
    assert dep["spec"]["replicas"] == 2
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--leader-elect" in c["command"]
    assert c["command"][c["command"].index("--config-map") + 1] == "wattpack-config"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    pdb = _one("PodDisruptionBudget", "wattpack-operator")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_agent_daemonset() -> None:
    ds = _one("DaemonSet", "wattpack-agent")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    caps = c["securityContext"]["capabilities"]
    assert caps == {"add": ["SYS_ADMIN"], "drop": ["ALL"]}
    # The API server rejects allowPrivilegeEscalation: false together with an added SYS_ADMIN.
    assert c["securityContext"].get("allowPrivilegeEscalation") is not False
    (sock,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/var/lib/kubelet/pod-resources"]
    assert sock["readOnly"] is True
    (vol,) = [v for v in pod["volumes"] if v["name"] == sock["name"]]
    assert vol["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"


@pytest.mark.parametrize("workload", _workloads(), ids=lambda w: w["kind"])
def test_probes_ask_the_health_endpoints_on_the_metrics_port(workload: dict[str, Any]) -> None:
    """/metrics answered any path once: a probe on it never saw a hung loop."""
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    (port,) = c["ports"]
    assert port["containerPort"] == int(c["command"][c["command"].index("--metrics-port") + 1])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": port["name"]}, probe
    # Restarted after a minute of failing probes, well after a round or cycle was stuck.
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60


def test_service_monitors_scrape_the_metrics_services() -> None:
    services = [_one("Service", n) for n in ("wattpack-operator-metrics", "wattpack-agent-metrics")]
    monitors = [d for d in _monitoring() if d["kind"] == "ServiceMonitor"]
    for svc in services:
        labels = svc["metadata"]["labels"]
        (mon,) = [
            m for m in monitors if m["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert mon["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = mon["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    (agent,) = [m for m in monitors if m["metadata"]["name"] == "wattpack-agent"]
    # wattpack_gpu_pod_info's namespace and pod are the workload's, not the agent pod's.
    assert agent["spec"]["endpoints"][0]["honorLabels"] is True
    # `up` gets the agent's node, which WattpackAgentStale names when the agent does not answer.
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "node",
    } in agent["spec"]["endpoints"][0]["relabelings"]


def test_services_select_pods_and_ports() -> None:
    pods = {w["metadata"]["name"]: w["spec"]["template"] for w in _workloads()}
    for svc_name, port in [("wattpack-operator-metrics", 9090), ("wattpack-agent-metrics", 9400)]:
        svc = _one("Service", svc_name)
        assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        selected = [
            t
            for t in pods.values()
            if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"{svc_name} selects {len(selected)} workloads"
        (sp,) = svc["spec"]["ports"]
        assert sp["port"] == port
        container_ports = {
            p["name"]: p["containerPort"] for p in selected[0]["spec"]["containers"][0]["ports"]
        }
        assert container_ports[sp["targetPort"]] == port


# --- Grafana dashboard ------------------------------------------------------------------------

_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, label names and keywords out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = _CLAUSE.sub(" ", expr)
    expr = re.sub(r"\$\w+", " ", expr)  # Grafana variables outside matchers
    expr = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b", " ", expr)
    names = set()
    for m in _IDENT.finditer(expr):
        if expr[m.end() :].lstrip().startswith("("):
            continue  # a function (sum, rate, histogram_quantile, label_values ...)
        if m.group().lower() in _PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(wattpack_solve_seconds_bucket{a="b"}'
        "[$__rate_interval]))) / on (domain) group_left wattpack_x or vector(0)"
    )
    assert metric_names(expr) == {"wattpack_solve_seconds_bucket", "wattpack_x"}
    assert metric_names("label_values(wattpack_gpu_power_watts, node)") == {
        "wattpack_gpu_power_watts",
        "node",
    }


_MATCHERS = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_KEYS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_CLAUSE_LABELS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
# Labels Prometheus adds to every scraped series (the Prometheus Operator's target labels).
TARGET_LABELS = {"instance", "job", "namespace", "pod", "service", "endpoint", "container"}


def labels_used(expr: str) -> tuple[list[tuple[str, str]], set[str]]:
    """(metric, label) of each label matcher, and the labels of by/on/... clauses."""
    matched = [(m.group(1), k) for m in _MATCHERS.finditer(expr) for k in _KEYS.findall(m.group(2))]
    clauses = {
        label.strip()
        for m in _CLAUSE_LABELS.finditer(expr)
        for label in m.group(1).split(",")
        if label.strip()
    }
    return matched, clauses


def test_labels_used_parser() -> None:
    expr = 'sum by (node) (x{a="1", b=~"$v"}) and on (node, gpu) y{c!=""}'
    assert labels_used(expr) == ([("x", "a"), ("x", "b"), ("y", "c")], {"node", "gpu"})


@functools.cache
def exported() -> dict[str, frozenset[str]]:
    """Every sample name the operator's and the agent's real registries export, with its
    label names: the operator's metrics as its command builds them, the agent's from a round
    of the scripted node with a pod, an XID and throttling on its GPUs."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    from operators.agent.metrics import RoundCollector
    from operators.agent.rounds import Agent
    from operators.endpoints import runtime_registry
    from operators.nvml.fake import FakeBackend, load_scenario
    from operators.operator.metrics import OperatorMetrics

    out: dict[str, set[str]] = {}
    operator = OperatorMetrics(runtime_registry())
    # Labelled metrics have no sample until a value is set: their label names come from the
    # metric objects themselves.
    declared = {
        m._name: set(m._labelnames)
        for m in vars(operator).values()
        if isinstance(m, MetricWrapperBase)
    }
    scenario = ROOT / "examples" / "nvml-scenario.yaml"
    fake = FakeBackend(load_scenario(yaml.safe_load(scenario.read_text()), str(scenario)))
    agent = RoundCollector("node-a")
    uuid = fake.scenario.gpus[0].uuid
    agent.observe(
        Agent(fake, PackingPolicy().health, "node-a").round(40.0, {0: [79]}, pods={uuid: ["ml/p"]})
    )
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    agent_registry = CollectorRegistry()
    agent_registry.register(agent)
    for registry in (operator.registry, agent_registry):
        for family in registry.collect():
            for suffix in suffixes.get(family.type, [""]):
                out.setdefault(family.name + suffix, set()).update(declared.get(family.name, set()))
            for sample in family.samples:
                out.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in out.items()}


def test_exported_names_are_the_real_ones() -> None:
    names = exported()
    assert names["wattpack_moves_total"] == {"reason"}
    assert names["wattpack_power_domain_info"] == {"domain", "parent", "leaf"}
    assert {"node", "gpu", "uuid", "model", "namespace", "pod"} <= names["wattpack_gpu_pod_info"]
    assert "wattpack_gpu_energy_joules_total" in names and "process_cpu_seconds_total" in names
    assert not [n for n in names if n.startswith("DCGM_FI_")]  # only with --dcgm-names


def check_queries(exprs: list[str], legends: list[str] = ()) -> None:  # type: ignore[assignment]
    """Every metric and label the expressions name is exported (Grafana's variables aside)."""
    names = exported()
    for e in exprs:
        assert e.count("(") == e.count(")"), f"unbalanced: {e}"
        read = metric_names(e)
        unknown = read - set(names) - {"up"}
        assert not unknown, f"{e}: no process exports {unknown}"
        matched, clauses = labels_used(e)
        for metric, label in matched:
            assert label in names.get(metric, set()) | TARGET_LABELS, (
                f"{e}: {metric} has no {label}"
            )
        known = set().union(*(names.get(n, set()) for n in read)) | TARGET_LABELS
        assert clauses <= known, f"{e}: no label {clauses - known} on {read}"
    for legend in legends:
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            assert label in set().union(*names.values()) | TARGET_LABELS, legend


def _queries(dash: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(panel expressions, their legends, template-variable queries)."""
    exprs, legends = [], []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                if "expr" in t:
                    exprs.append(t["expr"])
                    legends.append(t.get("legendFormat", ""))
            walk(p.get("panels", []))

    walk(dash["panels"])
    variables = []
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            variables.append(q["query"] if isinstance(q, dict) else q)
    return exprs, legends, variables


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_dashboard() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] == 39
    assert dash["uid"] and dash["title"]
    (ds,) = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds["query"] == "prometheus"
    ds_ref = "${" + ds["name"] + "}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    exprs, legends, variables = _queries(dash)
    assert exprs
    check_queries(exprs, legends)
    names = set().union(*(metric_names(e) for e in exprs))
    for q in variables:
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
        assert m, f"unexpected variable query {q}"
        assert m.group(2) in exported()[m.group(1)], q
        names.add(m.group(1))
    base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert base >= {
        "wattpack_cycle_seconds",
        "wattpack_solve_seconds",
        "wattpack_plan_gap",
        "wattpack_gpu_allocation",
        "wattpack_power_watts",
        "wattpack_power_budget_watts",
        "wattpack_pending_pods",
        "wattpack_bindings_total",
        "wattpack_unplaced_total",
        "wattpack_gpu_power_watts",
        "wattpack_gpu_health",
        # evictions, moves, errors and leadership
        "wattpack_evictions_total",
        "wattpack_moves_total",
        "wattpack_cycle_errors_total",
        "wattpack_leader",
    }
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == ds_ref, f"panel {p['title']} ignores the variable"


def _grafana_free(expr: str) -> str:
    """The expression as Prometheus gets it with every variable at "All"."""
    return expr.replace("$__rate_interval", "5m").replace("$node", ".*").replace("$domain", ".*")


def test_measured_vs_planned_power_counts_each_watt_once() -> None:
    """A facility of 3 kW with rows and a rack below it: the planned line is 3 kW, not the sum
    of every level (it showed twice the real power and more); measured is the GPUs' sum."""
    (panel,) = [p for p in _dashboard()["panels"] if p["title"] == "Measured vs planned power"]
    measured, planned = (_grafana_free(t["expr"]) for t in panel["targets"])
    domains = {  # name: (parent, planned watts)
        "facility": ("", 3000), "row-a": ("facility", 2000), "row-b": ("facility", 1000),
        "rack-a1": ("row-a", 2000),
    }  # fmt: skip
    parents = {parent for parent, _ in domains.values()}
    series = [
        {"series": f'wattpack_power_watts{{domain="{d}"}}', "values": f"{w}x10"}
        for d, (_, w) in domains.items()
    ] + [
        {
            "series": f'wattpack_power_domain_info{{domain="{d}",parent="{parent}",'
            f'leaf="{str(d not in parents).lower()}"}}',
            "values": "1x10",
        }
        for d, (parent, _) in domains.items()
    ] + [
        {"series": f'wattpack_gpu_power_watts{{node="n{i}",gpu="0"}}', "values": f"{w}x10"}
        for i, w in enumerate((1200, 1500))
    ]  # fmt: skip
    run_rule_tests([], [{
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [
            {"expr": planned, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 3000}]},
            {"expr": measured, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 2700}]},
        ],
    }])  # fmt: skip


# --- alerts -----------------------------------------------------------------------------------
# The one rule set: the Helm chart renders a copy of this file (tests/e2e/test_helm_chart.py
# keeps the copy equal), so these tests are the chart's too.


def _rule_groups() -> list[dict[str, Any]]:
    (rule,) = [d for d in _monitoring() if d["kind"] == "PrometheusRule"]
    return list(rule["spec"]["groups"])


def _rules() -> list[dict[str, Any]]:
    return [r for g in _rule_groups() for r in g["rules"]]


ALERTS = {
    "WattpackBudgetHeadroomLow",
    "WattpackCycleErrors",
    "WattpackDegradedGpuInUse",
    "WattpackPlanGapHigh",
    "WattpackNoSingleLeader",
    "WattpackAgentStale",
}


def test_alerts_query_exported_metrics_and_say_what_to_do() -> None:
    rules = _rules()
    assert sorted(r["alert"] for r in rules) == sorted(ALERTS)
    check_queries([r["expr"] for r in rules])
    for r in rules:
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        for text in r["annotations"].values():  # every label an annotation shows is there
            for label in re.findall(r"\$labels\.(\w+)", text):
                known = set().union(*(exported().get(n, set()) for n in metric_names(r["expr"])))
                assert label in known | TARGET_LABELS, f"{r['alert']}: no label {label}"
    # The annotations' templates parse (the rule tests below leave them out).
    check_rules(_rule_groups())


def _alerting(name: str, at: str, labels: list[dict[str, str]]) -> dict[str, Any]:
    return {"alertname": name, "eval_time": at,
            "exp_alerts": [{"exp_labels": {**x, "alertname": name}} for x in labels]}  # fmt: skip


def _series(name: str, base: dict[str, str], **labels: str) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in sorted({**base, **labels}.items()))
    return f"{name}{{{body}}}"


def _alert_cases() -> list[dict[str, Any]]:
    """promtool test cases: every alert fires where it should, and not before its `for` nor
    where a near miss is."""
    gpu = {"uuid": "GPU-1", "model": "H100"}
    up = {"service": "wattpack-agent-metrics"}
    series = [
        # The leader op-0 plans rack-a at 980 of 1000 W (2% left), rack-b at 500 of 1000 W.
        *(
            {"series": _series(name, {"pod": "op-0"}, domain=d), "values": f"{v}x40"}
            for d, planned in (("rack-a", 980), ("rack-b", 500))
            for name, v in (
                ("wattpack_power_budget_watts", 1000),
                ("wattpack_power_watts", planned),
            )
        ),
        # On n1, GPU 0 is degraded with a pod on it, GPU 1 degraded and empty, GPU 2 healthy
        # with a pod. On n2, GPU 1 holds a pod: a join on the GPU alone would flag n1's GPU 1.
        *(
            {"series": _series("wattpack_gpu_health", gpu, node="n1", gpu=i, state="degraded"),
             "values": v}
            for i, v in (("0", "1x40"), ("1", "1x40"), ("2", "0x40"))
        ),
        *(
            {"series": _series("wattpack_gpu_pod_info", gpu, node=n, gpu=i, namespace="ml", pod=p),
             "values": "1x40"}
            for n, i, p in (("n1", "0", "a"), ("n1", "2", "b"), ("n2", "1", "c"))
        ),
        # op-0's cycles fail every minute; op-1 failed once, at 3 minutes, and then no more.
        {"series": 'wattpack_cycle_errors_total{pod="op-0"}', "values": "0+1x40"},
        {"series": 'wattpack_cycle_errors_total{pod="op-1"}', "values": "0 0 0 1x37"},
        # The plans are 5% from the bound for 20 minutes, then 20%.
        {"series": "wattpack_plan_gap", "values": "0.05x20 0.2x40"},
        # op-0 leads until 10 m; nobody from 10 to 20 m; op-0 again; both from 30 to 40 m.
        {"series": 'wattpack_leader{pod="op-0"}', "values": "1x9 0x9 1x29"},
        {"series": 'wattpack_leader{pod="op-1"}', "values": "0x9 0x9 0x9 1x9"},
        # Agents read 6 rounds a minute. n1's keeps on; n2's stops at 10 m (a round hangs);
        # n4's restarts at 10 m and reads none; n3's does not answer its scrapes.
        {"series": 'wattpack_agent_rounds_total{node="n1"}', "values": "0+6x40"},
        {"series": 'wattpack_agent_rounds_total{node="n2"}', "values": "0+6x10 60x30"},
        {"series": 'wattpack_agent_rounds_total{node="n4"}', "values": "0+6x10 0x30"},
        {"series": _series("up", up, node="n1"), "values": "1x40"},
        {"series": _series("up", up, node="n3"), "values": "0x40"},
    ]  # fmt: skip
    warning, critical = {"severity": "warning"}, {"severity": "critical"}
    degraded = {**gpu, "node": "n1", "gpu": "0", "state": "degraded", **warning}
    return [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                _alerting("WattpackBudgetHeadroomLow", "10m", []),  # not for 15 minutes yet
                _alerting("WattpackBudgetHeadroomLow", "20m", [{"domain": "rack-a", **warning}]),
                _alerting("WattpackDegradedGpuInUse", "10m", []),
                _alerting("WattpackDegradedGpuInUse", "20m", [degraded]),
                _alerting("WattpackCycleErrors", "10m", []),
                _alerting("WattpackCycleErrors", "25m", [{"pod": "op-0", **warning}]),
                _alerting("WattpackPlanGapHigh", "45m", []),  # 20% since 21 m, not 30 min
                _alerting("WattpackPlanGapHigh", "55m", [{"severity": "info"}]),
                _alerting("WattpackNoSingleLeader", "8m", []),
                _alerting("WattpackNoSingleLeader", "17m", [critical]),  # none leads
                _alerting("WattpackNoSingleLeader", "27m", []),
                _alerting("WattpackNoSingleLeader", "37m", [critical]),  # two lead
                _alerting("WattpackAgentStale", "4m", []),
                _alerting("WattpackAgentStale", "12m", [{**up, "node": "n3", **warning}]),
                _alerting(
                    "WattpackAgentStale",
                    "25m",
                    [
                        {"node": "n2", **warning},
                        {"node": "n4", **warning},
                        {**up, "node": "n3", **warning},
                    ],
                ),
            ],
        },
        {
            # No operator scraped at all: no leader either.
            "interval": "1m",
            "input_series": [{"series": "wattpack_plan_gap", "values": "0x10"}],
            "alert_rule_test": [_alerting("WattpackNoSingleLeader", "10m", [critical])],
        },
    ]


def test_alert_cases_cover_every_alert_firing_and_not() -> None:
    checks = [c for case in _alert_cases() for c in case["alert_rule_test"]]
    assert {c["alertname"] for c in checks if c["exp_alerts"]} == ALERTS
    assert {c["alertname"] for c in checks if not c["exp_alerts"]} == ALERTS


def test_alerts_fire_when_they_should_and_not_otherwise() -> None:
    """Prometheus's own engine on the rules (annotations aside: promtool would compare their
    text too, and check_rules has parsed it)."""
    groups = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in _rule_groups()
    ]
    run_rule_tests(groups, _alert_cases())


# --- the docs ---------------------------------------------------------------------------------

DOCS = [ROOT / "README.md", ROOT / "docs" / "operations.md"]
# A metric as the docs write it: `wattpack_x`, `wattpack_x{a,b}`, or a family `wattpack_gpu_*`.
_DOC_METRIC = re.compile(r"\b(wattpack_[a-z0-9_]*[a-z0-9_])(\*)?(?:\{([a-z_, ]+)\})?")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_exported_metrics_and_the_alerts_there_are(doc: Path) -> None:
    text = doc.read_text()
    names = exported()
    for name, family, labels in _DOC_METRIC.findall(text):
        if family:
            assert [n for n in names if n.startswith(name)], f"{doc.name}: no {name}*"
            continue
        samples = {name, f"{name}_bucket"} & set(names)  # a histogram goes by its base name
        assert samples, f"{doc.name}: no process exports {name}"
        for label in filter(None, (x.strip() for x in labels.split(","))):
            assert any(label in names[n] for n in samples), f"{doc.name}: {name} has no {label}"
    assert set(re.findall(r"\bWattpack[A-Z]\w+", text)) <= ALERTS, doc.name


def test_operations_guide_lists_every_alert() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    table = re.findall(r"^\| `(Wattpack\w+)` \|", guide, re.M)
    assert sorted(table) == sorted(ALERTS)
