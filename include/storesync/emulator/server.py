"""The HTTP server: one local endpoint speaking Sendlane v2, Sailthru and the control API.

Stdlib only (``http.server.ThreadingHTTPServer``), HTTP/1.1 with keep-alive, one daemon thread per
connection. Never imports Airflow.

    python -m storesync.emulator --port 8765            # serve until Ctrl-C / SIGTERM
    python -m storesync.emulator --port 0 --config '{"rate_limits_enabled": false}'
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from . import control, sailthru, sendlane
from .state import EmulatorState
from .wire import DROP, Drop, Request, Response, json_response, text_response

log = logging.getLogger("storesync.emulator")

MAX_BODY_BYTES = 64 * 1024 * 1024
_QUERY_RE = re.compile(r"\?[^\s'\"]*")


class EmulatorApp:
    """Routes a request to a vendor or the control API, with fault injection in front of the vendors."""

    def __init__(self, config: dict | None = None) -> None:
        self.state = EmulatorState(config)

    def handle(self, req: Request) -> Response | Drop:
        path = req.path
        if path == control.PREFIX or path.startswith(control.PREFIX + "/"):
            return control.handle(self.state, req)
        if path == sendlane.PREFIX or path.startswith(sendlane.PREFIX + "/"):
            vendor, module = "sendlane", sendlane
        elif path == sailthru.PREFIX or path.startswith(sailthru.PREFIX + "/"):
            vendor, module = "sailthru", sailthru
        else:
            return json_response(404, {"message": f"Not found: {path}. Vendors live under /sendlane/v2 and "
                                                  "/sailthru; the control API under /_emulator."})
        state = self.state
        faults = state.faults
        in_scope = vendor in faults.vendors
        if in_scope and faults.latency_ms:
            self._count(vendor, "latency")
            time.sleep(faults.latency_ms / 1000.0)
        n = 0
        if in_scope:
            now = time.time()
            with state.lock:
                n = faults.next_request()
                storm_end = faults.in_storm(now)
            if storm_end is not None:
                self._count(vendor, "storm")
                if vendor == "sailthru":
                    with state.lock:
                        return sailthru.storm_response(state, req, storm_end)
                return json_response(429, {"message": "Too Many Attempts."})
            if faults.drop_before_rate or faults.error_rate:
                draw = faults.draw("before", n)
                if draw < faults.drop_before_rate:
                    self._count(vendor, "drop_before")
                    return DROP
                if draw < faults.drop_before_rate + faults.error_rate:
                    self._count(vendor, "error_rate")
                    return _server_error(vendor, faults.error_status(n))
        response = module.handle(state, req)
        if in_scope and response.accepted and faults.drop_after_rate:
            if faults.draw("after", n) < faults.drop_after_rate:
                # Recorded by the vendor, and the client gets no answer (the connection is reset).
                self._count(vendor, "drop_after")
                return DROP
        return response

    def _count(self, vendor: str, kind: str) -> None:
        with self.state.lock:
            self.state.fault_counts[kind] += 1
            self.state.fault_counts_by_vendor[vendor][kind] += 1


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _server_error(vendor: str, status: int) -> Response:
    if status == 500:
        if vendor == "sailthru":
            return json_response(500, {"error": 9, "errormsg": "Internal Error"})
        return json_response(500, {"message": "Server Error"})
    title = f"{status} {_reason(status) or 'Server Error'}"
    html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return text_response(status, html, content_type="text/html; charset=utf-8")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "storesync-emulator"
    sys_version = ""
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY_BYTES:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        started = time.perf_counter()
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._write(json_response(400, {"message": "Unreadable request body."}))
            return
        split = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            host=self.headers.get("Host") or "%s:%s" % self.server.server_address[:2],
        )
        try:
            outcome = self.server.app.handle(req)
        except Exception:  # noqa: BLE001 - a bug in the emulator must not kill the connection silently
            log.exception("emulator error on %s %s", self.command, split.path)
            outcome = json_response(500, {"message": "emulator internal error"})
        if isinstance(outcome, Drop):
            self._drop()
            status = "dropped"
        else:
            self._write(outcome)
            status = outcome.status
        if log.isEnabledFor(logging.DEBUG):
            # Path only: Sailthru GET query strings carry the api_key and sig.
            elapsed_ms = (time.perf_counter() - started) * 1e3
            log.debug("%s %s -> %s (%.1f ms)", self.command, split.path, status, elapsed_ms)

    def _write(self, response: Response) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {_reason(response.status)}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + response.body)
        except OSError:
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server signature
        # http.server's own messages (bad request lines, ...); requests are logged in _dispatch.
        # Query strings are cut out: Sailthru GETs carry api_key and sig there.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http.server: %s", _QUERY_RE.sub("?<redacted>", format % args))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address, app: EmulatorApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (socket.getfqdn): skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def handle_error(self, request, client_address) -> None:
        # A client that went away mid-request (killed, timed out) is routine here, not a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EmulatorServer:
    """A running (or ready to run) emulator. ``start()`` serves from a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, config: dict | None = None) -> None:
        self.app = EmulatorApp(config)
        self.httpd = _HTTPServer((host, port), self.app)
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> EmulatorState:
        return self.app.state

    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="storesync-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.close_connections()
        self.httpd.server_close()
        with self.state.lock:
            self.state.generation += 1  # background jobs stop at their next step
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _load_config(value: str | None) -> dict:
    if not value:
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        text = Path(value).read_text()
    config = json.loads(text)
    if not isinstance(config, dict):
        raise SystemExit("--config must be a JSON object (or a path to a file holding one)")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="storesync emulator",
        description="Local emulator of the Sendlane v2 and Sailthru APIs (plus /_emulator control).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 = any free port; default 8765)")
    parser.add_argument("--config", help="initial configuration: a JSON object or a path to a JSON file "
                                         "(the same fields as POST /_emulator/config; reset returns to it)")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG logs one line per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = EmulatorServer(args.host, args.port, _load_config(args.config))

    def _terminate(signum, frame):  # noqa: ARG001
        threading.Thread(target=server.httpd.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    # The first stdout line announces the address (start_emulator(in_process=False) reads it).
    print(f"storesync emulator listening on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.close_connections()
        server.httpd.server_close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
