"""Vendor targets: which deliveries each canonical event becomes, and how they are sent.

A target decides, per vendor, the *identity* of every delivery (event type, entity id, version),
which is what makes delivery exactly-once:

| event                          | Sendlane                       | Sailthru                          | version        |
|--------------------------------|--------------------------------|-----------------------------------|----------------|
| order placed                   | order_placed                   | purchase (purchase_keys.extid)    | change id      |
| order fulfilled                | order_fulfilled                | (nothing)                         | change id      |
| order cancelled / refunded     | order_cancelled / _refunded    | return                            | change id      |
| customer created / changed     | customer_added                 | user profile                      | content hash   |
| product created / changed      | product_added                  | content                           | content hash   |
| checkout open                  | checkout_started               | incomplete purchase + reminder    | content hash   |
| checkout completed             | (nothing: the order clears it) | incomplete purchase, items cleared| "cleared"      |
| customer (with ``list_id`` set)| contact on the list (LTV custom fields) | (in the profile's vars)  | content hash   |

Consent: the Sendlane target sends every email in ``unsubscribed`` (the vendor's own unsubscribes,
read back by ``storesync.pipeline.consent``; loaded lazily from the ledger database unless given)
as not consenting, in order events, customer events and contacts alike.

Order events are versioned by ``change_id``, the warehouse's stable id of the status change
(``seq``, the change's rank in the order's history, only orders them: a late, backdated history
row would shift it). A delivery planned by an older storesync under its ``seq`` version is
recognised (``legacy_versions``), so upgrading does not resend history.

Content-hash versions (``versioning="content"``) are diffed by the ledger against the entity's
latest planned version: unchanged products and profiles are no-ops, a revert A→B→A is sent again,
and a newer version supersedes an older one not yet in flight. Status-change versions make a
backfill of an already-synced interval a no-op. All of an order's deliveries share one ordering
key, so its changes reach each vendor in order. A cart is keyed by the person (Sailthru keeps one
cart per user), so its updates go in order too; the ordering key holds a hash of the email, never
the email (``person_key``).

The account in every identity is the vendor settings' ``account`` (``account_id`` when set, else a
fingerprint of the credential).
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from storesync.core.config import Settings
from storesync.core.errors import DeliveryError
from storesync.core.events import CheckoutEvent, CustomerEvent, OrderEvent, ProductEvent
from storesync.delivery.ledger import Delivery, PlannedDelivery, dumps, email_hash

EMAIL_RE = re.compile(r"([A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]*@([A-Za-z0-9.-]+)")


def content_version(payload: dict) -> str:
    return hashlib.sha256(dumps(payload).encode()).hexdigest()[:20]


def person_key(email: str) -> str:
    """A stable key for a person in ledger keys: a hash of the normalised email, never the email."""
    return email_hash(email)


def order_version(event: OrderEvent) -> str:
    """An order event's version: the warehouse's id of its status change (``seq`` when the model
    provides none)."""
    return str(event.change_id) if event.change_id is not None else str(event.seq)


def _legacy_order_versions(event: OrderEvent) -> tuple[str, ...]:
    return (str(event.seq),) if event.change_id is not None and str(event.change_id) != str(event.seq) else ()


def mask_email(text: str) -> str:
    return EMAIL_RE.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


def mask_payload(payload):
    """A payload for people to look at: emails masked, credentials never present."""
    if isinstance(payload, dict):
        return {k: ("***" if k in ("token", "api_key", "sig") else mask_payload(v)) for k, v in payload.items()}
    if isinstance(payload, list):
        return [mask_payload(v) for v in payload]
    if isinstance(payload, str):
        return mask_email(payload)
    return payload


class Target(Protocol):
    vendor: str
    account: str

    def plan_order(self, event: OrderEvent) -> list[PlannedDelivery]: ...
    def plan_customer(self, event: CustomerEvent) -> list[PlannedDelivery]: ...
    def plan_product(self, event: ProductEvent) -> list[PlannedDelivery]: ...
    def plan_checkout(self, event: CheckoutEvent) -> list[PlannedDelivery]: ...
    def sender(self, limiter_engine=None): ...


class _BaseTarget:
    vendor = ""

    def __init__(self, account: str) -> None:
        self.account = account

    def _planned(self, event_type, entity_id, version, endpoint, payload, *, ordering_key=None, seq=0,
                 historical=False, occurred_at=None, versioning="content",
                 legacy_versions=()) -> PlannedDelivery:
        return PlannedDelivery(vendor=self.vendor, account=self.account, event_type=event_type,
                               entity_id=str(entity_id), version=str(version), endpoint=endpoint,
                               payload=payload, ordering_key=ordering_key or f"{event_type}:{entity_id}",
                               seq=seq, historical=historical, occurred_at=occurred_at,
                               versioning=versioning, legacy_versions=tuple(legacy_versions))

    def _planned_order(self, event_type, event: OrderEvent, endpoint, payload) -> PlannedDelivery:
        return self._planned(event_type, event.order_id, order_version(event), endpoint, payload,
                             ordering_key=f"order:{event.order_id}", seq=event.seq,
                             historical=event.historical, occurred_at=event.occurred_at,
                             versioning="change", legacy_versions=_legacy_order_versions(event))

    def _safely(self, build, *args) -> tuple[str, dict] | None:
        """A mapper that rejects an event (say, no email) must not sink the chunk: that event is
        planned as a dead letter-to-be, carrying the reason, so it shows up and can be replayed."""
        try:
            return build(*args)
        except DeliveryError as exc:
            return "/_invalid", {"_invalid": str(exc)}


class SendlaneTarget(_BaseTarget):
    vendor = "sendlane"

    def __init__(self, settings: Settings, client_factory=None, unsubscribed=None) -> None:
        super().__init__(settings.sendlane.account)
        self.settings = settings
        self.client_factory = client_factory
        self._unsubscribed = unsubscribed

    @property
    def unsubscribed(self):
        """Lowercased emails unsubscribed at Sendlane (the last readback, from the ledger DB)."""
        if self._unsubscribed is None:
            from storesync.pipeline.consent import load_unsubscribed

            self._unsubscribed = load_unsubscribed(self.settings.ledger_url, self.vendor, self.account)
        return self._unsubscribed

    def _safely_consenting(self, build, *args):
        """A mapper call with the vendor's unsubscribes; rejections become dead letters-to-be."""
        try:
            return build(*args, unsubscribed=self.unsubscribed)
        except DeliveryError as exc:
            return "/_invalid", {"_invalid": str(exc)}

    def plan_order(self, event: OrderEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sendlane

        mapped = self._safely_consenting(sendlane.map_order_event, event, self.settings.sendlane.event_paths)
        if mapped is None:
            return []
        path, payload = mapped
        return [self._planned_order(f"order_{event.kind}", event, path, payload)]

    def plan_customer(self, event: CustomerEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sendlane

        path, payload = self._safely_consenting(sendlane.map_customer_added, event,
                                                self.settings.sendlane.event_paths)
        planned = [self._planned("customer_added", event.customer_id, content_version(payload), path, payload,
                                 historical=event.historical, occurred_at=event.updated_at)]
        list_id = self.settings.sendlane.list_id
        if list_id:
            # The list contact carries consent and the custom fields (LTV) that events cannot.
            mapped = self._safely_consenting(sendlane.map_contact, event, None)
            if isinstance(mapped, tuple):
                endpoint, contact = mapped
            else:
                endpoint, contact = f"/lists/{list_id}/contacts", {"contacts": [mapped]}
            planned.append(self._planned("contact", event.customer_id, content_version(contact), endpoint,
                                         contact, historical=event.historical, occurred_at=event.updated_at))
        return planned

    def plan_product(self, event: ProductEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sendlane

        path, payload = self._safely(sendlane.map_product_added, event, self.settings.sendlane.event_paths)
        return [self._planned("product_added", event.product_id, content_version(payload), path, payload,
                              historical=event.historical, occurred_at=event.updated_at)]

    def plan_checkout(self, event: CheckoutEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sendlane

        if event.completed:
            return []  # Sendlane ends the abandoned-checkout flow itself when the order is placed
        path, payload = self._safely(sendlane.map_checkout_started, event, self.settings.sendlane.event_paths)
        return [self._planned("checkout_started", event.checkout_id, content_version(payload), path, payload,
                              ordering_key=f"cart:{event.checkout_id}", seq=_cart_seq(event),
                              occurred_at=event.updated_at)]

    def sender(self, limiter_engine=None):
        from storesync.pipeline.senders import SendlaneSender

        return SendlaneSender(self.settings.sendlane, self.account, client_factory=self.client_factory,
                              limiter_engine=limiter_engine)


class SailthruTarget(_BaseTarget):
    vendor = "sailthru"

    def __init__(self, settings: Settings, client_factory=None) -> None:
        super().__init__(settings.sailthru.account)
        self.settings = settings
        self.client_factory = client_factory

    def plan_order(self, event: OrderEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sailthru

        if event.kind == "placed":
            event_type, mapped = "purchase", self._safely(sailthru.map_purchase, event)
        elif event.kind in ("cancelled", "refunded"):
            event_type, mapped = "return", self._safely(sailthru.map_return, event)
        else:
            return []
        endpoint, payload = mapped
        return [self._planned_order(event_type, event, endpoint, payload)]

    def plan_customer(self, event: CustomerEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sailthru

        endpoint, payload = self._safely(sailthru.map_user, event)
        return [self._planned("user", event.customer_id, content_version(payload), endpoint, payload,
                              historical=event.historical, occurred_at=event.updated_at)]

    def plan_product(self, event: ProductEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sailthru

        endpoint, payload = self._safely(sailthru.map_content, event)
        return [self._planned("content", event.product_id, content_version(payload), endpoint, payload,
                              historical=event.historical, occurred_at=event.updated_at)]

    def plan_checkout(self, event: CheckoutEvent) -> list[PlannedDelivery]:
        from storesync.mappers import sailthru

        endpoint, payload = self._safely(sailthru.map_incomplete_purchase, event, self.settings.sailthru)
        version = "cleared" if event.completed else content_version(payload)
        seq = _cart_seq(event)
        if endpoint != "/_invalid":
            # A key per cart version (and update: a cart reverted to earlier content is a new
            # request) lets an unknown outcome be looked up like a purchase.
            payload["purchase_keys"] = {"extid": f"cart-{event.checkout_id}-{version[:12]}-{seq}"}
        # One cart per person at Sailthru: order a person's cart updates.
        person = f"cart:{person_key(event.email)}" if event.email else f"cart:{event.checkout_id}"
        return [self._planned("incomplete_purchase", event.checkout_id, version, endpoint, payload,
                              ordering_key=person, seq=seq, occurred_at=event.updated_at)]

    def sender(self, limiter_engine=None):
        from storesync.pipeline.senders import SailthruSender

        factory = self.client_factory
        if factory is None and limiter_engine is not None:
            from storesync.pipeline.vendor_clients import default_sailthru_client

            # Sailthru's budgets shared through the ledger database, like Sendlane's.
            def factory(settings):
                return default_sailthru_client(settings, limiter_engine)
        return SailthruSender(self.settings.sailthru, self.account, client_factory=factory,
                              limiter_engine=limiter_engine)


def _cart_seq(event: CheckoutEvent) -> int:
    return int(event.updated_at.timestamp())


def targets_for(settings: Settings, vendors: list[str] | tuple[str, ...] = ("sendlane", "sailthru"),
                client_factories: dict | None = None) -> list[Target]:
    factories = client_factories or {}
    known = {"sendlane": SendlaneTarget, "sailthru": SailthruTarget}
    unknown = [v for v in vendors if v not in known]
    if unknown:
        raise ValueError(f"unknown vendor(s) {unknown}; known: {sorted(known)}")
    return [known[v](settings, client_factory=factories.get(v)) for v in vendors]


def describe(delivery: Delivery) -> str:
    return f"{delivery.vendor} {delivery.event_type} {delivery.entity_id} v{delivery.version}"
