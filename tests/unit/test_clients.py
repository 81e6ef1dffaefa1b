"""Vendor clients: every error class for each vendor, the network rule (sent or not), the retry
loop, and secrets kept out of exceptions, logs and reprs.

HTTP answers are classified from hand-built ``requests.Response`` objects; the transport paths
(keep-alive, drops, resets, refused connections) run against a scripted local HTTP server.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from storesync.clients import http as http_module
from storesync.clients.http import RetryPolicy, call_with_retries, make_redactor
from storesync.clients.sailthru import SailthruClient, classify_sailthru_response
from storesync.clients.sendlane import SendlaneClient, classify_sendlane_response
from storesync.core.errors import (
    AuthError,
    ConfigurationError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SuppressedError,
    UnknownOutcomeError,
)
from storesync.core.throttle import Unlimited

API_TOKEN = "sl-api-token-SECRET-1234"
INTEGRATION_TOKEN = "sl-integration-SECRET-5678"
SAILTHRU_KEY = "st-key-SECRET-abcd"
SAILTHRU_SECRET = "st-secret-SECRET-efgh"
SECRETS = (API_TOKEN, INTEGRATION_TOKEN, SAILTHRU_KEY, SAILTHRU_SECRET)
FAST = RetryPolicy(max_attempts=3, base_backoff_s=0.01, max_backoff_s=0.02)


def answer(status: int, body: bytes | dict | str = b"", headers: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode()
    response._content = body
    response.encoding = "utf-8"
    response.headers.update(headers or {})
    return response


# ------------------------------------------------------------------ Sendlane classification
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"message": "Too Many Attempts."}, RateLimitedError),
        (500, {"message": "Server Error"}, RetryableError),
        (503, b"<html>bad gateway</html>", RetryableError),
        (408, b"", RetryableError),
        (401, "Unauthorized", AuthError),  # plain text, not JSON
        (403, {"message": "Too many failed requests: this account is temporarily blocked."}, AuthError),
        (400, {"data": {"message": "Failed to handle event", "errors": ["Malformed JSON body."]}}, PermanentError),
        (422, {"message": "The given data was invalid.", "errors": {"email": ["The email must be valid."]}},
         PermanentError),
        (404, {"message": "Unknown tracking path /tracking/order-shipped."}, PermanentError),
        (302, b"", PermanentError),
    ],
)
def test_sendlane_classification(status, body, expected):
    error = classify_sendlane_response(answer(status, body))
    assert type(error) is expected
    assert error.http_status == status


@pytest.mark.parametrize("status", [200, 202])
def test_sendlane_success_is_no_error(status):
    assert classify_sendlane_response(answer(status, {"data": {"message": "Successfully handled event"}})) is None


def test_sendlane_keeps_the_field_errors():
    body = {"message": "The given data was invalid.",
            "errors": {"email": ["The email must be a valid email address."], "total": ["The total must be a number."]}}
    error = classify_sendlane_response(answer(422, body))
    assert "email: The email must be a valid email address." in error.vendor_message
    assert "total: The total must be a number." in error.vendor_message
    list_shape = {"data": {"message": "Failed to handle event", "errors": ["order_id is required"]}}
    assert "order_id is required" in classify_sendlane_response(answer(400, list_shape)).vendor_message


def test_sendlane_plain_text_401_is_kept_as_text():
    error = classify_sendlane_response(answer(401, "Unauthorized: invalid integration token."))
    assert error.vendor_message == "Unauthorized: invalid integration token."


# ------------------------------------------------------------------ Sailthru classification
def sailthru_error(code: int, status: int = 400, headers: dict | None = None) -> requests.Response:
    return answer(status, {"error": code, "errormsg": f"error {code}"}, headers)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (43, RateLimitedError), (9, RetryableError),
        (3, AuthError), (4, AuthError), (5, AuthError),
        *[(code, SuppressedError) for code in range(32, 38)],
        *[(code, PermanentError) for code in (2, 6, 11, 14, 15, 18, 42, 99, 1)],
    ],
)
def test_sailthru_classification_by_error_code(code, expected):
    error = classify_sailthru_response(sailthru_error(code))
    assert type(error) is expected
    assert error.vendor_code == code


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, b"", RateLimitedError),
        (502, b"<html>bad gateway</html>", RetryableError),
        (500, {"unexpected": "shape"}, RetryableError),
        (404, b"not here", PermanentError),
        (413, b"", PermanentError),
    ],
)
def test_sailthru_classification_by_status_without_a_code(status, body, expected):
    assert type(classify_sailthru_response(answer(status, body))) is expected


def test_sailthru_error_code_wins_over_a_2xx_status():
    assert type(classify_sailthru_response(sailthru_error(11, status=200))) is PermanentError
    assert classify_sailthru_response(answer(200, {"ok": True})) is None


def test_sailthru_rate_limit_retry_after_comes_from_the_reset_header():
    error = classify_sailthru_response(sailthru_error(43, 429, {"X-Rate-Limit-Reset": "1030"}), now=1_000.0)
    assert error.retry_after == pytest.approx(30.0)
    assert classify_sailthru_response(sailthru_error(43, 429), now=1_000.0).retry_after is None


# ------------------------------------------------------------------ the retry loop
class RecordingLimiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.penalties: list[float] = []

    def acquire(self, cost: int = 1) -> float:
        self.acquired += cost
        return 0.0

    def penalize(self, seconds: float) -> None:
        self.penalties.append(seconds)


def failing(*errors):
    """An attempt function that raises the given errors in turn, then returns "ok"."""
    pending = deque(errors)
    calls = []

    def attempt():
        calls.append(1)
        if pending:
            raise pending.popleft()
        return "ok"

    attempt.calls = calls
    return attempt


def test_retry_loop_retries_retryable_errors_with_backoff():
    sleeps, limiter = [], RecordingLimiter()
    attempt = failing(RetryableError("boom", http_status=503), RetryableError("boom", http_status=502))
    result = call_with_retries(attempt, policy=RetryPolicy(max_attempts=3, base_backoff_s=1.0, jitter=0.0),
                               limiter=limiter, what="test", sleep=sleeps.append)
    assert result == "ok"
    assert sleeps == [1.0, 2.0]  # exponential, no jitter
    assert limiter.acquired == 3  # a limiter slot before every attempt


def test_retry_loop_pauses_the_limiter_on_rate_limits_instead_of_sleeping():
    sleeps, limiter = [], RecordingLimiter()
    attempt = failing(RateLimitedError("slow down", http_status=429, retry_after=12.0),
                      RateLimitedError("slow down", http_status=429))
    call_with_retries(attempt, policy=RetryPolicy(max_attempts=3, base_backoff_s=1.0, jitter=0.0),
                      limiter=limiter, what="test", sleep=sleeps.append)
    assert limiter.penalties == [12.0, 2.0]  # the vendor's retry_after, else the backoff
    assert sleeps == []


def test_retry_loop_honours_retry_after_of_other_retryable_errors():
    sleeps = []
    attempt = failing(RetryableError("busy", http_status=503, retry_after=5.0))
    call_with_retries(attempt, policy=RetryPolicy(base_backoff_s=1.0, jitter=0.0), limiter=RecordingLimiter(),
                      what="test", sleep=sleeps.append)
    assert sleeps == [5.0]


def test_retry_loop_gives_up_after_max_attempts():
    attempt = failing(*[RetryableError("down", http_status=500)] * 5)
    with pytest.raises(RetryableError):
        call_with_retries(attempt, policy=RetryPolicy(max_attempts=3), limiter=RecordingLimiter(),
                          what="test", sleep=lambda s: None)
    assert len(attempt.calls) == 3


@pytest.mark.parametrize("error", [
    UnknownOutcomeError("sent, no answer"),
    PermanentError("bad", http_status=422),
    AuthError("nope", http_status=401),
    SuppressedError("opted out", vendor_code=33),
])
def test_retry_loop_never_retries_other_classes(error):
    attempt = failing(error)
    with pytest.raises(type(error)):
        call_with_retries(attempt, policy=RetryPolicy(max_attempts=5), limiter=RecordingLimiter(),
                          what="test", sleep=lambda s: None)
    assert len(attempt.calls) == 1


def test_retry_policy_statuses_narrow_status_only_errors():
    policy = RetryPolicy(max_attempts=5)
    assert policy.should_retry(RetryableError("x", http_status=503), 1)
    assert not policy.should_retry(RetryableError("x", http_status=501), 1)  # not worth retrying now
    assert policy.should_retry(RetryableError("x", http_status=400, vendor_code=9), 1)  # the vendor said so
    assert policy.should_retry(RetryableError("network"), 1)
    assert not policy.should_retry(RetryableError("x", http_status=503), 5)


def test_backoff_is_capped_and_jittered_downwards():
    import random

    policy = RetryPolicy(base_backoff_s=1.0, max_backoff_s=8.0, jitter=0.5)
    rng = random.Random(7)
    for attempt, cap in [(1, 1.0), (2, 2.0), (4, 8.0), (10, 8.0)]:
        delay = policy.backoff(attempt, rng)
        assert cap * 0.5 <= delay <= cap


# ------------------------------------------------------------------ a scripted HTTP server
class Script:
    """What the stub server does for each request, in order (the last step repeats)."""

    def __init__(self) -> None:
        self.steps: deque = deque()
        self.requests: list[dict] = []
        self.client_ports: list[int] = []
        self.lock = threading.Lock()

    def then(self, step) -> "Script":
        self.steps.append(step)
        return self

    def next_step(self):
        with self.lock:
            return self.steps.popleft() if len(self.steps) > 1 else self.steps[0]


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the vendors

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        script: Script = self.server.script
        step = script.next_step()
        if step == "reset_before_body":
            # Read only the headers, then abort with RST while the client is still writing.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with script.lock:
            script.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                    "body": body})
            script.client_ports.append(self.client_address[1])
        if step == "drop":  # read the whole request, then close without answering
            self.close_connection = True
            return
        if isinstance(step, tuple) and step[0] == "sleep":
            time.sleep(step[1])
            step = step[2]
        status, payload, headers = step
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(payload, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    httpd.daemon_threads = True
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def sendlane(base_url: str, **kwargs) -> SendlaneClient:
    kwargs.setdefault("retry_policy", FAST)
    kwargs.setdefault("limiter", Unlimited())
    return SendlaneClient(base_url, API_TOKEN, INTEGRATION_TOKEN, **kwargs)


def sailthru(base_url: str, **kwargs) -> SailthruClient:
    kwargs.setdefault("retry_policy", FAST)
    kwargs.setdefault("limiters", lambda endpoint, method: Unlimited())
    return SailthruClient(base_url, SAILTHRU_KEY, SAILTHRU_SECRET, **kwargs)


def refused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


OK = (200, {"data": {"message": "Successfully handled event"}}, None)


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# ------------------------------------------------------------------ Sendlane over the wire
def test_track_sends_bearer_and_body_token(server):
    server.script.then(OK)
    answer_ = sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})
    assert answer_ == {"data": {"message": "Successfully handled event"}}
    sent = server.script.requests[0]
    assert sent["path"] == "/tracking/order-placed"
    assert sent["headers"]["Authorization"] == f"Bearer {API_TOKEN}"
    assert json.loads(sent["body"]) == {"order_id": 1, "token": INTEGRATION_TOKEN}


def test_track_retries_server_errors_then_succeeds(server):
    server.script.then((503, {"message": "down"}, None)).then((500, {"message": "down"}, None)).then(OK)
    sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})
    assert len(server.script.requests) == 3


def test_rate_limit_penalizes_the_shared_limiter(server):
    server.script.then((429, {"message": "Too Many Attempts."}, None)).then(OK)
    limiter = RecordingLimiter()
    sendlane(url_of(server), limiter=limiter).track("/tracking/order-placed", {"order_id": 1})
    assert len(limiter.penalties) == 1 and limiter.penalties[0] > 0
    assert limiter.acquired == 2


def test_validation_error_is_permanent_and_not_retried(server):
    server.script.then((422, {"message": "The given data was invalid.", "errors": {"email": ["bad"]}}, None))
    with pytest.raises(PermanentError) as caught:
        sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})
    assert caught.value.http_status == 422
    assert len(server.script.requests) == 1


def test_plain_text_401_is_an_auth_error(server):
    server.script.then((401, b"Unauthorized", None))
    with pytest.raises(AuthError):
        sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})


def test_redirects_are_not_followed(server):
    server.script.then((301, b"", {"Location": "http://elsewhere.invalid/v2"}))
    with pytest.raises(PermanentError, match="redirected"):
        sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})
    assert len(server.script.requests) == 1


def test_refused_connection_never_left_so_it_is_retryable():
    client = sendlane(refused_url(), retry_policy=RetryPolicy(max_attempts=2, base_backoff_s=0.01))
    with pytest.raises(RetryableError) as caught:
        client.track("/tracking/order-placed", {"order_id": 1})
    assert type(caught.value) is RetryableError
    assert "not sent" in str(caught.value)


def test_connection_dropped_after_the_request_is_an_unknown_outcome_and_not_retried(server):
    server.script.then("drop")
    with pytest.raises(UnknownOutcomeError):
        sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})
    assert len(server.script.requests) == 1  # the server had it once: no retry


def test_drop_on_a_reused_keepalive_connection_is_still_unknown(server):
    server.script.then(OK).then("drop")
    client = sendlane(url_of(server))
    client.track("/tracking/order-placed", {"order_id": 1})
    with pytest.raises(UnknownOutcomeError):
        client.track("/tracking/order-placed", {"order_id": 2})
    ports = server.script.client_ports
    assert len(ports) == 2 and ports[0] == ports[1]  # the second request did reuse the connection


def test_read_timeout_is_an_unknown_outcome(server):
    server.script.then(("sleep", 1.0, OK))
    with pytest.raises(UnknownOutcomeError):
        sendlane(url_of(server), timeout=(2.0, 0.2)).track("/tracking/order-placed", {"order_id": 1})


def test_read_timeout_on_a_read_is_just_retryable(server):
    server.script.then(("sleep", 1.0, (200, {"data": [], "links": {"next": None}}, None)))
    with pytest.raises(RetryableError) as caught:
        list(sendlane(url_of(server), timeout=(2.0, 0.2), retry_policy=RetryPolicy(max_attempts=1))
             .iter_unsubscribed())
    assert type(caught.value) is RetryableError


def test_reset_while_the_request_is_still_being_written_is_retryable(server):
    """The server aborts after the headers, long before a 32 MB body is through: it cannot have
    acted on the request, although urllib3 reports the same ProtocolError as a drop-after-send."""
    server.script.then("reset_before_body")
    client = sendlane(url_of(server), retry_policy=RetryPolicy(max_attempts=1))
    with pytest.raises(RetryableError) as caught:
        client.track("/tracking/product-added", {"product_id": 1, "description": "x" * 32_000_000})
    assert type(caught.value) is RetryableError
    assert "not sent" in str(caught.value)


def test_idle_pooled_connections_are_retired_before_reuse(server, monkeypatch):
    server.script.then(OK)
    client = sendlane(url_of(server))
    client.track("/tracking/order-placed", {"order_id": 1})
    client.track("/tracking/order-placed", {"order_id": 2})
    monkeypatch.setattr(http_module, "KEEPALIVE_MAX_IDLE_S", 0.2)
    time.sleep(0.3)
    client.track("/tracking/order-placed", {"order_id": 3})
    first, second, third = server.script.client_ports
    assert first == second  # warm connection reused
    assert third != second  # idle too long: a fresh connection instead


class IdleClosingHandler(ScriptedHandler):
    timeout = 0.2  # the server closes a keep-alive connection idle for 0.2 s


def test_connection_closed_by_the_server_while_idle_is_not_an_unknown_outcome(server):
    """The classic false positive: the server closed the pooled connection while it sat idle. The
    pool notices before reuse and opens a fresh one, so the next POST simply goes through."""
    server.RequestHandlerClass = IdleClosingHandler
    server.script.then(OK)
    client = sendlane(url_of(server), retry_policy=RetryPolicy(max_attempts=1))
    client.track("/tracking/order-placed", {"order_id": 1})
    time.sleep(0.5)
    client.track("/tracking/order-placed", {"order_id": 2})
    first, second = server.script.client_ports
    assert first != second


def test_add_contacts_batches_by_a_thousand(server):
    server.script.then((202, {"data": {"message": "Contacts accepted for processing."}}, None))
    contacts = [{"email": f"p{i}@example.com"} for i in range(2_345)]
    answers = sendlane(url_of(server)).add_contacts("7", contacts)
    assert len(answers) == 3
    sizes = [len(json.loads(r["body"])["contacts"]) for r in server.script.requests]
    assert sizes == [1000, 1000, 345]
    assert {r["path"] for r in server.script.requests} == {"/lists/7/contacts"}


def test_iter_unsubscribed_pages_until_next_is_null(server):
    def page(n, last):
        return (200, {"data": [{"email": f"u{n}@example.com"}],
                      "links": {"next": None if last else f"/contacts/unsubscribed?page={n + 1}"}}, None)

    server.script.then(page(1, False)).then(page(2, False)).then(page(3, True))
    emails = [row["email"] for row in sendlane(url_of(server)).iter_unsubscribed(page_size=1)]
    assert emails == ["u1@example.com", "u2@example.com", "u3@example.com"]
    pages = [parse_qs(urlsplit(r["path"]).query)["page"] for r in server.script.requests]
    assert pages == [["1"], ["2"], ["3"]]


def test_track_refuses_a_non_tracking_path():
    with pytest.raises(ConfigurationError):
        sendlane("http://127.0.0.1:9").track("/lists/1/contacts", {})


CONTACT_NOT_FOUND = (422, {"message": "The selected email is invalid.",
                            "errors": {"email": ["The selected email is invalid."]}}, None)


def test_find_contact_reads_the_search_answer(server):
    server.script.then((200, {"data": {"id": 812, "email": "ann@example.com"}}, None))
    contact = sendlane(url_of(server)).find_contact("ann@example.com")
    assert contact == {"id": 812, "email": "ann@example.com"}
    sent = server.script.requests[0]
    assert sent["method"] == "GET" and urlsplit(sent["path"]).path == "/contacts/search"
    assert parse_qs(urlsplit(sent["path"]).query) == {"email": ["ann@example.com"]}


def test_find_contact_none_only_on_the_observed_not_found(server):
    server.script.then(CONTACT_NOT_FOUND)
    assert sendlane(url_of(server)).find_contact("nobody@example.com") is None


@pytest.mark.parametrize("answer", [
    (404, {"message": "Not Found"}, None),                        # a path nobody routes
    (404, b"<html><h1>404 Not Found</h1></html>", None),           # a gateway's page
    (422, {"message": "The email must be a valid email address."}, None),  # another 422
    (200, {"data": []}, None),                                     # not the shape clients read
])
def test_find_contact_raises_on_anything_else(server, answer):
    server.script.then(answer)
    with pytest.raises(PermanentError):
        sendlane(url_of(server)).find_contact("ann@example.com")


def test_delete_contact_searches_then_deletes_by_id(server):
    server.script.then((200, {"data": {"id": 812, "email": "ann@example.com"}}, None))
    server.script.then((200, {"data": {"message": "Contact deleted"}}, None))
    assert sendlane(url_of(server)).delete_contact("ann@example.com") is True
    search, delete = server.script.requests
    assert urlsplit(search["path"]).path == "/contacts/search"
    assert (delete["method"], delete["path"]) == ("DELETE", "/contacts/812")


def test_delete_contact_of_nobody_deletes_nothing(server):
    server.script.then(CONTACT_NOT_FOUND)
    assert sendlane(url_of(server)).delete_contact("nobody@example.com") is False
    assert [r["method"] for r in server.script.requests] == ["GET"]


def test_delete_contact_through_an_unrouted_search_raises(server):
    server.script.then((404, {"message": "Not Found"}, None))
    with pytest.raises(PermanentError):
        sendlane(url_of(server)).delete_contact("ann@example.com")
    assert [r["method"] for r in server.script.requests] == ["GET"]  # no guessed delete


def test_sendlane_test_connection_reports_instead_of_raising(server):
    server.script.then((200, {"data": [], "links": {"next": None}, "meta": {"total": 1}}, None))
    ok, message = sendlane(url_of(server)).test_connection()
    assert ok and "1 list" in message
    server.script.steps.clear()
    server.script.then((401, b"Unauthorized", None))
    ok, message = sendlane(url_of(server)).test_connection()
    assert not ok and "401" in message


# ------------------------------------------------------------------ Sailthru over the wire
def test_sailthru_post_is_signed_form_data(server):
    server.script.then((200, {"ok": True}, None))
    sailthru(url_of(server)).user({"id": "42", "key": "extid"})
    sent = server.script.requests[0]
    form = {k: v[0] for k, v in parse_qs(sent["body"].decode()).items()}
    assert sent["path"] == "/user"
    assert form["api_key"] == SAILTHRU_KEY and form["format"] == "json"
    assert json.loads(form["json"]) == {"id": "42", "key": "extid"}
    assert form["sig"] == sailthru(url_of(server)).sign({k: v for k, v in form.items() if k != "sig"})
    assert SAILTHRU_SECRET not in sent["body"].decode()


def test_sailthru_headers_feed_the_endpoint_throttle(server):
    reset = int(time.time()) + 30
    server.script.then((200, {"ok": True}, {"X-Rate-Limit-Limit": "300", "X-Rate-Limit-Remaining": "7",
                                            "X-Rate-Limit-Reset": str(reset)}))
    client = SailthruClient(url_of(server), SAILTHRU_KEY, SAILTHRU_SECRET, retry_policy=FAST)
    client.user({"id": "42", "key": "extid"})
    throttle = client.limiters("user", "POST")
    assert (throttle.limit, throttle.remaining) == (300, 7)
    assert client.limiters("purchase", "POST").limit == 40  # other endpoints untouched


def test_sailthru_error_43_waits_for_the_reset_then_retries(server):
    reset = int(time.time()) + 2
    server.script.then((429, {"error": 43, "errormsg": "Too many requests"},
                        {"X-Rate-Limit-Reset": str(reset)})).then((200, {"ok": True}, None))
    limiter = RecordingLimiter()
    sailthru(url_of(server), limiters=lambda e, m: limiter).purchase({"email": "a@example.com", "items": []})
    assert len(limiter.penalties) == 1 and 0 < limiter.penalties[0] <= 2.0


@pytest.mark.parametrize(("code", "expected"), [(5, AuthError), (33, SuppressedError), (11, PermanentError)])
def test_sailthru_errors_are_not_retried(server, code, expected):
    server.script.then((400, {"error": code, "errormsg": f"error {code}"}, None))
    with pytest.raises(expected):
        sailthru(url_of(server)).purchase({"email": "a@example.com", "items": []})
    assert len(server.script.requests) == 1


def test_lookup_purchase_found_and_not_found(server):
    server.script.then((200, {"purchase": {"id": "p1", "extid": "1001"}}, None))
    client = sailthru(url_of(server))
    assert client.lookup_purchase(1001)["purchase"]["extid"] == "1001"
    query = parse_qs(urlsplit(server.script.requests[0]["path"]).query)
    assert json.loads(query["json"][0]) == {"purchase_id": "1001", "purchase_key": "extid"}
    server.script.steps.clear()
    server.script.then((404, {"error": 99, "errormsg": "Purchase not found: extid=1002"}, None))
    assert client.lookup_purchase(1002) is None


def test_lookup_purchase_does_not_mistake_other_errors_for_not_found(server):
    server.script.then((400, {"error": 2, "errormsg": "Missing required parameter: purchase_id"}, None))
    with pytest.raises(PermanentError):
        sailthru(url_of(server)).lookup_purchase(1)


@pytest.mark.parametrize("answer", [
    (404, b"<html><body><h1>404 Not Found</h1></body></html>", None),  # a gateway's page
    (404, {"message": "Not Found"}, None),  # a proxy's JSON: no Sailthru error code
    (404, {"error": 99, "errormsg": "Unknown API call: purchase"}, None),  # 99, but not "not found"
    (400, {"error": 99, "errormsg": "Purchase not found"}, None),  # "not found", but not a 404
])
def test_lookups_take_only_the_documented_not_found_as_not_found(server, answer):
    server.script.then(answer)
    client = sailthru(url_of(server))
    with pytest.raises(PermanentError):
        client.lookup_purchase(1)
    with pytest.raises(PermanentError):
        client.lookup("content", {"url": "https://s.example/1"})
    server.script.steps.clear()
    server.script.then((404, {"error": 99, "errormsg": "Content not found: https://s.example/1"}, None))
    assert client.lookup("content", {"url": "https://s.example/1"}) is None
    assert client.lookup("user", {"id": "a@example.com", "key": "email"}) is None


def test_submit_and_wait_job(server):
    server.script.then((200, {"job_id": "j1", "status": "pending"}, None)) \
        .then((200, {"job_id": "j1", "status": "running"}, None)) \
        .then((200, {"job_id": "j1", "status": "completed", "imported": 2}, None))
    client = sailthru(url_of(server))
    job_id = client.submit_job("purchase_import", rows=[{"email": "a@example.com"}, {"email": "b@example.com"}])
    assert job_id == "j1"
    upload = server.script.requests[0]
    assert upload["headers"]["Content-Type"].startswith("multipart/form-data")
    assert b'{"email":"a@example.com"}\n{"email":"b@example.com"}' in upload["body"]
    polls = []
    assert client.wait_job(job_id, poll_interval_s=0.5, sleep=polls.append)["imported"] == 2
    assert polls == [0.5]


def test_wait_job_times_out_as_unknown_not_failed(server):
    server.script.then((200, {"job_id": "j1", "status": "running"}, None))
    ticks = iter(range(100))
    with pytest.raises(UnknownOutcomeError):
        sailthru(url_of(server)).wait_job("j1", timeout_s=3, sleep=lambda s: None, clock=lambda: next(ticks))


def test_sailthru_test_connection(server):
    server.script.then((404, {"error": 99, "errormsg": "Job not found: storesync-connection-test"}, None))
    assert sailthru(url_of(server)).test_connection()[0] is True
    server.script.steps.clear()
    server.script.then((401, {"error": 5, "errormsg": "Authentication failed: invalid signature"}, None))
    ok, message = sailthru(url_of(server)).test_connection()
    assert not ok and "error 5" in message
    server.script.steps.clear()
    server.script.then((404, b"<html>no such page</html>", None))  # a wrong base URL: not Sailthru
    assert sailthru(url_of(server)).test_connection()[0] is False


# ------------------------------------------------------------------ secrets
def test_secrets_stay_out_of_reprs():
    assert_no_secrets(repr(sendlane("http://127.0.0.1:9")))
    assert_no_secrets(repr(sailthru("http://127.0.0.1:9")))


def test_sendlane_secrets_masked_in_echoed_errors(server):
    echo = {"message": f"bad token {INTEGRATION_TOKEN} for Bearer {API_TOKEN}", "errors": {"token": [INTEGRATION_TOKEN]}}
    server.script.then((422, echo, None))
    with pytest.raises(PermanentError) as caught:
        sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})
    assert_no_secrets(str(caught.value))
    assert_no_secrets(json.dumps(caught.value.as_record()))
    assert "***" in str(caught.value)


def test_sailthru_get_url_secrets_masked_in_network_errors(caplog):
    caplog.set_level(logging.DEBUG)
    client = sailthru(refused_url(), retry_policy=RetryPolicy(max_attempts=2, base_backoff_s=0.01))
    with pytest.raises(RetryableError) as caught:
        client.lookup_purchase(1001)
    text = str(caught.value) + json.dumps(caught.value.as_record())
    assert_no_secrets(text)
    assert "sig=***" in text or "api_key=***" in text  # the URL was there, blanked
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert_no_secrets(caplog.text)


def test_request_log_lines_do_not_carry_query_secrets(server, caplog):
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    server.script.then((200, {"purchase": {"id": "p1"}}, None))
    client = sailthru(url_of(server))
    client.lookup_purchase(1)
    sig = parse_qs(urlsplit(server.script.requests[0]["path"]).query)["sig"][0]
    assert "purchase" in caplog.text  # urllib3 did log the request line
    assert SAILTHRU_KEY not in caplog.text and sig not in caplog.text


def test_request_log_lines_do_not_carry_emails(server, caplog):
    """A Sendlane contact search has the email in its query, a Sailthru delete the user in its
    signed ``json``: urllib3's DEBUG request lines must not show either."""
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    server.script.then((200, {"data": {"id": 812, "email": "ann@example.com"}}, None))
    server.script.then((200, {"ok": True}, None))
    sendlane(url_of(server)).find_contact("ann@example.com")
    sailthru(url_of(server)).delete_user("bob@example.com")
    assert "/contacts/search" in caplog.text and "/user" in caplog.text  # urllib3 did log them
    for email in ("ann@example.com", "bob@example.com"):
        assert email not in caplog.text and quote(email, safe="") not in caplog.text
    assert "email=***" in caplog.text and "json=***" in caplog.text


def test_redactor_blanks_values_and_secret_parameters():
    redact = make_redactor(["s3cr3t/with+chars"])
    text = "GET /x?api_key=abc&sig=0123456789abcdef&json=%7B%7D token s3cr3t%2Fwith%2Bchars and s3cr3t/with+chars"
    cleaned = redact(text)
    assert "abc" not in cleaned and "0123456789abcdef" not in cleaned and "s3cr3t" not in cleaned
    assert "json=%7B%7D" in cleaned
    # The user a Sailthru lookup or delete names inside json=, and a vendor's echo: no email survives.
    echoed = redact('DELETE /user?json=%7B%22id%22%3A%22bob%40example.com%22%7D failed: ann.o+1@shop.example.co.uk')
    assert "example" not in echoed and "bob" not in echoed and "ann" not in echoed and "json=%7B" in echoed


def test_clients_refuse_bad_configuration():
    with pytest.raises(ConfigurationError):
        SendlaneClient("api.sendlane.com/v2", API_TOKEN, INTEGRATION_TOKEN)
    with pytest.raises(ConfigurationError):
        SendlaneClient("https://api.sendlane.com/v2", "", INTEGRATION_TOKEN)
    with pytest.raises(ConfigurationError):
        SailthruClient("https://api.sailthru.com", SAILTHRU_KEY, "")


# ------------------------------------------------------------------ gateway errors to non-idempotent writes
GATEWAY_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize("status", [502, 504])
def test_sailthru_purchase_answered_by_a_gateway_error_is_an_unknown_outcome_not_retried(server, status):
    server.script.then((status, GATEWAY_BODY, None)).then((200, {"ok": True}, None))
    with pytest.raises(UnknownOutcomeError) as caught:
        sailthru(url_of(server)).purchase({"email": "a@example.com", "items": [],
                                           "purchase_keys": {"extid": "1"}})
    assert caught.value.http_status == status
    assert len(server.script.requests) == 1  # never resent blindly
    server.script.steps.clear()
    server.script.then((status, GATEWAY_BODY, None))
    with pytest.raises(UnknownOutcomeError):
        sailthru(url_of(server)).return_({"email": "a@example.com", "items": []})


@pytest.mark.parametrize("status", [500, 503])
def test_sailthru_purchase_answered_500_or_503_is_still_retried(server, status):
    server.script.then((status, GATEWAY_BODY, None)).then((200, {"ok": True}, None))
    sailthru(url_of(server)).purchase({"email": "a@example.com", "items": []})
    assert len(server.script.requests) == 2


def test_gateway_errors_to_upserts_and_reads_stay_retryable(server):
    server.script.then((502, GATEWAY_BODY, None)).then((200, {"ok": True}, None))
    sailthru(url_of(server)).user({"id": "42", "key": "extid"})
    assert len(server.script.requests) == 2
    server.script.requests.clear()
    server.script.steps.clear()
    server.script.then((504, GATEWAY_BODY, None)).then((200, {"purchase": {"extid": "1"}}, None))
    assert sailthru(url_of(server)).lookup_purchase("1") is not None
    assert len(server.script.requests) == 2


def test_sailthru_own_error_code_on_a_502_is_not_taken_for_a_gateway(server):
    server.script.then((502, {"error": 9, "errormsg": "Internal error"}, None)).then((200, {"ok": True}, None))
    sailthru(url_of(server)).purchase({"email": "a@example.com", "items": []})
    assert len(server.script.requests) == 2


@pytest.mark.parametrize("status", [502, 504])
def test_sendlane_tracking_event_answered_by_a_gateway_error_is_an_unknown_outcome(server, status):
    server.script.then((status, GATEWAY_BODY, None)).then(OK)
    with pytest.raises(UnknownOutcomeError):
        sendlane(url_of(server)).track("/tracking/order-placed", {"order_id": 1})
    assert len(server.script.requests) == 1
    server.script.requests.clear()
    server.script.steps.clear()
    server.script.then((status, GATEWAY_BODY, None)).then(OK)
    sendlane(url_of(server)).add_contacts("7", [{"email": "a@example.com"}])  # an upsert: retried
    assert len(server.script.requests) == 2
