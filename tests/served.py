"""What a running wattpack process serves on its port (/metrics, /healthz, /readyz), and
Prometheus's own linter on it: `promtool check metrics` (Debian's prometheus package, which
.ci/run installs)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body); (0, the error) while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def promtool_problems(exposition: str) -> list[str]:
    """What `promtool check metrics` says of a scrape; [] when it is clean."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool is not installed: .ci/run installs Debian's prometheus")
    r = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    said = (r.stdout + r.stderr).splitlines()
    assert (r.returncode == 0) == (not said), f"promtool exit {r.returncode}: {said}"
    return said
