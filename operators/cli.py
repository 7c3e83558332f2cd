"""The `wattpack` command with the I/O shell's commands added (`agent`): the core's CLI
(scheduler.cli) never imports operators, so the shell extends it here."""

from __future__ import annotations

import os
import socket
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import structlog
import typer
from rich.table import Table

from operators.agent.power_caps import PowerCaps
from operators.agent.round_changes import RoundLog
from operators.agent.rounds import AgentRound
from operators.kubelet import DEFAULT_SOCKET as DEFAULT_POD_RESOURCES_SOCKET
from operators.operator import command as _operator_commands  # noqa: F401  (registers operator, export)
from scheduler.cli import documents, files, render
from scheduler.cli.formats import OutputFormat, output_option, print_document
from scheduler.cli.main import Problems, app, stop_like_ctrl_c
from scheduler.cli.numbers import finite
from scheduler.errors import UserError
from scheduler.model.limits import MAX_SECONDS

if TYPE_CHECKING:
    from operators.agent.metrics import RoundCollector
    from operators.endpoints import Heartbeat
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
    output: Annotated[
        OutputFormat | None,
        output_option(
            OutputFormat, "With --once: the round as json (the default), yaml or a table."
        ),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Serve /metrics, /healthz and /readyz here (not with --once); 0 = off.",
        ),
    ] = 9400,
    dcgm_names: Annotated[
        bool,
        typer.Option(
            help="Also serve the GPU metrics under dcgm-exporter's DCGM_FI_* names (off: a "
            "cluster running dcgm-exporter has them already)."
        ),
    ] = False,
    stuck_after: Annotated[
        float,
        typer.Option(
            min=1,
            max=MAX_SECONDS,
            callback=finite,
            help="/healthz fails once a round runs this long (seconds).",
        ),
    ] = 60.0,
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
        str | None,
        typer.Option(
            metavar="PATH",
            help="The kubelet's PodResources socket: which pods hold each GPU (default: "
            f'{DEFAULT_POD_RESOURCES_SOCKET} with --backend nvml, none with fake); "" = off.',
        ),
    ] = None,
) -> None:
    """Sample every GPU through NVML and judge its health (the node agent).

    With --once, the round is printed (--output). Running, it logs one event per round saying
    what changed (stderr) and serves the rounds as Prometheus metrics. With --publish, each
    round also goes to the node's GPUNode status (server-side apply, when it changed) and the
    GPUs are capped at the GPUNode's spec.powerLimits. The pods on each GPU come from the
    kubelet's PodResources socket when it answers."""
    from operators.agent.rounds import Agent, replay_fake, run_forever
    from operators.endpoints import Heartbeat
    from operators.kubelet.pod_gpus import PodGpus

    if output is not None and not once:
        raise UserError(
            "--output: the running agent prints no rounds (it logs what changed)",
            "add --once to print one round",
        )
    if pod_resources_socket is None:
        # A scripted node has no kubelet: asking the default socket would only warn.
        pod_resources_socket = "" if backend is BackendName.FAKE else DEFAULT_POD_RESOURCES_SOCKET
    kubelet = PodGpus(pod_resources_socket) if pod_resources_socket else None

    def pods() -> dict[str, list[str]] | None:
        return kubelet.read() if kubelet is not None else None

    rules = files.load_policy(policy_file).health
    name = node or os.environ.get("NODE_NAME") or socket.gethostname()
    publisher = _publisher(kubeconfig, name, publish_every) if publish else None
    heartbeat = Heartbeat(stuck_after)
    collector = (
        None if once or not metrics_port else _serve(metrics_port, name, dcgm_names, heartbeat)
    )
    round_log = RoundLog()

    def then(round_: AgentRound) -> None:
        if collector is not None:
            collector.observe(round_)
        round_log.log(round_)
        _to_cluster(publisher, caps, round_)

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
            _print(round_, output or OutputFormat.JSON)
            _to_cluster_once(publisher, caps, round_)
            return
        start = time.monotonic()
        fake.start = 0.0

        def fake_round() -> AgentRound:
            now = time.monotonic() - start
            return agent.round(now, fake.drain_xids(now), pods=pods())

        run_forever(fake_round, then, interval, heartbeat)
    from operators.nvml.real import NvmlBackend, NvmlUnavailable

    while True:
        try:
            nvml = NvmlBackend()
            break
        except NvmlUnavailable as e:
            if once:
                raise UserError(str(e), "run it on a GPU node with the NVIDIA driver") from None
            log.error("nvml_unavailable", error=str(e), retry_in=interval)
            heartbeat.beat(interval)  # retrying is progress: not ready, but alive
            time.sleep(interval)
    agent = Agent(nvml, rules, name)
    caps = PowerCaps(nvml, name)
    watcher = None
    try:
        if once:
            round_ = agent.round(time.time(), pods=pods())
            _print(round_, output or OutputFormat.JSON)
            _to_cluster_once(publisher, caps, round_)
            return
        from operators.agent.xids import XidWatcher

        nvml.start_xid_watch()
        watcher = XidWatcher(nvml.drain_xids).start()
        xids = watcher

        def nvml_round() -> AgentRound:
            return agent.round(time.time(), xids.take(), pods=pods())

        run_forever(nvml_round, then, interval, heartbeat)
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


def _serve(port: int, node: str, dcgm_names: bool, heartbeat: Heartbeat) -> RoundCollector:
    from operators.agent.metrics import RoundCollector
    from operators.endpoints import runtime_registry, serve

    collector = RoundCollector(node, dcgm_names)
    registry = runtime_registry()
    registry.register(collector)

    def not_ready() -> str | None:
        return None if collector.latest is not None else "no round read yet"

    serve(registry, port, heartbeat.problem, not_ready)
    return collector


def _print(round_: AgentRound, output: OutputFormat) -> None:
    if output is not OutputFormat.TABLE:
        if output is OutputFormat.YAML:
            typer.echo("---")  # a round each: one YAML stream of documents
        print_document(round_.model_dump(by_alias=True, mode="json"), output.value)
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
    stop_like_ctrl_c()
    app(prog_name="wattpack")


if __name__ == "__main__":
    run()
