"""A small threaded HTTP listener: ``/metrics`` (prometheus-client exposition), ``/health``, ``/ready``.

Scrapes are served from a thread so a slow scrape never blocks the asyncio loop (or ``/health``: the old
exporters' single-threaded server did, B-X2). Rendering uses prometheus-client's own encoders, so content
negotiation (text 0.0.4 / 1.0.0, OpenMetrics) is whatever the client library does. A client that accepts gzip
(Prometheus always does) gets the body compressed, once per body: the gateway's exposition of a 100-scenario
run shrinks from about 860 KiB to 30 KiB, compressed in about 4 ms when it changes.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import selectors
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

#: Smaller bodies go uncompressed: gzip would save a few hundred bytes at the price of a compression each.
GZIP_MIN_BYTES = 4096
#: zlib level 3: nearly level 6's size (30 vs 28 KiB for 860 KiB of exposition) in a third of the time.
GZIP_LEVEL = 3


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header admits gzip: named with a non-zero q, or not named and ``*`` is
    (``gzip;q=0`` refuses it)."""
    quality: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[name.strip().lower()] = q
    return quality.get("gzip", quality.get("*", 0.0)) > 0


class StatusServer:
    """Serves one registry. ``ready`` is polled on each ``/ready`` request."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        ready: Callable[[], bool] = lambda: True,
        name: str = "metrics",
        render: Callable[[str], tuple[bytes, str]] | None = None,
    ) -> None:
        self.registry = registry
        self.ready = ready
        #: ``render(accept_header) -> (body, content_type)``; defaults to encoding the registry per request.
        self.render = render or self._render
        self.name = name
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle's algorithm the body's last segment waits for
            # the client's delayed ACK of the headers (40 ms on a kept-alive connection, as Prometheus keeps).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the log

            def _send(
                self,
                code: int,
                body: bytes,
                content_type: str = "text/plain; charset=utf-8",
                compressible: bool = False,
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                if compressible and len(body) >= GZIP_MIN_BYTES:
                    self.send_header("Vary", "Accept-Encoding")
                    if accepts_gzip(self.headers.get("Accept-Encoding", "")):
                        body = server_self.gzipped(body, content_type)
                        self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/metrics":
                    try:
                        body, content_type = server_self.render(self.headers.get("Accept", ""))
                    except Exception:
                        log.exception("rendering /metrics failed")
                        self._send(500, b"internal error rendering metrics\n")
                        return
                    self._send(200, body, content_type, compressible=True)
                elif path == "/health":
                    self._send(200, b"OK\n")
                elif path == "/ready":
                    ok = server_self.ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"Not Found\n")

            do_HEAD = do_GET

        class Server(ThreadingHTTPServer):
            # socketserver's default listen backlog is 5: more simultaneous scrapers would wait for SYN retries.
            request_queue_size = 128

            def serve_until_woken(self) -> None:
                """serve_forever without its 0.5 s polling: sleep in select() until a client connects or
                stop() writes to the wake pipe, so an idle listener costs no CPU at all."""
                with selectors.DefaultSelector() as selector:
                    selector.register(self, selectors.EVENT_READ)
                    selector.register(server_self._wake_read, selectors.EVENT_READ)
                    while not server_self._stopping:
                        for key, _ in selector.select():
                            if key.fileobj is self and not server_self._stopping:
                                self._handle_request_noblock()  # type: ignore[attr-defined]

        #: content type -> (the body last compressed, its gzip form)
        self._gzip_cache: dict[str, tuple[bytes, bytes]] = {}
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()
        self._httpd = Server((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_until_woken, name=f"http-{name}", daemon=True
        )

    def gzipped(self, body: bytes, content_type: str) -> bytes:
        """``body`` compressed; the last result per content type is kept, so a cached exposition served to
        many scrapes is compressed once."""
        cached = self._gzip_cache.get(content_type)
        if cached is not None and cached[0] is body:
            return cached[1]
        packed = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        self._gzip_cache[content_type] = (body, packed)
        return packed

    def _render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_write, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._httpd.server_close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
