"""Senders: the delivery engine's view of a vendor client (send one delivery, look one up).

Unknown outcomes (the request left, no answer came back) follow the vendor's policy, set in
configuration (``unknown_outcome``):

- Sailthru: ``lookup`` — purchases (and carts, which carry a per-version extid) by a signed
  ``GET /purchase`` on ``purchase_keys.extid``; content and profiles by ``GET /content`` and
  ``GET /user``, comparing what we sent with what the vendor holds. Found → accepted; not found →
  sent again, but only once ``unknown_grace_s`` (default 120 s) has passed since the outcome
  became unknown: until then a gateway may still be handing the request on, or the vendor still
  recording it, so the row stays ``unknown`` and a later run looks again (``LOOKUP_PENDING``).
- Sendlane: ``hold`` — no endpoint tells whether an event arrived, and a second order-placed may
  count revenue twice, so the delivery is held as ``unknown`` for reconciliation
  (``storesync reconcile``) and reported; ``resend`` trusts Sendlane's documented event+id
  deduplication instead (the guide promises it; the API reference does not).
"""

from __future__ import annotations

from storesync.core.config import SailthruSettings, SendlaneSettings
from storesync.core.errors import PermanentError
from storesync.delivery.engine import LOOKUP_PENDING
from storesync.delivery.ledger import Delivery, utcnow
from storesync.pipeline.vendor_clients import default_sailthru_client, default_sendlane_client

INVALID_ENDPOINT = "/_invalid"


def _reject_invalid(delivery: Delivery) -> None:
    if delivery.endpoint == INVALID_ENDPOINT:
        raise PermanentError(delivery.payload.get("_invalid", "the event could not be mapped"))


def _grow_pool(client, n: int) -> None:
    grow = getattr(client, "ensure_pool_size", None)  # a client from a factory may not pool
    if grow is not None:
        grow(n)


class SendlaneSender:
    vendor = "sendlane"

    def __init__(self, settings: SendlaneSettings, account: str, client_factory=None, limiter_engine=None) -> None:
        self.settings = settings
        self.account = account
        self.client = client_factory(settings) if client_factory else default_sendlane_client(
            settings, account, limiter_engine)

    def send(self, delivery: Delivery) -> dict | None:
        _reject_invalid(delivery)
        if delivery.endpoint.startswith("/lists/"):
            list_id = delivery.endpoint.split("/")[2]
            return self.client.add_contacts(list_id, delivery.payload["contacts"])
        return self.client.track(delivery.endpoint, delivery.payload)

    def ensure_connections(self, n: int) -> None:
        _grow_pool(self.client, n)

    def resolve_unknown(self, delivery: Delivery) -> bool | None:
        return False if self.settings.unknown_outcome == "resend" else None


class SailthruSender:
    vendor = "sailthru"
    UPSERT_ENDPOINTS = ("/user", "/content")

    def __init__(self, settings: SailthruSettings, account: str, client_factory=None) -> None:
        self.settings = settings
        self.account = account
        self.client = (client_factory or default_sailthru_client)(settings)

    def send(self, delivery: Delivery) -> dict | None:
        _reject_invalid(delivery)
        return self.client.post(delivery.endpoint.lstrip("/"), delivery.payload)

    def ensure_connections(self, n: int) -> None:
        _grow_pool(self.client, n)

    def resolve_unknown(self, delivery: Delivery) -> bool | str | None:
        found = self._found(delivery)
        if found is False and not self._grace_over(delivery):
            return LOOKUP_PENDING  # not there *yet* proves nothing
        return found

    def _grace_over(self, delivery: Delivery) -> bool:
        since = delivery.unknown_since or utcnow()  # unknown just now: the request just left
        return (utcnow() - since).total_seconds() >= self.settings.unknown_grace_s

    def _found(self, delivery: Delivery) -> bool | None:
        if self.settings.unknown_outcome == "hold":
            return None
        payload = delivery.payload
        if delivery.endpoint == "/purchase":
            extid = (payload.get("purchase_keys") or {}).get("extid") or payload.get("extid")
            if not extid:
                return None
            found = self.client.lookup_purchase(str(extid))
            return found is not None
        if delivery.endpoint == "/content":
            current = self._lookup("content", {"url": payload["url"]})
            return current is not None and _contains(current.get("content", current), payload,
                                                     ("title", "price", "url"))
        if delivery.endpoint == "/user":
            current = self._lookup("user", {"id": payload["id"], "key": payload.get("key", "email")})
            return current is not None and _contains(current, payload, ("vars", "optout_email"))
        return None

    def _lookup(self, endpoint: str, data: dict) -> dict | None:
        """The vendor's current state of an upserted object, or None when it has none."""
        from storesync.core.errors import PermanentError as NotFound

        try:
            return self.client.get(endpoint, data)
        except NotFound:
            return None


def _contains(current: dict, sent: dict, fields: tuple[str, ...]) -> bool:
    """Does the vendor's current object already hold what we sent (for these fields)?"""
    for name in fields:
        if name not in sent:
            continue
        want, have = sent[name], current.get(name)
        if isinstance(want, dict):
            if not isinstance(have, dict) or any(have.get(k) != v for k, v in want.items()):
                return False
        elif have != want:
            return False
    return True
