"""Sailthru API client: purchases, returns, content, user profiles, jobs.

Pure Python; no Airflow. Every request carries ``api_key``, ``format=json``, ``json=<the request
as a JSON string>`` and ``sig``, form-encoded for POST and in the query string for GET. ``sig`` is
the MD5 of the shared secret followed by the sorted string values of the other parameters (the
official ``sailthru-client``'s ``get_signature_hash``); the secret itself is never sent.

Rate limits are per account, endpoint and method, and announced on every response
(``X-Rate-Limit-Limit/-Remaining/-Reset``): by default each (endpoint, method) gets its own
``HeaderThrottle``, fed from the headers of every answer, errors included.

Error classification (``classify_sailthru_response``; network failures by the rule in
``storesync.clients.http``). The body's ``error`` code decides when there is one; the HTTP status
only when there is not:

| Sailthru answer                              | error class            | why                                    |
|----------------------------------------------|------------------------|----------------------------------------|
| 2xx without an ``error`` code                 | none                   | accepted                               |
| error 43, or HTTP 429                         | ``RateLimitedError``   | over the per-minute limit; ``retry_after`` = ``X-Rate-Limit-Reset`` minus now |
| error 9, or HTTP 5xx                          | ``RetryableError``     | Sailthru's internal error              |
| HTTP 502/504 without an error code to a POST of ``purchase``, ``return`` or ``job`` | ``UnknownOutcomeError`` | a gateway timed out; Sailthru may have recorded it (``gateway_unknown_outcome``) |
| error 3, 4, 5                                 | ``AuthError``          | bad API key, IP not allowed, bad signature: stop the run and alert |
| error 32–37                                   | ``SuppressedError``    | opted out / not emailable: record, never retry |
| error 2, 6, 11, 14, 15, 18, 42, 99, any other code; other 4xx | ``PermanentError`` | the request itself is wrong: dead-letter it |
| 404 with error 99 saying "not found", to a lookup GET | ``None`` from ``lookup*`` | the documented not-found (``is_documented_not_found``); a 404 without that body is a ``PermanentError``, never "not found" |
| connect error / connect timeout / write failed | ``RetryableError``    | the request never left                 |
| read timeout, reset or close after sending   | ``UnknownOutcomeError`` | a purchase may have been recorded: ``lookup_purchase`` by extid resolves it |

Purchases are neither editable nor idempotent: a second POST of the same order is a second
purchase. Hence ``lookup_purchase(extid)`` (``GET /purchase`` with ``purchase_key=extid``), which
the delivery engine calls after an unknown outcome before it dares to resend.

Secrets never appear in exceptions, logs or ``repr``: messages pass through a redactor that blanks
the API key, the secret and any ``sig=``/``api_key=`` parameter (a GET's URL holds both).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import requests

from storesync.clients.http import (
    DEFAULT_TIMEOUT,
    RetryPolicy,
    build_session,
    call_with_retries,
    check_base_url,
    ensure_pool_size,
    gateway_unknown_outcome,
    make_redactor,
    parse_json_body,
    scrubbed,
    transport_error,
)
from storesync.core.config import SecretStr
from storesync.core.errors import (
    AuthError,
    ConfigurationError,
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SuppressedError,
    UnknownOutcomeError,
)
from storesync.core.throttle import HeaderThrottle, ObservesResponses, PerEndpointLimiters, RateLimiter

SAILTHRU_BASE_URL = "https://api.sailthru.com"
DEFAULT_BUDGET_PER_MINUTE = 40  # the published ceiling of most POSTs; headers refine it at once

AUTH_CODES = frozenset({3, 4, 5})
SUPPRESSED_CODES = frozenset(range(32, 38))
RETRYABLE_CODES = frozenset({9})
RATE_LIMITED_CODE = 43
JOB_FAILED_STATUSES = frozenset({"failed", "error", "expired", "cancelled"})
# Writes that count twice when repeated (a purchase, a return, a job); user and content are upserts.
NON_IDEMPOTENT_POSTS = frozenset({"purchase", "return", "job"})


def sailthru_signature(params: dict, secret: str) -> str:
    """The request signature, as the official client computes it: MD5 of the secret followed by
    every parameter value (nested values included, ``sig`` excluded) as strings, sorted."""
    values = sorted(str(value) for value in _leaf_values({k: v for k, v in params.items() if k != "sig"}))
    return hashlib.md5((secret + "".join(values)).encode("utf-8")).hexdigest()


def _leaf_values(value) -> Iterable:
    if isinstance(value, dict):
        for inner in value.values():
            yield from _leaf_values(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _leaf_values(inner)
    else:
        yield value


def classify_sailthru_response(response: requests.Response, now: float | None = None) -> DeliveryError | None:
    """The error class for one Sailthru HTTP answer (None for success): the table above."""
    status = response.status_code
    body = parse_json_body(response)
    code = _error_code(body)
    if code is None and 200 <= status < 300:
        return None
    if code is not None:
        detail = str(body.get("errormsg") or "no error message")[:2000]
    else:
        detail = (response.text.strip()[:500] if response.content else "") or response.reason or "no detail"
    fields = {"http_status": status, "vendor_code": code, "vendor_message": detail}
    label = f"HTTP {status}" + (f", error {code}" if code is not None else "")
    if code == RATE_LIMITED_CODE or (code is None and status == 429):
        return RateLimitedError(f"Sailthru rate limit hit ({label}): {detail}",
                                retry_after=_seconds_until_reset(response, now), **fields)
    if code in RETRYABLE_CODES or (code is None and status >= 500):
        return RetryableError(f"Sailthru server error ({label}): {detail}", **fields)
    if code in AUTH_CODES:
        return AuthError(f"Sailthru refused the credentials ({label}): {detail}", **fields)
    if code in SUPPRESSED_CODES:
        return SuppressedError(f"Sailthru will not email this person ({label}): {detail}", **fields)
    return PermanentError(f"Sailthru rejected the request ({label}): {detail}", **fields)


NOT_FOUND_CODE = 99


def is_documented_not_found(error: DeliveryError) -> bool:
    """Is this Sailthru's documented "no such object": HTTP 404 with a Sailthru error body, code
    99, whose message says not found? A 404 without that body (a gateway's page, a proxy's JSON),
    an error 99 for anything else ("Unknown API call", a key conflict) and every other error are
    not: they say nothing about whether the object exists."""
    return (error.http_status == 404 and error.vendor_code == NOT_FOUND_CODE
            and "not found" in str(error.vendor_message or "").lower())


def _error_code(body: object) -> int | None:
    if not isinstance(body, dict) or body.get("error") in (None, ""):
        return None
    try:
        return int(body["error"])
    except (TypeError, ValueError):
        return None


def _seconds_until_reset(response: requests.Response, now: float | None) -> float | None:
    try:
        reset_at = float(response.headers["X-Rate-Limit-Reset"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, reset_at - (time.time() if now is None else now))


class SailthruClient:
    """One Sailthru account. Thread-safe: share one client between the threads that send.

    ``limiters`` maps (endpoint, method) to the limiter for it; by default a ``HeaderThrottle``
    per pair, starting from ``DEFAULT_BUDGET_PER_MINUTE`` until Sailthru's headers say more.
    """

    def __init__(
        self,
        base_url: str = SAILTHRU_BASE_URL,
        api_key: str = "",
        secret: str = "",
        *,
        limiters: Callable[[str, str], RateLimiter] | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        pool_size: int = 8,
        session: requests.Session | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key or not secret:
            raise ConfigurationError("Sailthru needs an API key and its shared secret")
        self.base_url = check_base_url(base_url, "Sailthru")
        self._api_key = SecretStr(api_key)
        self._secret = SecretStr(secret)
        self.limiters = limiters or PerEndpointLimiters(lambda: HeaderThrottle(DEFAULT_BUDGET_PER_MINUTE))
        self.retry_policy = retry_policy or RetryPolicy()
        self.timeout = timeout
        self.session = session or build_session(pool_size)
        self._rng = rng or random.Random()
        self._redact = make_redactor([api_key, secret])

    def __repr__(self) -> str:
        return f"SailthruClient(base_url={self.base_url!r})"

    def ensure_pool_size(self, pool_size: int) -> None:
        """At least ``pool_size`` connections to the vendor (one per sending thread)."""
        ensure_pool_size(self.session, pool_size)

    def close(self) -> None:
        self.session.close()

    # ---------------------------------------------------------------- signing and transport
    def sign(self, params: dict) -> str:
        return sailthru_signature(params, self._secret.reveal())

    def _signed_params(self, data: dict) -> dict:
        params = {
            "api_key": self._api_key.reveal(),
            "format": "json",
            # ASCII-only JSON: nothing for the vendor to reject as invalid UTF-8 (errors 6/42).
            "json": json.dumps(data, separators=(",", ":"), allow_nan=False),
        }
        params["sig"] = self.sign(params)
        return params

    def _request(self, method: str, endpoint: str, data: dict, *, files: dict | None = None,
                 policy: RetryPolicy | None = None) -> dict:
        endpoint = endpoint.strip("/")
        url = f"{self.base_url}/{endpoint}"
        limiter = self.limiters(endpoint, method)
        changes_state = method != "GET"
        idempotent = not changes_state or endpoint not in NON_IDEMPOTENT_POSTS

        params = self._signed_params(data)

        def attempt_once() -> dict:
            try:
                response = self.session.request(
                    method, url,
                    # GET and DELETE carry their signed parameters in the query, as Sailthru's clients do.
                    params=params if method in ("GET", "DELETE") else None,
                    data=params if method not in ("GET", "DELETE") else None,
                    files=files, headers={"Accept": "application/json"},
                    timeout=self.timeout, allow_redirects=False,
                )
            except requests.RequestException as exc:
                # ``from None``: the original exception's text holds the URL, signature included.
                raise transport_error(exc, changes_state=changes_state, redact=self._redact) from None
            if isinstance(limiter, ObservesResponses):
                limiter.observe(response.headers)
            error = gateway_unknown_outcome(classify_sailthru_response(response), idempotent=idempotent)
            if error is not None:
                raise scrubbed(error, self._redact)
            body = parse_json_body(response)
            return body if isinstance(body, dict) else {}

        return call_with_retries(
            attempt_once,
            policy=policy or self.retry_policy,
            limiter=limiter,
            what=f"sailthru {method} /{endpoint}",
            rng=self._rng,
        )

    def post(self, endpoint: str, data: dict) -> dict:
        return self._request("POST", endpoint, data)

    def get(self, endpoint: str, data: dict) -> dict:
        return self._request("GET", endpoint, data)

    # ---------------------------------------------------------------- API
    def purchase(self, payload: dict) -> dict:
        """Record a purchase (or, with ``incomplete: 1``, replace the cart). Not idempotent."""
        return self.post("purchase", payload)

    def lookup_purchase(self, extid: str | int) -> dict | None:
        """Sailthru's answer for the purchase recorded with ``purchase_keys.extid == extid``, or None
        on Sailthru's documented not-found (``is_documented_not_found``). Any other failure, a
        generic 404 included, raises: it says nothing about the purchase.

        None proves nothing alone: an account or gateway that does not route ``GET /purchase``
        can answer the documented shape for everything. Callers trust it only from a lookup path
        that found a purchase known to exist (``storesync.pipeline.senders``)."""
        return self.lookup("purchase", {"purchase_id": str(extid), "purchase_key": "extid"})

    def lookup(self, endpoint: str, data: dict) -> dict | None:
        """A signed GET of one object (``purchase``, ``content``, ``user``): the answer, or None on
        the documented not-found; every other error raises."""
        try:
            return self.get(endpoint, data)
        except PermanentError as error:
            if is_documented_not_found(error):
                return None
            raise

    def return_(self, payload: dict) -> dict:
        """Record returned or refunded items (``return`` is a Python keyword)."""
        return self.post("return", payload)

    def content(self, payload: dict) -> dict:
        """Upsert one catalog item, keyed by its ``url``."""
        return self.post("content", payload)

    def user(self, payload: dict) -> dict:
        """Upsert one user profile."""
        return self.post("user", payload)

    def delete_user(self, id_value: str, key: str = "email") -> bool:
        """``DELETE /user``: delete a profile (GDPR/CCPA). True when deleted, False on Sailthru's
        documented not-found (nothing to delete); any other error raises."""
        try:
            self._request("DELETE", "user", {"id": str(id_value), "key": key})
        except PermanentError as error:
            if is_documented_not_found(error):
                return False
            raise
        return True

    def submit_job(self, job: str, *, rows: Iterable[dict] | None = None, **data) -> str:
        """Start an asynchronous job (``purchase_import``, ``content_update``…) and return its id.

        ``rows`` are uploaded as the job's ``file``, one JSON object per line (outside the
        signature, as the official client does); other keyword arguments go in the request.
        """
        files = None
        if rows is not None:
            lines = "\n".join(json.dumps(row, separators=(",", ":"), allow_nan=False) for row in rows)
            files = {"file": ("rows.json", lines.encode("utf-8"), "application/json")}
        body = self._request("POST", "job", {"job": job, **data}, files=files)
        job_id = body.get("job_id")
        if not job_id:
            raise UnknownOutcomeError(f"Sailthru accepted the {job} job without returning a job_id",
                                      vendor_message=str(body)[:500])
        return str(job_id)

    def wait_job(self, job_id: str, *, poll_interval_s: float = 5.0, timeout_s: float = 3600.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict:
        """Poll ``GET /job`` until the job completes; return Sailthru's final answer.

        A job still running at ``timeout_s`` raises ``UnknownOutcomeError``: it may yet finish,
        so it must be polled again, never submitted again.
        """
        deadline = clock() + timeout_s
        while True:
            body = self.get("job", {"job_id": job_id})
            status = str(body.get("status", "")).lower()
            if status == "completed":
                return body
            if status in JOB_FAILED_STATUSES:
                raise PermanentError(f"Sailthru job {job_id} ended {status}", vendor_message=str(body)[:2000])
            if clock() >= deadline:
                raise UnknownOutcomeError(
                    f"Sailthru job {job_id} still {status or 'unknown'} after {timeout_s:g}s"
                )
            sleep(poll_interval_s)

    def test_connection(self) -> tuple[bool, str]:
        """One signed read, no retries: ``GET /job`` for a job id that cannot exist. Sailthru checks
        the key and the signature before it looks the job up, so any coded answer other than the
        credential errors (3, 4, 5), "job not found" included, proves both."""
        try:
            self._request("GET", "job", {"job_id": "storesync-connection-test"},
                          policy=replace(self.retry_policy, max_attempts=1))
        except PermanentError as error:
            if error.vendor_code is None:  # not Sailthru answering: a wrong base URL, a proxy
                return False, str(error)
        except DeliveryError as error:  # AuthError included
            return False, str(error)
        return True, f"Connected to Sailthru at {self.base_url}: API key and signature accepted"


__all__ = [
    "SAILTHRU_BASE_URL",
    "is_documented_not_found",
    "SailthruClient",
    "classify_sailthru_response",
    "sailthru_signature",
]
