"""A fault-injecting HTTP proxy on loopback, in front of the GCS emulator or the S3 server.

Reads (GET/HEAD) are forwarded to the real server, except that a seeded random
fraction gets a fault: a 503, a connection reset before any answer, a body cut
in half after full headers (the client sees fewer bytes than Content-Length), or
a delay. Paths containing one of `fail_forever` always get a 503. Writes pass
through untouched. Counters say how many faults of each kind were injected and
how many requests each path got, so tests can assert both "nothing missing,
nothing duplicated" and "a failing object costs a bounded number of requests".
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULT_KINDS = ("503", "reset", "truncate", "delay")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Writing to a connection the proxy reset on purpose fails; that is the point, not news."""


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        fault_rate: float = 0.0,
        seed: int = 0,
        kinds: tuple[str, ...] = FAULT_KINDS,
        fail_forever: tuple[str, ...] = (),
        delay_seconds: float = 0.2,
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.fault_rate = fault_rate
        self.kinds = kinds
        self.fail_forever = fail_forever
        self.delay_seconds = delay_seconds
        self.faults: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def requests_for(self, fragment: str) -> int:
        return sum(count for path, count in self.requests.items() if fragment in path)

    def choose_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests[path.split("?")[0]] += 1
            if method not in ("GET", "HEAD"):
                return None
            if any(fragment in path for fragment in self.fail_forever):
                self.faults["forever"] += 1
                return "503"
            if self._random.random() >= self.fault_rate:
                return None
            kind = self._random.choice(self.kinds)
            self.faults[kind] += 1
            return kind

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a reset hits one request only

            def log_message(self, *_args: object) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.choose_fault(self.command, self.path)
                if fault == "503":
                    self._answer(503, {"Content-Type": "text/plain"}, b"injected fault")
                    return
                if fault == "reset":
                    self._reset()
                    return
                if fault == "delay":
                    time.sleep(proxy.delay_seconds)
                status, headers, data = self._forward(body)
                if fault == "truncate" and len(data) > 1:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self._answer(status, dict(headers), data)

            def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                    if self.command == "HEAD":
                        kept += [(k, v) for k, v in response.getheaders() if k.lower() == "content-length"]
                    return response.status, kept, data
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                declared = None
                if self.command == "HEAD":  # a HEAD answer declares the object's length, with no body
                    declared = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
                self.send_header("Content-Length", declared or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _reset(self) -> None:
                """RST instead of FIN: the client sees 'connection reset by peer'."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

        return Handler
