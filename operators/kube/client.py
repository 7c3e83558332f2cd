"""Connecting to the API server: a kubeconfig, or the pod's service account."""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from scheduler.errors import UserError

# A dozen watches, 16 binds in flight (operators.kube.apply.PARALLEL), the Event senders, the
# lease and status patches share one pool: urllib3's default of 4 connections would drop and
# reopen connections on every cycle.
_POOL = 48


def connect(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client for the given kubeconfig; without one, in-cluster config, else the default
    kubeconfig. It also becomes the library's default (its leader election builds its own
    API objects)."""
    cfg = client.Configuration()
    try:
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except ConfigException:
                config.load_kube_config(context=context, client_configuration=cfg)
        else:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
    except (ConfigException, OSError, TypeError, ValueError) as e:
        where = kubeconfig or "in-cluster service account or ~/.kube/config"
        raise UserError(
            f"--kubeconfig: cannot load {where} ({e})", "pass a readable kubeconfig"
        ) from None
    cfg.connection_pool_maxsize = _POOL
    client.Configuration.set_default(cfg)
    return client.ApiClient(cfg)
