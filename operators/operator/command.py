"""`wattpack operator` (the scheduler in the cluster) and `wattpack export` (the cluster as a
snapshot file for `wattpack plan`)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Annotated

import structlog
import typer

from operators.kube.source import CONFIG_MAP, NAMESPACE
from scheduler.cli.formats import DocumentFormat, out_option, output_option, write_document
from scheduler.cli.main import app
from scheduler.cli.numbers import finite
from scheduler.model.limits import MAX_SECONDS

log = structlog.get_logger("wattpack.operator")

Kubeconfig = Annotated[
    str | None,
    typer.Option(metavar="FILE", help="kubeconfig (default: in-cluster, else ~/.kube/config)."),
]
Namespace = Annotated[str, typer.Option(help="Namespace of the config and the leader lease.")]
ConfigMapName = Annotated[
    str, typer.Option("--config-map", help="ConfigMap with policy.yaml and gpu-models.yaml.")
]


@app.command("export")
def export_command(
    out: Annotated[str, out_option("Snapshot file ('-': stdout; format from .json/.yaml).")] = "-",
    output: Annotated[
        DocumentFormat | None,
        output_option(
            DocumentFormat, "Both files' format. Default: from each extension, else yaml."
        ),
    ] = None,
    kubeconfig: Kubeconfig = None,
    namespace: Namespace = NAMESPACE,
    config_map: ConfigMapName = CONFIG_MAP,
    policy_out: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Also write the policy the operator uses."),
    ] = None,
    name: Annotated[str, typer.Option(help="Snapshot name (metadata.name).")] = "cluster",
) -> None:
    """Read the live cluster into a snapshot: `wattpack plan` on it plans what the operator
    would (the same conversion). Pending pods with malformed labels are left out and listed on
    stderr."""
    from operators.kube.client import connect
    from operators.kube.source import read_once

    conv, policy = read_once(connect(kubeconfig), namespace, config_map, name)
    for p in conv.problems:
        typer.echo(f"left out: pod {p.pod}: {p.reason}", err=True)
    for note in conv.notes:
        typer.echo(f"left out: {note}", err=True)
    data = conv.snapshot.model_dump(by_alias=True, mode="json", exclude_none=True)
    write_document(data, output, out, "snapshot")
    if policy_out is not None:
        write_document(policy.model_dump(by_alias=True, mode="json"), output, policy_out, "policy")
    log.info(
        "exported",
        nodes=len(conv.snapshot.nodes),
        pods=len(conv.snapshot.pods),
        left_out=len(conv.problems),
    )


@app.command("operator")
def operator_command(
    kubeconfig: Kubeconfig = None,
    namespace: Namespace = NAMESPACE,
    config_map: ConfigMapName = CONFIG_MAP,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Plan and log what it would do; write nothing. Each plan goes to stdout."
        ),
    ] = False,
    leader_elect: Annotated[
        bool, typer.Option(help="Take the Lease first: one active replica of several.")
    ] = False,
    lease_name: Annotated[str, typer.Option(help="The Lease's name.")] = "wattpack-operator",
    lease_seconds: Annotated[
        int,
        typer.Option(
            min=2, max=MAX_SECONDS, help="How long a leader's lease lasts without renewal."
        ),
    ] = 15,
    interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=MAX_SECONDS,
            callback=finite,
            help="A cycle at least this often (seconds).",
        ),
    ] = 30.0,
    debounce: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=MAX_SECONDS,
            callback=finite,
            help="Wait for changes to settle this long (seconds).",
        ),
    ] = 0.5,
    metrics_port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="Serve /metrics, /healthz and /readyz here; 0 = off."),
    ] = 9090,
    stuck_after: Annotated[
        float,
        typer.Option(
            min=1,
            max=MAX_SECONDS,
            callback=finite,
            help="/healthz fails once a cycle runs this long (seconds): keep it well above "
            "the policy's solver time limit.",
        ),
    ] = 300.0,
    identity: Annotated[
        str | None, typer.Option(help="This replica's name (default: $POD_NAME, else host name).")
    ] = None,
) -> None:
    """Schedule every pod with schedulerName wattpack: plan on change and on a timer, bind,
    evict, explain. Runs until stopped (SIGTERM)."""
    from operators.endpoints import runtime_registry, serve
    from operators.kube.client import connect
    from operators.operator.loop import Operator, Settings
    from operators.operator.metrics import OperatorMetrics

    me = identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    api = connect(kubeconfig)
    metrics = OperatorMetrics(runtime_registry())
    settings = Settings(
        namespace=namespace,
        config_map=config_map,
        dry_run=dry_run,
        interval=interval,
        debounce=debounce,
        max_delay=max(3.0, debounce * 4),
        stuck_after=stuck_after,
    )
    op = Operator(api, settings, metrics, me, out=sys.stdout)
    if metrics_port:
        serve(metrics.registry, metrics_port, op.heartbeat.problem, op.not_ready)
    done = threading.Event()

    def stop(*_: object) -> None:
        log.info("stopping", identity=me)
        op.stop()
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not leader_elect:
        metrics.leader.set(1)
        op.run()
        return
    from operators.kube.leader import lead

    # Returns when leadership is lost: exit non-zero so that Kubernetes restarts this replica
    # as a follower, rather than letting two replicas act at once.
    lead(api, namespace, lease_name, me, lease_seconds, op, metrics, done)
    if not done.is_set():
        raise typer.Exit(1)
