"""Canonical store events → Sendlane API v2 payloads. Pure functions: no I/O, no clock.

Each ``map_*`` returns ``(path, payload)`` for ``SendlaneClient.track`` (which adds the
integration ``token``), except ``map_contact``, which returns one contact for
``SendlaneClient.add_contacts``. An event that cannot make a meaningful request (a product without
the required URLs, a cart without an email) raises ``PermanentError`` naming what is missing, so it
becomes a dead letter instead of a crash. Every payload is checked against the fields Sendlane
requires for its event (``mappers.required``) before it is returned.

Choices where Sendlane's documents are silent or ambiguous:

- **Paths** come from the event-path map in configuration (``event_paths``, default
  ``DEFAULT_SENDLANE_EVENT_PATHS``): the reference gives no path for fulfilled/cancelled/refunded.
- **Money** is currency units with two decimals (``19.99``), rounded half-up. It leaves here as
  a ``float`` made from the quantized ``Decimal`` at the very end: a double's ``repr`` is the
  shortest text that reads back to it, so JSON carries exactly ``19.99`` for any amount below
  10^13, and the payload stays plain JSON for the ledger.
- **Time**: ``time`` (unix seconds) and ``initial_sync: true`` only for historical events. The
  guide says ``time`` is only for historical syncs, and a live event sent with its real time is
  the "too much / not enough data" trap. ``date_created`` (ISO 8601, UTC) is sent for orders and
  customers always: it is the record's creation date, which Sendlane keeps as such. Naive
  datetimes from the warehouse are taken as UTC.
- **Status** of a fulfilled/cancelled/refunded event is that word: the guide fires
  ``order_fulfilled`` & co. from the order's ``status``, whatever the store calls it. A checkout
  is ``pending`` (Sendlane's checkout status takes an order status; the guide's example uses it).
- **Consent**: ``accepts_marketing`` / ``email_consent`` carry the store's value, except that an
  email in ``unsubscribed`` (lowercased addresses, e.g. from ``SendlaneClient.iter_unsubscribed``)
  is always sent as not consenting: the vendor's unsubscribes win, and nothing here ever turns an
  unsubscribe back into a subscription.
- **Customer added**: the person's name, email and phone go in ``billing_address`` (the reference
  lists addresses "with email"); no shipping address is invented.
- **Variants** are ``{variant_id, product_id, sku, product_name, item_price}``, the fields of an
  order line item, since the reference gives ``variants[]`` no shape.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import asdict, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from storesync.core.config import DEFAULT_SENDLANE_EVENT_PATHS
from storesync.core.errors import ConfigurationError, PermanentError
from storesync.core.events import Address, CheckoutEvent, CustomerEvent, LineItem, OrderEvent, ProductEvent
from storesync.mappers.required import check_sendlane

CENT = Decimal("0.01")
# Below this, a two-decimal amount has at most 15 significant digits: float repr is exact text.
MAX_EXACT_AMOUNT = Decimal("1e13")
CHECKOUT_STATUS = "pending"
NO_UNSUBSCRIBES: frozenset[str] = frozenset()


def money(amount: Decimal | int | str) -> float:
    """Decimal currency units → a JSON number with two decimals, rounded half-up."""
    quantized = Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)
    if abs(quantized) >= MAX_EXACT_AMOUNT:
        raise PermanentError(f"amount {quantized} is too large to send exactly")
    return float(quantized)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def unix_seconds(moment: datetime) -> int:
    return int(_utc(moment).timestamp())


def iso_utc(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds")


def _path(event_paths: Mapping[str, str], event_name: str) -> str:
    try:
        return event_paths[event_name]
    except KeyError:
        raise ConfigurationError(
            f"no Sendlane path configured for {event_name!r} (sendlane.event_paths)"
        ) from None


def _historical(payload: dict, historical: bool, moment: datetime) -> dict:
    if historical:
        payload["time"] = unix_seconds(moment)
        payload["initial_sync"] = True
    return payload


def _consents(flag: bool | None, email: str | None, unsubscribed: Container[str]) -> bool | None:
    if email and email.strip().lower() in unsubscribed:
        return False
    return flag


def _address(address: Address | None) -> dict | None:
    if address is None:
        return None
    fields = {name: value for name, value in asdict(address).items() if value is not None}
    return fields or None


def _line_item(item: LineItem) -> dict:
    line = {
        "product_id": item.product_id,
        "sku": item.sku,
        "product_name": item.product_name,
        "quantity": item.quantity,
        "item_price": money(item.unit_price),
        "total": money(item.total),
    }
    # Abandoned-checkout emails need pictures and links: pass them when the store has them.
    for name in ("variant_id", "product_url", "image_url"):
        value = getattr(item, name)
        if value is not None:
            line[name] = value
    return line


def _without_none(payload: dict) -> dict:
    return {key: value for key, value in payload.items() if value is not None}


def map_order_event(
    event: OrderEvent,
    event_paths: Mapping[str, str] = DEFAULT_SENDLANE_EVENT_PATHS,
    *,
    unsubscribed: Container[str] = NO_UNSUBSCRIBES,
) -> tuple[str, dict]:
    """An order placed / fulfilled / cancelled / refunded → ``/tracking/order-*``."""
    path = _path(event_paths, f"order_{event.kind}")
    discounts = None
    if event.discount_code or event.total_discounts:
        # Sendlane wants the amount taken off, a positive number, whatever sign the store keeps.
        discounts = _without_none({"discount_code": event.discount_code,
                                   "discount_value": money(abs(event.total_discounts))})
    payload = _without_none({
        "order_id": event.order_id,
        "email": event.email,
        "status": event.status if event.kind == "placed" else event.kind,
        "subtotal": money(event.subtotal),
        "total_tax": money(event.total_tax),
        "total": money(event.total),
        "total_items": event.total_items,
        "currency": event.currency,
        "discounts": discounts,
        "line_items": [_line_item(item) for item in event.line_items],
        "billing_address": _address(event.billing_address),
        "shipping_address": _address(event.shipping_address),
        "customer_id": event.customer_id,
        "accepts_marketing": _consents(event.accepts_marketing, event.email, unsubscribed),
        "date_created": iso_utc(event.created_at),
    })
    check_sendlane(f"order_{event.kind}", payload, f"order {event.order_id}")
    return path, _historical(payload, event.historical, event.occurred_at)


def map_customer_added(
    event: CustomerEvent,
    event_paths: Mapping[str, str] = DEFAULT_SENDLANE_EVENT_PATHS,
    *,
    unsubscribed: Container[str] = NO_UNSUBSCRIBES,
) -> tuple[str, dict]:
    """A customer created or changed → ``/tracking/customer-added``."""
    address = event.address or Address()
    person = replace(
        address,
        first_name=address.first_name or event.first_name,
        last_name=address.last_name or event.last_name,
        email=address.email or event.email,
        phone=address.phone or event.phone,
    )
    payload = _without_none({
        "customer_id": event.customer_id,
        "email": event.email,
        "billing_address": _address(person),
        "accepts_marketing": _consents(event.accepts_marketing, event.email, unsubscribed),
        "date_created": iso_utc(event.created_at),
    })
    check_sendlane("customer_added", payload, f"customer {event.customer_id}")
    return _path(event_paths, "customer_added"), _historical(payload, event.historical, event.created_at)


def map_product_added(
    event: ProductEvent,
    event_paths: Mapping[str, str] = DEFAULT_SENDLANE_EVENT_PATHS,
) -> tuple[str, dict]:
    """A product created or changed (and the nightly catalog sync) → ``/tracking/product-added``."""
    missing = [name for name, value in (("url", event.url), ("image_url", event.image_url)) if not value]
    if missing:
        raise PermanentError(f"product {event.product_id} has no {' or '.join(missing)}: "
                             "Sendlane requires product_url and image_url")
    payload = _without_none({
        "product_id": event.product_id,
        "product_url": event.url,
        "image_url": event.image_url,
        "sku": event.sku,
        "product_name": event.title,
        "item_price": money(event.price),
        "compare_at_price": None if event.compare_at_price is None else money(event.compare_at_price),
        "brand": event.brand,
        "categories": list(event.categories),
        "variants": [
            {"variant_id": v.variant_id, "product_id": event.product_id, "sku": v.sku,
             "product_name": v.title, "item_price": money(v.price)}
            for v in event.variants
        ],
    })
    check_sendlane("product_added", payload, f"product {event.product_id}")
    return _path(event_paths, "product_added"), _historical(payload, event.historical, event.updated_at)


def _require_email(email: str | None, what: str) -> str:
    if not email:
        raise PermanentError(f"{what} has no email: Sendlane cannot tie it to a contact")
    return email


def map_checkout_started(
    event: CheckoutEvent,
    event_paths: Mapping[str, str] = DEFAULT_SENDLANE_EVENT_PATHS,
) -> tuple[str, dict]:
    """An open checkout (the whole cart) → ``/tracking/checkout-started``.

    A completed checkout has nothing to send: Sendlane ends the abandoned-checkout flow when the
    order is placed. Callers skip those (``CheckoutEvent.completed``).
    """
    payload = _without_none({
        "checkout_id": event.checkout_id,
        "email": _require_email(event.email, f"checkout {event.checkout_id}"),
        "status": CHECKOUT_STATUS,
        "checkout_url": event.checkout_url,
        "subtotal": money(event.subtotal),
        "total_tax": money(event.total_tax),
        "total": money(event.total),
        "total_items": event.total_items,
        "currency": event.currency,
        "line_items": [_line_item(item) for item in event.line_items],
    })
    check_sendlane("checkout_started", payload, f"checkout {event.checkout_id}")
    return _path(event_paths, "checkout_started"), payload


def map_added_to_cart(
    event: CheckoutEvent,
    event_paths: Mapping[str, str] = DEFAULT_SENDLANE_EVENT_PATHS,
) -> tuple[str, dict]:
    """A cart's current content → ``/tracking/added-to-cart`` (``cart_id`` is the checkout id)."""
    payload = _without_none({
        "cart_id": event.checkout_id,
        "email": _require_email(event.email, f"cart {event.checkout_id}"),
        "checkout_url": event.checkout_url,
        "total_items": event.total_items,
        "total": money(event.total),
        "currency": event.currency,
        "line_items": [_line_item(item) for item in event.line_items],
    })
    check_sendlane("added_to_cart", payload, f"cart {event.checkout_id}")
    return _path(event_paths, "added_to_cart"), payload


def map_product_viewed(
    email: str,
    product_id: int | str,
    event_paths: Mapping[str, str] = DEFAULT_SENDLANE_EVENT_PATHS,
    *,
    variant_id: int | str | None = None,
) -> tuple[str, dict]:
    """A known contact viewed a product → ``/tracking/product-viewed``."""
    payload = _without_none({
        "product_id": product_id,
        "email": _require_email(email, f"view of product {product_id}"),
        "variant_id": variant_id,
    })
    check_sendlane("product_viewed", payload, f"view of product {product_id}")
    return _path(event_paths, "product_viewed"), payload


def _custom_field_value(value):
    """A scalar Sendlane stores in a custom field: numbers stay numbers, dates become ISO text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def map_contact(
    customer: CustomerEvent,
    ltv_fields: Mapping[str, object] | None = None,
    *,
    unsubscribed: Container[str] = NO_UNSUBSCRIBES,
) -> dict:
    """One list contact for ``POST /lists/{id}/contacts``: identity, consent, custom fields.

    ``custom_fields`` are the customer's own ``vars`` overlaid with ``ltv_fields``; empty values
    are left out rather than sent as blanks that would wipe a field.
    """
    email = _require_email(customer.email, f"customer {customer.customer_id}")
    fields = {**customer.vars, **(ltv_fields or {})}
    return _without_none({
        "email": email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "phone": customer.phone,
        "email_consent": _consents(customer.accepts_marketing, email, unsubscribed),
        "custom_fields": [
            {"key": key, "value": _custom_field_value(value)}
            for key, value in fields.items()
            if value is not None
        ],
    })


__all__ = [
    "map_added_to_cart",
    "map_checkout_started",
    "map_contact",
    "map_customer_added",
    "map_order_event",
    "map_product_added",
    "map_product_viewed",
    "money",
]
