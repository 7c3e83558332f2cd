"""A real PostgreSQL server for a test: initdb in a temporary folder, started on a free local
port, stopped after. Debian's postgresql packages (installed by .ci/run) provide the binaries;
as root, the server runs as the postgres user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL is not installed: .ci/run installs Debian's postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the URL of a fresh database `tune` (user wattpack, no password). Its folder is
    made under the system's temporary folder: pytest's are closed to other users."""
    bindir, port = _bindir(), _free_port()
    root = Path(tempfile.mkdtemp(prefix="wattpack-pg-"))
    data = root / "pgdata"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "wattpack")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    log = str(data / "server.log")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "wattpack", "tune")
        yield f"postgresql://wattpack@127.0.0.1:{port}/tune"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
