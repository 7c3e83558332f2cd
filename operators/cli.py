"""The `wattpack` command with the I/O shell's commands added (`agent`): the core's CLI
(scheduler.cli) never imports operators, so the shell extends it here."""

from __future__ import annotations

import json
import os
import socket
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import structlog
import typer
from rich.table import Table

from operators.agent.power_caps import PowerCaps
from operators.agent.rounds import AgentRound
from operators.kubelet import DEFAULT_SOCKET as DEFAULT_POD_RESOURCES_SOCKET
from operators.operator import command as _operator_commands  # noqa: F401  (registers operator, export)
from scheduler.cli import documents, files, render
from scheduler.cli.main import Problems, app
from scheduler.cli.numbers import finite
from scheduler.cli.render import OutputFormat
from scheduler.errors import UserError
from scheduler.model.limits import MAX_SECONDS

if TYPE_CHECKING:
    from operators.kube.gpunode import GpuNodePublisher

log = structlog.get_logger("wattpack.agent")


class BackendName(StrEnum):
    NVML = "nvml"
    FAKE = "fake"


@app.command("agent")
def agent_command(
    backend: Annotated[
        BackendName, typer.Option(help="nvml: the GPUs of this node; fake: a YAML scenario.")
    ] = BackendName.NVML,
    scenario: Annotated[
        str | None, typer.Option(metavar="FILE", help="fake: the scenario of GPUs and events.")
    ] = None,
    once: Annotated[bool, typer.Option(help="Read one round, print it and exit.")] = False,
    at: Annotated[
        float,
        typer.Option(
            min=0,
            max=MAX_SECONDS,
            callback=finite,
            help="fake with --once: the scenario time to read at.",
        ),
    ] = 0.0,
    interval: Annotated[
        float,
        typer.Option(min=0.1, max=MAX_SECONDS, callback=finite, help="Seconds between rounds."),
    ] = 10.0,
    node: Annotated[
        str | None, typer.Option(help="Node name (default: $NODE_NAME, else the host name).")
    ] = None,
    policy_file: Annotated[
        str | None, typer.Option("--policy", metavar="FILE", help="Health rules (policy.health).")
    ] = None,
    output: Annotated[OutputFormat, typer.Option(help="json: one round as JSON.")] = (
        OutputFormat.JSON
    ),
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus /metrics here (not with --once); 0 = off."
        ),
    ] = 9400,
    publish: Annotated[
        bool,
        typer.Option(help="Write the node's GPUNode status and apply its spec.powerLimits."),
    ] = False,
    kubeconfig: Annotated[
        str | None,
        typer.Option(
            metavar="FILE", help="With --publish: kubeconfig (default: in-cluster, else ~/.kube)."
        ),
    ] = None,
    publish_every: Annotated[
        float,
        typer.Option(
            min=1,
            max=MAX_SECONDS,
            callback=finite,
            help="With --publish: rewrite an unchanged status after S seconds.",
        ),
    ] = 60.0,
    pod_resources_socket: Annotated[
        str,
        typer.Option(
            metavar="PATH",
            help='The kubelet\'s PodResources socket: which pods hold each GPU; "" = off.',
        ),
    ] = DEFAULT_POD_RESOURCES_SOCKET,
) -> None:
    """Sample every GPU through NVML and judge its health (the node agent).

    Each round prints one JSON document (readings and health per GPU); state changes are logged.
    With --publish, each round also goes to the node's GPUNode status (server-side apply, when
    it changed) and the GPUs are capped at the GPUNode's spec.powerLimits. The pods on each GPU
    come from the kubelet's PodResources socket when it answers."""
    from operators.agent.rounds import Agent, replay_fake
    from operators.kubelet.pod_gpus import PodGpus

    kubelet = PodGpus(pod_resources_socket) if pod_resources_socket else None

    def pods() -> dict[str, list[str]] | None:
        return kubelet.read() if kubelet is not None else None

    rules = files.load_policy(policy_file).health
    name = node or os.environ.get("NODE_NAME") or socket.gethostname()
    publisher = _publisher(kubeconfig, name, publish_every) if publish else None
    collector = None if once or not metrics_port else _serve_metrics(metrics_port)
    if backend is BackendName.FAKE:
        from operators.nvml.fake import FakeBackend, load_scenario

        if scenario is None:
            raise UserError("--backend fake needs --scenario FILE", "give a scenario YAML")
        fake = FakeBackend(
            load_scenario(documents.parse(documents.read_text(scenario), scenario), scenario)
        )
        agent = Agent(fake, rules, name)
        caps = PowerCaps(fake, name)
        if once:
            round_ = replay_fake(agent, fake, at, pods())
            _print(round_, output)
            _to_cluster_once(publisher, caps, round_)
            return
        start = time.monotonic()
        fake.start = 0.0
        while True:
            now = time.monotonic() - start
            round_ = agent.round(now, fake.drain_xids(now), pods=pods())
            _publish(round_, output, collector)
            _to_cluster(publisher, caps, round_)
            time.sleep(interval)
    from operators.nvml.real import NvmlBackend, NvmlUnavailable

    while True:
        try:
            nvml = NvmlBackend()
            break
        except NvmlUnavailable as e:
            if once:
                raise UserError(str(e), "run it on a GPU node with the NVIDIA driver") from None
            log.error("nvml_unavailable", error=str(e), retry_in=interval)
            time.sleep(interval)
    agent = Agent(nvml, rules, name)
    caps = PowerCaps(nvml, name)
    watcher = None
    try:
        if once:
            round_ = agent.round(time.time(), pods=pods())
            _print(round_, output)
            _to_cluster_once(publisher, caps, round_)
            return
        from operators.agent.xids import XidWatcher, sleep_until

        nvml.start_xid_watch()
        watcher = XidWatcher(nvml.drain_xids).start()
        while True:
            deadline = time.monotonic() + interval
            round_ = agent.round(time.time(), watcher.take(), pods=pods())
            _publish(round_, output, collector)
            _to_cluster(publisher, caps, round_)
            sleep_until(deadline)
    finally:
        if watcher is not None:
            watcher.stop()
        nvml.close()


def _publisher(kubeconfig: str | None, node: str, every: float) -> GpuNodePublisher:
    from operators.kube.client import connect
    from operators.kube.gpunode import GpuNodePublisher

    return GpuNodePublisher(connect(kubeconfig), node, every=every)


def _to_cluster(publisher: GpuNodePublisher | None, caps: PowerCaps, round_: AgentRound) -> bool:
    """The round as the GPUNode's status, then its spec's power limits onto the GPUs: a set
    shows in the next round's readings and so in the next status. False when the status could
    not be written (logged; the next round tries again)."""
    if publisher is None:
        return True
    from operators.agent.gpunode import gpunode_status

    publisher.publish(gpunode_status(round_), time.monotonic())
    caps.apply(round_, publisher.desired_limits())
    return publisher.last_error is None


def _to_cluster_once(
    publisher: GpuNodePublisher | None, caps: PowerCaps, round_: AgentRound
) -> None:
    if publisher is not None and not _to_cluster(publisher, caps, round_):
        raise Problems(f"GPUNode {round_.node}: status not written ({publisher.last_error})")


def _serve_metrics(port: int):  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry

    from operators.agent.metrics import RoundCollector
    from operators.metrics_http import serve

    collector = RoundCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    serve(registry, port)
    return collector


def _publish(round_: AgentRound, output: OutputFormat, collector) -> None:  # type: ignore[no-untyped-def]
    if collector is not None:
        collector.latest = round_
    _print(round_, output)


def _print(round_: AgentRound, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(round_.model_dump(by_alias=True, mode="json"), indent=2))
        return
    table = Table(title=f"{round_.node} at {round_.time:g}")
    for col in ("gpu", "uuid", "health", "reasons", "power W", "temp C", "unsupported", "pods"):
        table.add_column(col)
    for g in round_.gpus:
        r = g.reading
        table.add_row(
            str(r.index),
            r.uuid or "-",
            g.health.state.value,
            "; ".join(g.health.reasons) or "-",
            f"{r.power_mw / 1000:.0f}" if r.power_mw is not None else "-",
            str(r.temperature_c) if r.temperature_c is not None else "-",
            ", ".join(r.unsupported) or "-",
            ", ".join(g.pods) or "-",
        )
    render.stdout_console().print(table)


def run() -> None:
    """Console-script entry point."""
    app(prog_name="wattpack")


if __name__ == "__main__":
    run()
