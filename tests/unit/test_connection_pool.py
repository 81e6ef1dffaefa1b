"""The HTTP pool never holds sending threads back: the engine grows its sender's pool to its
own concurrency before the threads start (the pool blocks, so a smaller one would cap the
requests in flight at its size, whatever the thread count).

No timing decides these tests: the server holds each request at a barrier until ``group``
requests are in flight together. A pool that caps them below ``group`` never gets there, and the
barrier's (generous) timeout fails the request; one that allows more than ``group`` shows it in
the peak count, which the barrier makes exact.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from storesync.clients.http import build_session, ensure_pool_size
from storesync.delivery.engine import DeliveryEngine
from storesync.delivery.ledger import Ledger, PlannedDelivery

BARRIER_TIMEOUT_S = 60.0  # only a broken pool ever waits this long


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server naming
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.peak = max(server.peak, server.in_flight)
        try:
            server.group.wait(timeout=BARRIER_TIMEOUT_S)  # until `group` requests are here together
            status = 200
        except threading.BrokenBarrierError:
            status = 504  # they never were: the client's pool held them back
        with server.lock:
            server.in_flight -= 1
        body = b"{}"
        self.send_response(status)
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
    httpd.group = threading.Barrier(1)
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

    def burst(group: int) -> int:
        """Six requests at once, held until `group` of them are in flight together."""
        server.group, server.peak = threading.Barrier(group), 0
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            session.get(url, timeout=BARRIER_TIMEOUT_S + 30).status_code)) for _ in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert statuses == [200] * 6, "the pool never let `group` requests be in flight together"
        return server.peak

    assert burst(2) == 2  # two at a time (three pairs), never three: the pool of two blocks
    ensure_pool_size(session, 6)
    assert burst(6) == 6
    ensure_pool_size(session, 3)  # never shrinks
    assert burst(6) == 6


def test_the_engine_sends_with_all_its_threads_through_a_smaller_pool(server, tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.plan(_planned(24), sync_name="test", run_id="run-1")
    ledger.promote("run-1")
    sender = PooledSender(f"http://127.0.0.1:{server.server_address[1]}/", pool_size=2)
    server.group = threading.Barrier(6)  # each request waits until six are in flight together
    report = DeliveryEngine(ledger, sender, run_id="run-1", concurrency=6).run()
    assert report.states["accepted"] == 24
    assert server.peak == 6
