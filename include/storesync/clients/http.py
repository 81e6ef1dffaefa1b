"""What both vendor clients share: the HTTP session, the retry policy and loop, and the rule
that sorts network failures into "never left" and "outcome unknown".

Pure Python (requests/urllib3); no Airflow.

The network rule
================

Neither vendor has an idempotency key, so the one question that matters after a network failure
is *could the vendor have received the whole request?*

| failure (as requests/urllib3 raise it)                                   | verdict            |
|--------------------------------------------------------------------------|--------------------|
| connect refused / DNS / connect timeout: ``MaxRetryError`` whose reason is a ``ConnectTimeoutError`` (``NewConnectionError`` and ``NameResolutionError`` are subclasses); requests raises ``ConnectTimeout`` or ``ConnectionError`` | never left: ``RetryableError`` |
| TLS certificate rejected (``ssl.SSLCertVerificationError``: only happens in the handshake) | never left: ``RetryableError`` |
| the socket failed while *writing* the request (broken pipe, reset, write timeout): marked ``RequestNotSentError`` by our connection class, see below | never left: ``RetryableError`` |
| read timeout (``ReadTimeout``), server closed without answering (``ProtocolError('Connection aborted.', RemoteDisconnected)``), reset while reading (``ProtocolError(..., ConnectionResetError)``), body cut short (``ChunkedEncodingError``), anything else | request left: ``UnknownOutcomeError`` (a GET, which changes nothing, is simply ``RetryableError``) |

How urllib3 hides the difference: a reset or broken pipe while *sending* is swallowed (so that an
early answer such as a 413 can still be read) and then reappears, from ``getresponse()``, as
the very same ``ProtocolError`` that a server dropping the connection *after* processing the
request produces. So the adapter mounted by ``build_session`` uses a connection class that notes
whether the request was written completely; if it was not, the read failure is re-raised as
``RequestNotSentError``, which survives urllib3's and requests' wrapping.

The keep-alive false positive: a pooled connection that the server closed while idle fails on
reuse just like a request dropped after processing. urllib3 already discards a pooled connection
whose close has arrived (``is_connection_dropped``); our connection class also refuses to reuse a
connection idle for longer than ``KEEPALIVE_MAX_IDLE_S`` (shorter than common server keep-alive
timeouts), so the close cannot race the next request. What is left after both (a close arriving in
the same instant as a request that was fully written) stays ``UnknownOutcomeError``: a false
"unknown" costs a lookup or a hold; a false "retryable" costs a duplicate order.

Gateway errors
==============

A 502 or 504 without the vendor's own error body comes from a gateway in front of the vendor: it
gave up waiting for the upstream, which may well have processed the request. For a request that
is safe to repeat (a read, an upsert) that is just retryable; for a non-idempotent write (a
Sailthru purchase or return, a Sendlane tracking event) it is an ``UnknownOutcomeError``
(``gateway_unknown_outcome``): looked up or held like a dropped connection, never resent blindly.
500 and 503 mean the vendor itself failed or refused before acting: retryable.

Retries
=======

``call_with_retries`` is the one retry loop: it takes a rate-limiter slot before every attempt
(held until the attempt's answer where the limiter can: ``HoldsUntilAnswered``),
retries ``RetryableError`` (``RateLimitedError`` included) with capped exponential backoff and
jitter, and re-raises everything else. ``UnknownOutcomeError`` is not a ``RetryableError``, so it
is never retried here: the delivery engine resolves it by lookup or holds it. After a 429 the
limiter is penalized for the vendor's ``retry_after`` (or the backoff), which stops *every*
sender sharing that limiter, not just this thread.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError

from storesync.core.errors import (
    ConfigurationError,
    DeliveryError,
    RateLimitedError,
    RetryableError,
    UnknownOutcomeError,
)
from storesync.core.throttle import HoldsUntilAnswered, RateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")

KEEPALIVE_MAX_IDLE_S = 4.0
DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
USER_AGENT = "storesync/0.1 (+python-requests)"


# --------------------------------------------------------------------------------------------
# Retry policy and loop
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request is retried in-line before the failure goes back to the caller.

    ``retryable_statuses`` are the HTTP statuses worth retrying within seconds. Which errors are
    retryable at all is the vendor's classification (``RetryableError``); this only narrows it:
    a ``RetryableError`` that rests on its HTTP status alone (no vendor error code), e.g. a 501,
    is handed straight back for the next run instead of being hammered now. A vendor error code
    the classifier called retryable (Sailthru 9 or 43) is retried whatever the status.
    """

    max_attempts: int = 4
    base_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    jitter: float = 0.5  # share of each backoff that is randomized: 0 = none, 1 = "full jitter"
    retryable_statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 500, 502, 503, 504}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def should_retry(self, error: DeliveryError, attempt: int) -> bool:
        """May the request that just failed with ``error`` on attempt ``attempt`` be sent again?"""
        if not isinstance(error, RetryableError) or attempt >= self.max_attempts:
            return False
        status_alone = error.vendor_code is None and error.http_status is not None
        return not status_alone or error.http_status in self.retryable_statuses

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        capped = min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1))
        return capped * (1.0 - self.jitter * rng.random())


def call_with_retries(
    attempt_once: Callable[[], T],
    *,
    policy: RetryPolicy,
    limiter: RateLimiter,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``attempt_once`` until it returns, or raises something ``policy`` does not retry.

    ``what`` names the request in log lines (e.g. ``"sendlane POST /tracking/order-placed"``);
    it must not contain secrets.
    """
    rng = rng or random.Random()
    attempt = 1
    while True:
        settle = _admit(limiter)
        try:
            try:
                return attempt_once()
            finally:
                settle()
        except DeliveryError as error:
            if not policy.should_retry(error, attempt):
                raise
            delay = policy.backoff(attempt, rng)
            if isinstance(error, RateLimitedError):
                pause = error.retry_after if error.retry_after is not None else delay
                log.warning("%s: rate limited (HTTP %s), pausing every sender for %.1fs (attempt %d/%d)",
                            what, error.http_status, pause, attempt, policy.max_attempts)
                limiter.penalize(pause)
            else:
                delay = max(delay, error.retry_after or 0.0)
                log.warning("%s: %s (HTTP %s, code %s), retrying in %.1fs (attempt %d/%d): %s",
                            what, error.error_class, error.http_status, error.vendor_code, delay,
                            attempt, policy.max_attempts, error)
                sleep(delay)
            attempt += 1


def _admit(limiter: RateLimiter) -> Callable[[], None]:
    """Take a slot for one attempt; return what to call once it is over. A limiter that can
    (``HoldsUntilAnswered``) counts the attempt until its answer, so no delay between admission
    and the vendor can push the account over its budget."""
    if isinstance(limiter, HoldsUntilAnswered):
        return limiter.acquire_until_answered()
    limiter.acquire()
    return _nothing


def _nothing() -> None:
    return None


# --------------------------------------------------------------------------------------------
# Session with an outcome-aware connection pool
# --------------------------------------------------------------------------------------------
class RequestNotSentError(ConnectionError):
    """The socket failed before the whole request was written: the vendor cannot have acted on it.

    A ``ConnectionError`` (so an ``OSError``) on purpose: urllib3 and requests wrap it like any
    socket error, and ``transport_error`` finds it again inside the wrapping.
    """


# Errnos urllib3 swallows while sending, hoping to read an early answer (see its _make_request).
_SWALLOWED_SEND_ERRNOS = {errno.EPIPE, errno.ECONNRESET, errno.EPROTOTYPE}


class _OutcomeAwareConnectionMixin:
    """Notes whether the request was completely written, and retires connections idle too long."""

    request_fully_sent = False
    _idle_since = float("inf")

    def connect(self) -> None:
        super().connect()
        self._idle_since = time.monotonic()

    def request(self, *args, **kwargs) -> None:
        self.request_fully_sent = False
        try:
            super().request(*args, **kwargs)
        except OSError as exc:
            if exc.errno in _SWALLOWED_SEND_ERRNOS:
                raise  # urllib3 swallows it and reads; getresponse() below reports the verdict
            raise RequestNotSentError(f"sending the request failed: {type(exc).__name__}") from exc
        self.request_fully_sent = True

    def getresponse(self):
        try:
            response = super().getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if self.request_fully_sent:
                raise
            raise RequestNotSentError(
                f"the connection failed before the request was fully written ({type(exc).__name__})"
            ) from exc
        self._idle_since = time.monotonic()
        return response

    @property
    def is_connected(self) -> bool:
        if self.sock is not None and time.monotonic() - self._idle_since > KEEPALIVE_MAX_IDLE_S:
            return False  # urllib3 then closes it and opens a fresh one
        return super().is_connected


class _OutcomeAwareHTTPConnection(_OutcomeAwareConnectionMixin, HTTPConnection):
    pass


class _OutcomeAwareHTTPSConnection(_OutcomeAwareConnectionMixin, HTTPSConnection):
    pass


class _OutcomeAwareHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _OutcomeAwareHTTPConnection


class _OutcomeAwareHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _OutcomeAwareHTTPSConnection


class _OutcomeAwareAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _OutcomeAwareHTTPConnectionPool,
            "https": _OutcomeAwareHTTPSConnectionPool,
        }


def build_session(pool_size: int) -> requests.Session:
    """A session whose pool holds ``pool_size`` connections per host: size it to the number of
    threads sending, so that each keeps a warm connection and none waits for one.

    urllib3 itself never retries (``max_retries=0``): one request is one unit of retry, owned by
    ``call_with_retries``. The pool blocks rather than opening throwaway extra connections.
    """
    if pool_size < 1:
        raise ValueError("pool_size must be at least 1")
    _redact_urllib3_request_log()
    session = requests.Session()
    adapter = _OutcomeAwareAdapter(pool_connections=4, pool_maxsize=pool_size, pool_block=True, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def ensure_pool_size(session: requests.Session, pool_size: int) -> None:
    """Grow the session's pool to ``pool_size`` connections per host (never shrinks it): the
    pool blocks, so a pool smaller than the threads sending would hold the extra threads back.
    Call before the threads start."""
    for prefix in ("http://", "https://"):
        adapter = session.adapters.get(prefix)
        if isinstance(adapter, _OutcomeAwareAdapter) and adapter._pool_maxsize < pool_size:
            session.mount(prefix, _OutcomeAwareAdapter(pool_connections=4, pool_maxsize=pool_size,
                                                       pool_block=True, max_retries=0))
            adapter.close()


# --------------------------------------------------------------------------------------------
# Classifying transport failures
# --------------------------------------------------------------------------------------------
def _wrapped_errors(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps: requests and urllib3 nest them in ``args``,
    ``reason`` (``MaxRetryError``) and ``__cause__``."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        if current.__cause__ is not None:
            pending.append(current.__cause__)


def request_never_left(exc: BaseException) -> bool:
    """True when the failure certainly happened before the vendor had the whole request."""
    return any(
        isinstance(inner, (ConnectTimeoutError, RequestNotSentError, ssl.SSLCertVerificationError))
        for inner in _wrapped_errors(exc)
    )


GATEWAY_STATUSES = frozenset({502, 504})


def gateway_unknown_outcome(error: DeliveryError | None, *, idempotent: bool) -> DeliveryError | None:
    """``error`` unless it is a gateway's 502/504 (no vendor error code) to a non-idempotent
    request: then an ``UnknownOutcomeError`` carrying the same status and detail."""
    if (idempotent or error is None or not isinstance(error, RetryableError)
            or error.http_status not in GATEWAY_STATUSES or error.vendor_code is not None):
        return error
    return UnknownOutcomeError(
        f"gateway error (HTTP {error.http_status}) to a non-idempotent request: the vendor may have "
        f"processed it: {error}",
        http_status=error.http_status, vendor_message=error.vendor_message)


def transport_error(
    exc: requests.RequestException, *, changes_state: bool, redact: Callable[[str], str]
) -> DeliveryError:
    """Sort a failure without an HTTP answer by the network rule in this module's docstring.

    ``changes_state`` is False for reads (GET): resending one cannot duplicate anything, so a
    read that got no answer is plainly retryable.
    """
    detail = redact(f"{type(exc).__name__}: {exc}")
    if request_never_left(exc):
        return RetryableError(f"request not sent: {detail}", vendor_message=detail)
    if not changes_state:
        return RetryableError(f"no answer to a read: {detail}", vendor_message=detail)
    return UnknownOutcomeError(f"request sent, no answer: {detail}", vendor_message=detail)


# --------------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------------
_SECRET_PARAM = re.compile(r"(?i)\b(api_key|sig|secret|token|password|email)=([^&\s'\"]+)")
# Sailthru's signed ``json=`` parameter names the user (``{"id": email}``) on lookups and deletes:
# blanked whole from urllib3's request lines (exception messages keep it, emails blanked).
_LOGGED_PARAM = re.compile(r"(?i)\b(json)=([^&\s'\"]+)")
MASK = "***"
# An email anywhere in an error text (a vendor's echo, a URL's signed json= naming the user),
# plain or URL-encoded: personal data, blanked to its domain-free mask.
_EMAIL = re.compile(r"[\w.+-]+(?:@|%40|%2540)[\w-]+(?:\.[\w-]+)+")
MIN_REDACTED_LENGTH = 4  # shorter secrets are not blanked verbatim (make_redactor says why)


def _blank_secret_params(text: str) -> str:
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)


class _SecretParamLogFilter(logging.Filter):
    """urllib3 logs every request line at DEBUG, and a Sailthru GET's URL holds ``api_key`` and
    ``sig`` (and the user in ``json``), a Sendlane contact search the ``email``: blank them before
    any handler sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_LOGGED_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", _blank_secret_params(a))
                                if isinstance(a, str) else a for a in record.args)
        return True


def _redact_urllib3_request_log() -> None:
    request_log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _SecretParamLogFilter) for f in request_log.filters):
        request_log.addFilter(_SecretParamLogFilter())


def make_redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that blanks every given secret, and any ``api_key=``/``sig=``/``token=``-style
    URL or form parameter, and every email (``email=``, or inside ``json=``: personal data), out of
    a text (exception messages, vendor echoes)."""
    # Longest first, so a secret that contains another is blanked whole. A value shorter than
    # MIN_REDACTED_LENGTH is not blanked verbatim: "t" would cut every t out of the message
    # ("***he API ***oken") and hide nothing a guess would not find (the alerts' scrub and
    # Airflow's masker skip short values too); api_key=/sig=/token= parameters are blanked anyway.
    values = sorted({s for s in secrets if s and len(s) >= MIN_REDACTED_LENGTH}, key=len, reverse=True)

    def redact(text: str) -> str:
        for value in values:
            text = text.replace(value, MASK)
            encoded = quote(value, safe="")
            if encoded != value:
                text = text.replace(encoded, MASK)
        return _EMAIL.sub(MASK, _blank_secret_params(text))

    return redact


def scrubbed(error: DeliveryError, redact: Callable[[str], str]) -> DeliveryError:
    """``error`` with its message and vendor message passed through ``redact`` (in place)."""
    error.args = tuple(redact(a) if isinstance(a, str) else a for a in error.args)
    if error.vendor_message:
        error.vendor_message = redact(error.vendor_message)
    return error


def parse_json_body(response: requests.Response) -> object | None:
    """The response body as JSON, or None when it is empty or not JSON (Sendlane's 401 is text)."""
    if not response.content:
        return None
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def base_url_from_parts(host: str | None, port: int | None, path: str | None, default: str) -> str:
    """A vendor base URL from connection-style parts.

    ``host`` may be a whole URL (``http://127.0.0.1:8765/sendlane/v2``), used as is; a bare host
    name gets ``https://``, the port and ``path``; nothing at all means the vendor's real URL.
    """
    if not host:
        return default.rstrip("/")
    if "://" in host:
        return host.rstrip("/")
    netloc = f"{host}:{port}" if port else host
    suffix = f"/{path.strip('/')}" if path and path.strip("/") else ""
    return f"https://{netloc}{suffix}"


def check_base_url(base_url: str, vendor: str) -> str:
    if not re.match(r"^https?://[^/\s]+", base_url or ""):
        raise ConfigurationError(f"{vendor} base URL must start with http:// or https://, got {base_url!r}")
    return base_url.rstrip("/")


__all__ = [
    "DEFAULT_TIMEOUT",
    "KEEPALIVE_MAX_IDLE_S",
    "RequestNotSentError",
    "RetryPolicy",
    "base_url_from_parts",
    "build_session",
    "call_with_retries",
    "check_base_url",
    "gateway_unknown_outcome",
    "make_redactor",
    "parse_json_body",
    "request_never_left",
    "scrubbed",
    "transport_error",
]
