"""The HTTP pool never holds sending threads back: the engine grows its sender's pool to its
own concurrency before the threads start (the pool blocks, so a smaller one would cap the
requests in flight at its size, whatever the thread count)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from storesync.clients.http import build_session, ensure_pool_size
from storesync.delivery.engine import DeliveryEngine
from storesync.delivery.ledger import Ledger, PlannedDelivery

HOLD_S = 0.15


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server naming
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.peak = max(server.peak, server.in_flight)
        time.sleep(HOLD_S)
        with server.lock:
            server.in_flight -= 1
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    httpd.daemon_threads = True
    httpd.lock, httpd.in_flight, httpd.peak = threading.Lock(), 0, 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class PooledSender:
    """A vendor whose client is a pooled session of 2 connections, like the real clients'."""

    vendor = "fake"
    account = "acct"

    def __init__(self, url: str, pool_size: int = 2) -> None:
        self.url = url
        self.session = build_session(pool_size)

    def send(self, delivery):
        response = self.session.get(self.url, timeout=10)
        response.raise_for_status()
        return response.json()

    def resolve_unknown(self, delivery):
        return None

    def ensure_connections(self, n: int) -> None:
        ensure_pool_size(self.session, n)


def _planned(n: int) -> list[PlannedDelivery]:
    return [PlannedDelivery(vendor="fake", account="acct", event_type="order_placed", entity_id=str(i),
                            version="1", endpoint="/x", payload={"id": i}, seq=0, ordering_key=f"order:{i}")
            for i in range(n)]


def test_a_session_pool_caps_requests_in_flight_until_it_is_grown(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    session = build_session(2)

    def burst():
        threads = [threading.Thread(target=lambda: session.get(url, timeout=10)) for _ in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        peak, server.peak = server.peak, 0
        return peak

    assert burst() == 2
    ensure_pool_size(session, 6)
    assert burst() == 6
    ensure_pool_size(session, 3)  # never shrinks
    assert burst() == 6


def test_the_engine_sends_with_all_its_threads_through_a_smaller_pool(server, tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.plan(_planned(24), sync_name="test", run_id="run-1")
    ledger.promote("run-1")
    sender = PooledSender(f"http://127.0.0.1:{server.server_address[1]}/", pool_size=2)
    report = DeliveryEngine(ledger, sender, run_id="run-1", concurrency=6).run()
    assert report.states["accepted"] == 24
    assert server.peak == 6
