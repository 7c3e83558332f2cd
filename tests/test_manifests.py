"""Offline checks of manifests/: they parse, the kustomization is complete, the CRDs are
structural, the configuration validates against the planner's own models, RBAC is sane, and
the Grafana dashboard only queries metrics wattpack (or its agent) exports. No cluster needed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scheduler.model import GpuModel, PackingPolicy

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
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
        if path != KUSTOMIZATION:
            assert d.get("metadata", {}).get("name"), f"{_rel(path)}: {d['kind']} has no name"


def test_kustomization_lists_every_manifest() -> None:
    kust = _docs(KUSTOMIZATION)[0]
    assert kust["kind"] == "Kustomization"
    assert "namespace" not in kust, "a global namespace would be forced onto cluster objects"
    listed = kust["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for name in listed:
        assert (MANIFESTS / name).is_file(), f"kustomization lists missing {name}"
    expected = {_rel(p) for p in YAML_FILES if p != KUSTOMIZATION and "grafana" not in p.parts}
    assert set(listed) == expected
    # CRDs come first, so a plain `kubectl apply -f` of the list in order also works.
    crds = [i for i, name in enumerate(listed) if name.startswith("crds/")]
    assert crds == list(range(len(crds)))


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
    assert c["livenessProbe"]["httpGet"]["port"] in {p["name"] for p in c["ports"]}
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
    assert metric_names("label_values(DCGM_FI_DEV_POWER_USAGE, Hostname)") == {
        "DCGM_FI_DEV_POWER_USAGE",
        "Hostname",
    }


def _queries(dash: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(panel expressions, template-variable queries)."""
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if "expr" in t)
            walk(p.get("panels", []))

    walk(dash["panels"])
    variables = []
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            variables.append(q["query"] if isinstance(q, dict) else q)
    return exprs, variables


def test_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] == 39
    assert dash["uid"] and dash["title"]
    (ds,) = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds["query"] == "prometheus"
    ds_ref = "${" + ds["name"] + "}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    exprs, variables = _queries(dash)
    assert exprs
    names = set()
    for e in exprs:
        assert e.count("(") == e.count(")"), f"unbalanced: {e}"
        names |= metric_names(e)
    for q in variables:
        m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q)
        assert m, f"unexpected variable query {q}"
        names.add(m.group(1))
    bad = {n for n in names if not (n.startswith(("wattpack_", "DCGM_FI_")) or n == "up")}
    assert not bad, f"dashboard queries unknown metrics {bad}"
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
        "DCGM_FI_DEV_POWER_USAGE",
        "wattpack_gpu_health",
    }
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == ds_ref, f"panel {p['title']} ignores the variable"
