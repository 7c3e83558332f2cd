"""A real, loopback-only Kubernetes control plane for the end-to-end tests and benchmarks.

etcd and kube-apiserver (plus KWOK for fake GPU nodes, and kube-scheduler when a comparison
needs it) from the binaries `k8sbin/build.sh` builds; every process listens on 127.0.0.1 and
is stopped by `stop()`. Nothing here is a mock: CRD validation, server-side apply, watches,
410 Gone, RBAC, Bindings and Leases are the real server's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from served import free_port

HERE = Path(__file__).resolve().parent
BUILD = HERE / "k8sbin" / "build.sh"
ADMIN_TOKEN = "wattpack-e2e-admin-token"


def binaries() -> Path:
    """The folder of built binaries (builds them on a cold cache: minutes)."""
    out = subprocess.run(["bash", str(BUILD)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        f = self.log.open("ab")
        # Own process group: stop() ends children too, and a test's ^C does not orphan them.
        self.popen = subprocess.Popen(
            self.args, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        f.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
            self.popen.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class ControlPlane:
    bin: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wattpack-e2e-")))
    etcd_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    # -- start ------------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        self._keys()
        self.start_etcd()
        self.start_apiserver()
        self._write_kubeconfig()
        return self

    def _keys(self) -> None:
        key = self.root / "sa.key"
        if not key.exists():
            subprocess.run(
                ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
            )
        (self.root / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        args = [
            str(self.bin / "etcd"),
            "--name=e2e",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e2e={peer}",
            "--unsafe-no-fsync=true",  # a throwaway store: durability costs time, proves nothing
            "--log-level=warn",
        ]
        self.procs["etcd"] = Proc("etcd", args, self.root / "etcd.log").start()
        self._wait(lambda: _http_ok(f"{client}/health"), "etcd", 60)

    def start_apiserver(self) -> None:
        sa = self.root / "sa.key"
        args = [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--cert-dir={self.root / 'certs'}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa}",
            f"--service-account-signing-key-file={sa}",
            f"--token-auth-file={self.root / 'tokens.csv'}",
            "--v=0",
        ]
        self.procs["kube-apiserver"] = Proc(
            "kube-apiserver", args, self.root / "kube-apiserver.log"
        ).start()
        self._wait(self.ready, "kube-apiserver", 120)

    def ready(self) -> bool:
        return _http_ok(f"{self.server}/readyz", token=ADMIN_TOKEN)

    def restart_apiserver(self, down_seconds: float = 2.0) -> None:
        self.procs["kube-apiserver"].stop()
        time.sleep(down_seconds)
        self.start_apiserver()

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.root / "certs" / "apiserver.crt"),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
            "current-context": "e2e",
        }
        self.kubeconfig.write_text(yaml.safe_dump(cfg))

    def start_kwok(self, lease_seconds: int = 40) -> None:
        """KWOK for the nodes annotated kwok.x-k8s.io/node=fake; each renews its Lease every
        quarter of `lease_seconds` (thousands of nodes want it longer: each renewal is a
        write)."""
        args = [
            str(self.bin / "kwok"),
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1",
            f"--node-lease-duration-seconds={lease_seconds}",
        ]
        self.procs["kwok"] = Proc("kwok", args, self.root / "kwok.log").start()
        time.sleep(0.5)
        if not self.procs["kwok"].alive():
            raise RuntimeError(f"kwok exited:\n{self.procs['kwok'].tail()}")

    def start_controller_manager(self, controllers: str = "disruption") -> Proc:
        """The real kube-controller-manager, running only the named controllers (the disruption
        controller by default: it keeps PodDisruptionBudgets' status, as in a real cluster)."""
        args = [
            str(self.bin / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={controllers}",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=0",
        ]
        proc = Proc(
            "kube-controller-manager", args, self.root / "kube-controller-manager.log"
        ).start()
        self.procs["kube-controller-manager"] = proc
        time.sleep(0.5)
        if not proc.alive():
            raise RuntimeError(f"kube-controller-manager exited:\n{proc.tail()}")
        return proc

    def start_kube_scheduler(self, config: dict | None = None) -> Proc:
        """The real kube-scheduler (default profile, or the given KubeSchedulerConfiguration)."""
        args = [
            str(self.bin / "kube-scheduler"),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
        ]
        if config is not None:
            cfg = {
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": str(self.kubeconfig)},
                "leaderElection": {"leaderElect": False},
                **config,
            }
            path = self.root / "kube-scheduler.yaml"
            path.write_text(yaml.safe_dump(cfg))
            args = [args[0], f"--config={path}", "--secure-port=0"]
        proc = Proc("kube-scheduler", args, self.root / "kube-scheduler.log").start()
        self.procs["kube-scheduler"] = proc
        return proc

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=stdin,
        )

    def stop(self) -> None:
        for name in ("kube-scheduler", "kwok", "kube-apiserver", "etcd"):
            if name in self.procs:
                self.procs[name].stop()
        for p in self.procs.values():
            p.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.tail()}" for n, p in self.procs.items())

    def _wait(self, ok, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            for p in self.procs.values():
                if p.popen is not None and p.popen.poll() is not None:
                    raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{self.logs()}")


def _http_ok(url: str, token: str | None = None) -> bool:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # readiness only; clients verify the server's certificate
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
            return bool(r.status == 200)
    except OSError:
        return False
