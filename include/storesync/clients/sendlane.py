"""Sendlane API v2 client: e-commerce tracking events, list contacts, unsubscribes.

Pure Python; no Airflow. Authentication is two credentials: the API v2 token as
``Authorization: Bearer <token>`` on every request, and the custom integration token as the
JSON body field ``token`` on every ``/tracking/*`` request (``track`` adds it).

Error classification (``classify_sendlane_response``; network failures by the rule in
``storesync.clients.http``):

| Sendlane answer                               | error class           | why                                      |
|-----------------------------------------------|-----------------------|------------------------------------------|
| 2xx                                           | none                  | accepted (not yet processed)             |
| 429                                           | ``RateLimitedError``  | account over 240/min; no Retry-After is sent, so the retry loop backs off and pauses the shared limiter |
| 5xx, 408                                      | ``RetryableError``    | the vendor failed, or never got the whole request |
| 502/504 to a ``/tracking/*`` event            | ``UnknownOutcomeError`` | a gateway timed out; Sendlane may have recorded the event (``gateway_unknown_outcome``); list contacts are upserts and stay retryable |
| 401 (often plain text, not JSON)              | ``AuthError``         | bad API token: every request would fail  |
| 403                                           | ``AuthError``         | locked out after too many errors: stop, alert, let the lockout lapse |
| 400, 422                                      | ``PermanentError``    | validation; the field errors are kept in ``vendor_message`` |
| 3xx                                           | ``PermanentError``    | redirects are not followed (a POST would turn into a GET): the base URL is wrong |
| other 4xx (404 for an unknown tracking path…) | ``PermanentError``    | resending the same request cannot help   |
| connect error / connect timeout / write failed | ``RetryableError``   | the request never left                   |
| read timeout, reset or close after sending    | ``UnknownOutcomeError`` | Sendlane may have recorded it; it has no lookup of events, so the engine holds it or settles it by a rule (``storesync.delivery.settle``) |
| 422 "The selected email is invalid." to ``GET /contacts/search`` | ``None`` from ``find_contact`` | the not-found public clients observe (``is_contact_not_found``); a 404 or any other answer raises |

Secrets never appear in exceptions, logs or ``repr``: messages pass through a redactor that
blanks both tokens (the bearer token and the body ``token``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
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
)
from storesync.core.throttle import RateLimiter, TokenBucket


SENDLANE_BASE_URL = "https://api.sendlane.com/v2"
MAX_CONTACTS_PER_REQUEST = 1000  # the only batch write; Sendlane's ceiling per call
DEFAULT_BUDGET_PER_MINUTE = 200  # Sendlane allows 240/min per account: stay under it


def classify_sendlane_response(response: requests.Response) -> DeliveryError | None:
    """The error class for one Sendlane HTTP answer (None for success): the table above."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    body = parse_json_body(response)
    detail = _error_detail(body) if body is not None else response.text.strip()[:500]
    detail = detail or response.reason or "no detail"
    fields = {"http_status": status, "vendor_message": detail}
    if status == 429:
        return RateLimitedError(f"Sendlane rate limit hit (HTTP 429): {detail}", **fields)
    if status >= 500 or status == 408:
        return RetryableError(f"Sendlane server error (HTTP {status}): {detail}", **fields)
    if status == 401:
        return AuthError(f"Sendlane refused the API token (HTTP 401): {detail}", **fields)
    if status == 403:
        return AuthError(
            f"Sendlane refused the request (HTTP 403): the account may be locked out after too many "
            f"errors; stop and let the lockout lapse: {detail}",
            **fields,
        )
    if 300 <= status < 400:
        location = response.headers.get("Location", "?")
        return PermanentError(f"Sendlane redirected (HTTP {status}) to {location}: check the base URL",
                              **fields)
    return PermanentError(f"Sendlane rejected the request (HTTP {status}): {detail}", **fields)


CONTACT_NOT_FOUND_MESSAGE = "The selected email is invalid."


def is_contact_not_found(error: DeliveryError) -> bool:
    """Is this the answer public clients treat as "no contact with that email" from
    ``GET /contacts/search``: HTTP 422 whose message is Laravel's ``exists`` failure, "The selected
    email is invalid." (WP Fusion's Sendlane module). A 404, a gateway page or any other 422 (a
    malformed email) is not: it says nothing about the contact."""
    message = (error.vendor_message or "").strip()
    return error.http_status == 422 and message.startswith(CONTACT_NOT_FOUND_MESSAGE)


def _error_detail(body: object) -> str:
    """``message: field: problem; field: problem`` from either of Sendlane's error shapes:
    ``{"data": {"message", "errors": [...]}}`` or ``{"message", "errors": {field: [...]}}``."""
    if not isinstance(body, dict):
        return str(body)[:500]
    data = body.get("data") if isinstance(body.get("data"), dict) else body
    message = data.get("message") or body.get("message") or ""
    errors = data.get("errors", body.get("errors"))
    if isinstance(errors, dict):
        problems = [
            f"{name}: {', '.join(map(str, issues)) if isinstance(issues, list) else issues}"
            for name, issues in errors.items()
        ]
    elif isinstance(errors, list):
        problems = [str(issue) for issue in errors]
    else:
        problems = []
    return "; ".join(part for part in [str(message), *problems] if part)[:2000]


class SendlaneClient:
    """One Sendlane account. Thread-safe: share one client between the threads that send."""

    def __init__(
        self,
        base_url: str = SENDLANE_BASE_URL,
        api_token: str = "",
        integration_token: str = "",
        *,
        limiter: RateLimiter | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        pool_size: int = 8,
        session: requests.Session | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_token:
            raise ConfigurationError("Sendlane needs an API v2 token")
        self.base_url = check_base_url(base_url, "Sendlane")
        self._api_token = SecretStr(api_token)
        self._integration_token = SecretStr(integration_token)
        self.limiter = limiter or TokenBucket(DEFAULT_BUDGET_PER_MINUTE)
        self.retry_policy = retry_policy or RetryPolicy()
        self.timeout = timeout
        self.session = session or build_session(pool_size)
        self._rng = rng or random.Random()
        self._redact = make_redactor([api_token, integration_token])

    def __repr__(self) -> str:
        return f"SendlaneClient(base_url={self.base_url!r})"

    def ensure_pool_size(self, pool_size: int) -> None:
        """At least ``pool_size`` connections to the vendor (one per sending thread)."""
        ensure_pool_size(self.session, pool_size)

    def close(self) -> None:
        self.session.close()

    # ---------------------------------------------------------------- transport
    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: dict | None = None,
        params: dict | None = None,
        policy: RetryPolicy | None = None,
    ) -> dict:
        url = f"{self.base_url}/{path.lstrip('/')}"
        headers = {
            "Authorization": f"Bearer {self._api_token.reveal()}",
            "Accept": "application/json",
        }
        changes_state = method != "GET"
        # Tracking events are not idempotent (an order placed twice counts twice); contacts are upserts.
        idempotent = not changes_state or not path.lstrip("/").startswith("tracking/")

        def attempt_once() -> dict:
            try:
                response = self.session.request(
                    method, url, json=json_body, params=params, headers=headers,
                    timeout=self.timeout, allow_redirects=False,
                )
            except requests.RequestException as exc:
                # ``from None``: the original exception's text holds the URL and, for some failures,
                # request details; the redacted detail is kept in the message instead.
                raise transport_error(exc, changes_state=changes_state, redact=self._redact) from None
            error = gateway_unknown_outcome(classify_sendlane_response(response), idempotent=idempotent)
            if error is not None:
                raise scrubbed(error, self._redact)
            body = parse_json_body(response)
            return body if isinstance(body, dict) else {}

        return call_with_retries(
            attempt_once,
            policy=policy or self.retry_policy,
            limiter=self.limiter,
            what=f"sendlane {method} /{path.lstrip('/')}",
            rng=self._rng,
        )

    # ---------------------------------------------------------------- API
    def track(self, path: str, payload: dict) -> dict:
        """POST one e-commerce event (``path`` from the event-path map, e.g.
        ``/tracking/order-placed``); the integration token is added as body ``token``."""
        if not self._integration_token:
            raise ConfigurationError("Sendlane tracking events need the custom integration token")
        if not path.startswith("/tracking/"):
            raise ConfigurationError(f"not a Sendlane tracking path: {path!r}")
        return self._request("POST", path, json_body={**payload, "token": self._integration_token.reveal()})

    def add_contacts(self, list_id: str | int, contacts: Sequence[dict],
                     batch_size: int = MAX_CONTACTS_PER_REQUEST) -> list[dict]:
        """Add or update contacts on a list, at most ``batch_size`` (≤ 1000) per request.

        Returns Sendlane's answer per batch. If a batch fails, the error says how many contacts
        went before it; adding a contact again is an update, so the caller can resend them all.
        """
        if not 1 <= batch_size <= MAX_CONTACTS_PER_REQUEST:
            raise ValueError(f"batch_size must be between 1 and {MAX_CONTACTS_PER_REQUEST}")
        answers = []
        for start in range(0, len(contacts), batch_size):
            batch = list(contacts[start:start + batch_size])
            try:
                answers.append(
                    self._request("POST", f"/lists/{list_id}/contacts", json_body={"contacts": batch})
                )
            except DeliveryError as error:
                if start:
                    note = f"after {start} of {len(contacts)} contacts were accepted"
                    error.args = (f"{error.args[0]} ({note})",)
                raise
        return answers

    # Contact reads and deletion. NOT in Sendlane's public API v2 reference nor in our shared
    # vendor documents: the shapes are those public clients use (the Laravel client
    # arindam/sendlane-apis, WP Fusion's Sendlane CRM module); see docs/vendors-and-errors.md.
    def find_contact(self, email: str) -> dict | None:
        """The account's contact with this email (``GET /contacts/search?email=``, answered
        ``{"data": {"id", "email", ...}}``), or None on the not-found answer public clients
        observe (``is_contact_not_found``: 422 "The selected email is invalid."). Any other failure,
        a generic 404 included, raises: it says nothing about the contact. Sendlane processes
        writes asynchronously, so a contact it just accepted may not be found yet."""
        if not isinstance(email, str) or "@" not in email:
            raise ValueError("find_contact needs an email address")
        try:
            body = self._request("GET", "/contacts/search", params={"email": email.strip()})
        except PermanentError as error:
            if is_contact_not_found(error):
                return None
            raise
        contact = body.get("data")
        if not isinstance(contact, dict) or contact.get("id") in (None, ""):
            raise PermanentError("Sendlane answered a contact search without data.id: not the shape "
                                 "public clients read; the search path may not be routed",
                                 http_status=200, vendor_message=str(body)[:500])
        return contact

    def get_contact(self, contact_id: str | int) -> dict:
        """One contact by Sendlane id (``GET /contacts/{id}``, ``{"data": {...}}``). Undocumented
        like ``find_contact``; every failure raises (a 404 here is not read as "no contact": only
        the search's answer is, see ``is_contact_not_found``)."""
        body = self._request("GET", f"/contacts/{contact_id}")
        contact = body.get("data")
        if not isinstance(contact, dict):
            raise PermanentError("Sendlane answered a contact read without data",
                                 http_status=200, vendor_message=str(body)[:500])
        return contact

    def delete_contact(self, email: str) -> bool:
        """Delete a contact from the account (GDPR/CCPA): find it by email, then
        ``DELETE /contacts/{id}`` (how the Laravel client deletes by email). True when deleted,
        False when no contact has that email (the search's not-found, or the contact went between
        the search and the delete). Any other failure raises."""
        contact = self.find_contact(email)
        if contact is None:
            return False
        try:
            self._request("DELETE", f"/contacts/{contact['id']}")
        except DeliveryError as error:
            if getattr(error, "http_status", None) == 404:
                return False
            raise
        return True

    def iter_unsubscribed(self, list_id: str | int | None = None, page_size: int = 100) -> Iterator[dict]:
        """Every unsubscribed contact, of one list or of the whole account, page by page."""
        path = f"/lists/{list_id}/unsubscribed" if list_id is not None else "/contacts/unsubscribed"
        page = 1
        while True:
            body = self._request("GET", path, params={"page": page, "limit": page_size})
            rows = body.get("data") or []
            yield from rows
            links = body.get("links") or {}
            if not links.get("next") or not rows:
                return
            page += 1

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated read (``GET /lists``), no retries. The integration token cannot
        be checked without sending an event, so it is not."""
        try:
            body = self._request("GET", "/lists", params={"page": 1, "limit": 1},
                                 policy=replace(self.retry_policy, max_attempts=1))
        except DeliveryError as error:
            return False, str(error)
        total = (body.get("meta") or {}).get("total")
        lists = f"{total} list(s)" if total is not None else "lists readable"
        return True, f"Connected to Sendlane at {self.base_url}: API token accepted, {lists}"


__all__ = [
    "CONTACT_NOT_FOUND_MESSAGE", "MAX_CONTACTS_PER_REQUEST", "SENDLANE_BASE_URL", "SendlaneClient",
    "classify_sendlane_response", "is_contact_not_found",
]
