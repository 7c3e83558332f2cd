"""A fault-injecting HTTPS reverse proxy in front of the real API server: a client given its
kubeconfig talks to the API server through it, and a seeded share of the requests fail.

Three faults, as a flaky network or an overloaded server gives them:
- `refused`: answered 503 without reaching the server (nothing done);
- `dropped`: the connection closed without an answer (nothing done);
- `lost`: sent to the server, which did it, and answered 500 (done, but the client cannot know).
Watches are only refused or dropped: a stream has no single answer to lose. The seed pins the
sequence of decisions, not which request meets which (the client's threads race); so that a run
is sure to fault the writes that matter, `every` fails each n-th request of a path it names,
whatever the draw.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """`rate`: the share of the requests that `matching` (method, path) picks that fail, with
    one of `kinds`."""

    def __init__(
        self,
        upstream_port: int,
        certs: Path,
        rate: float,
        seed: int,
        matching: Callable[[str, str], bool] = lambda method, path: True,
        kinds: tuple[str, ...] = ("refused", "dropped", "lost"),
        every: tuple[str, int] | None = None,
    ) -> None:
        self.upstream_port, self.certs, self.rate = upstream_port, certs, rate
        self.matching, self.kinds, self.every = matching, kinds, every
        self._counted = 0  # requests whose path ends with every's suffix
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.faults: Counter[str] = Counter()  # fault -> how many
        self.faulted: Counter[str] = Counter()  # "METHOD path" -> faults
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Forward):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The API server's own certificate: clients verify the proxy as they would the server.
        ctx.load_cert_chain(self.certs / "apiserver.crt", self.certs / "apiserver.key")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self, original: Path, path: Path) -> Path:
        """`original` with its server swapped for the proxy."""
        cfg = yaml.safe_load(original.read_text())
        cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def decide(self, method: str, path: str, watching: bool) -> str | None:
        with self._lock:
            self.requests += 1
            if not self.matching(method, path.partition("?")[0]):
                return None
            r = self._rng.random()
            forced = False
            if self.every is not None and path.partition("?")[0].endswith(self.every[0]):
                self._counted += 1
                forced = self._counted % self.every[1] == 0
            kinds = tuple(k for k in self.kinds if not (watching and k == "lost"))
            if not kinds:
                return None
            if r < self.rate:
                fault = kinds[int(r / self.rate * len(kinds))]
            elif forced:  # each kind in turn
                fault = kinds[self._counted // self.every[1] % len(kinds)]  # type: ignore[index]
            else:
                return None
            self.faults[fault] += 1
            self.faulted[f"{method} {path.partition('?')[0]}"] += 1
            return fault


class _Forward(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as the client pools its connections
    _upstream: http.client.HTTPSConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test says what matters

    def _connection(self) -> http.client.HTTPSConnection:
        if self._upstream is None:
            ctx = ssl.create_default_context(cafile=str(self.owner.certs / "apiserver.crt"))
            self._upstream = http.client.HTTPSConnection(
                "127.0.0.1", self.owner.upstream_port, context=ctx, timeout=300
            )
        return self._upstream

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        query = self.path.partition("?")[2]
        watching = "watch=true" in query or "watch=1" in query
        fault = self.owner.decide(self.command, self.path, watching)
        if fault == "dropped":
            self.close_connection = True
            return
        if fault == "refused":
            self._answer(503, "injected: service unavailable")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        conn = self._connection()
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self._upstream = None
            self._answer(502, f"upstream: {e}")
            return
        if fault == "lost":
            resp.read()  # done by the server: only its answer is lost
            self._answer(500, "injected: the answer was lost")
            return
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        if watching or resp.getheader("Transfer-Encoding", "").lower() == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while chunk := resp.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (OSError, ValueError, http.client.HTTPException):
                # Either side went away mid-stream: neither connection can be reused.
                self.close_connection = True
                conn.close()
                self._upstream = None
            return
        data = resp.read()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, code: int, message: str) -> None:
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "code": code,
            }
        ).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
