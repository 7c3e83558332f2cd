"""Which API objects wattpack reads, and reading them once (export) or keeping them (operator)."""

from __future__ import annotations

from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from operators.kube.cache import Lister, list_all
from operators.kube.config import read_config
from operators.kube.convert import ClusterObjects, Conversion, convert
from operators.timestamps import rfc3339
from scheduler.errors import UserError
from scheduler.model import GpuModel, PackingPolicy

GROUP, VERSION = "wattpack.io", "v1alpha1"
NAMESPACE = "wattpack-system"
CONFIG_MAP = "wattpack-config"


def listers(api: client.ApiClient, namespace: str, config_map: str) -> dict[str, Lister]:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    return {
        **_dra_listers(api),
        "nodes": core.list_node,
        "pods": core.list_pod_for_all_namespaces,
        "namespaces": core.list_namespace,  # affinity terms may select namespaces by label
        "pdbs": client.PolicyV1Api(api).list_pod_disruption_budget_for_all_namespaces,
        "replicasets": client.AppsV1Api(api).list_replica_set_for_all_namespaces,
        "deployments": client.AppsV1Api(api).list_deployment_for_all_namespaces,
        "autoscalers": client.AutoscalingV2Api(
            api
        ).list_horizontal_pod_autoscaler_for_all_namespaces,
        "gpunodes": partial(custom.list_cluster_custom_object, GROUP, VERSION, "gpunodes"),
        "powerdomains": partial(custom.list_cluster_custom_object, GROUP, VERSION, "powerdomains"),
        "config": partial(
            core.list_namespaced_config_map,
            namespace,
            field_selector=f"metadata.name={config_map}",
        ),
    }


def _dra_listers(api: client.ApiClient) -> dict[str, Lister]:
    """ResourceSlices and ResourceClaims, where the server has resource.k8s.io/v1 (Kubernetes
    1.34 on): elsewhere no pod's GPUs come through DRA, and a cache of a resource the server
    does not serve would never sync."""
    res = client.ResourceV1Api(api)
    try:
        res.get_api_resources(_preload_content=False).release_conn()
    except ApiException as e:
        if e.status == 404:
            return {}
        raise UserError(
            f"reading resource.k8s.io/v1 failed: {e.status} {e.reason}",
            "check the kubeconfig's access (manifests/rbac.yaml)",
        ) from None
    except HTTPError as e:
        raise UserError(
            f"cannot reach the API server ({e})", "check --kubeconfig and the network"
        ) from None
    return {
        "resourceslices": res.list_resource_slice,
        "resourceclaims": res.list_resource_claim_for_all_namespaces,
    }


def config_of(
    items: dict[str, list[dict[str, Any]]], namespace: str, config_map: str
) -> tuple[PackingPolicy, list[GpuModel]]:
    cms = items.get("config") or []
    return read_config(cms[0] if cms else None, f"ConfigMap {namespace}/{config_map}")


def snapshot_of(
    items: dict[str, list[dict[str, Any]]], models: list[GpuModel], name: str
) -> Conversion:
    """Objects by kind (as `listers` names them) to the snapshot."""
    objs = ClusterObjects(
        nodes=items["nodes"],
        pods=items["pods"],
        gpunodes=items.get("gpunodes", []),
        powerdomains=items.get("powerdomains", []),
        gpu_models=models,
        pdbs=items.get("pdbs", []),
        replicasets=items.get("replicasets", []),
        deployments=items.get("deployments", []),
        autoscalers=items.get("autoscalers", []),
        namespaces=items.get("namespaces", []),
        resourceslices=items.get("resourceslices", []),
        resourceclaims=items.get("resourceclaims", []),
    )
    return convert(objs, name=name, exported_at=rfc3339())


def read_once(
    api: client.ApiClient,
    namespace: str = NAMESPACE,
    config_map: str = CONFIG_MAP,
    name: str = "cluster",
) -> tuple[Conversion, PackingPolicy]:
    """List everything once: what `wattpack export` writes."""
    items = {}
    for kind, lister in listers(api, namespace, config_map).items():
        try:
            items[kind], _ = list_all(lister)
        except ApiException as e:
            if e.status == 404 and kind in ("gpunodes", "powerdomains"):
                raise UserError(
                    f"the {kind}.{GROUP} CRD is not installed",
                    "kubectl apply --server-side -k manifests/",
                ) from None
            raise UserError(
                f"listing {kind} failed: {e.status} {e.reason}", "check the kubeconfig's access"
            ) from None
        except HTTPError as e:
            raise UserError(
                f"cannot reach the API server ({e})", "check --kubeconfig and the network"
            ) from None
    policy, models = config_of(items, namespace, config_map)
    return snapshot_of(items, models, name), policy
