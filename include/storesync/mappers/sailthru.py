"""Canonical store events → Sailthru API payloads. Pure functions: no I/O, no clock.

Each ``map_*`` returns ``(endpoint, payload)`` for ``SailthruClient.post`` (endpoint with its
leading slash, e.g. ``"/purchase"``). An event that cannot make a meaningful request (a purchase
without an email, an item without a URL) raises ``PermanentError`` naming what is missing, so it
becomes a dead letter instead of a crash. Every payload, returns included, is checked against the
fields Sailthru requires at its endpoint (``mappers.required``) before it is returned.

Choices where Sailthru's documents are silent or ambiguous:

- **Cents** are computed from ``Decimal`` and never through float: ``19.99`` → ``1999``, rounded
  half-up when a price has more than two decimals. An item's ``price`` is ONE unit.
- **Adjustments** make the purchase add up to the order's ``total``: the discount as a negative
  adjustment (titled with the discount code, else "Discount"), tax as a positive one titled
  "Tax", and whatever still differs (shipping, fees, line-level discounts the store applied) as
  "Shipping and fees" (positive) or "Other discounts" (negative). ``tenders`` carries the whole
  total under the payment method, when the store knows it.
- **date** is always sent, as ``"YYYY-MM-DD HH:MM:SS UTC"`` of ``occurred_at`` (naive warehouse
  datetimes are taken as UTC): a purchase synced an hour late still lands at the right time.
- **Clearing a cart**: a completed checkout maps to an incomplete purchase with an *empty*
  ``items`` list and no reminder (Sailthru's "Clearing Incomplete Purchase Data": the cart is
  replaced whole by each incomplete purchase, so an empty one clears it and cancels the pending
  reminder). Sent even though the order's own purchase also clears the cart, because that order
  may be dead-lettered or late while the reminder is due.
- **Returns** send every line of the order (the events carry no partial-refund detail), keyed to
  the purchase by ``purchase_keys.extid``.
- **Content** is keyed by ``url`` and also by ``keys.sku``, so a product whose URL changes updates
  its item instead of adding a second one.
- **User identity** is ``customer_id`` (``id`` + ``key: "extid"``), with the email in ``keys`` and
  ``keysconflict: "merge"``: an email change then updates the email on the person's profile
  instead of starting a new profile, and a profile that already exists under the email (from a
  signup form) is merged into it.
- **Consent**: ``optout_email: "all"`` when the customer does not accept marketing; when they do,
  the field is left out. storesync never sends ``"none"``, so it can never reverse an opt-out
  made at Sailthru (an unsubscribe link, a complaint): opt-outs only move toward opting out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from storesync.core.errors import PermanentError
from storesync.core.events import CheckoutEvent, CustomerEvent, LineItem, OrderEvent, ProductEvent
from storesync.mappers.required import check_sailthru

MAX_VAR_NAME = 32
ONE_CENT_IN_UNITS = Decimal(100)


class ReminderSettings(Protocol):
    """What an incomplete purchase needs from settings (``SailthruSettings`` has both)."""

    reminder_template: str
    reminder_time: str


def cents(amount: Decimal | int | str | float) -> int:
    """Currency units → integer cents, exactly: ``Decimal("19.99")`` → ``1999``.

    A float (from a driver that hands money back as float) is read through its shortest repr,
    ``19.99`` → ``Decimal("19.99")``, never multiplied as a float.
    """
    value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    return int((value * ONE_CENT_IN_UNITS).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def sailthru_date(moment: datetime) -> str:
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC"


def _require_email(email: str | None, what: str) -> str:
    if not email:
        raise PermanentError(f"{what} has no email: Sailthru records it against an email address")
    return email


def _item_id(item: LineItem) -> str:
    return item.sku or str(item.product_id)


def _purchase_item(item: LineItem, what: str) -> dict:
    if not item.product_url:
        raise PermanentError(
            f"{what}: item {_item_id(item)} has no product URL (Sailthru requires items[].url)"
        )
    entry = {
        "qty": item.quantity,
        "title": item.product_name,
        "price": cents(item.unit_price),
        "id": _item_id(item),
        "url": item.product_url,
    }
    if item.categories:
        entry["tags"] = list(item.categories)
    if item.image_url:
        # The purchase reference's own example: an item's picture travels in vars.image_url.
        entry["vars"] = {"image_url": item.image_url}
    return entry


def _adjustments(event: OrderEvent, items: list[dict]) -> list[dict]:
    adjustments = []
    discount = cents(event.total_discounts)
    if discount:
        adjustments.append({"title": event.discount_code or "Discount", "price": -abs(discount)})
    tax = cents(event.total_tax)
    if tax:
        adjustments.append({"title": "Tax", "price": tax})
    accounted = sum(i["qty"] * i["price"] for i in items) + sum(a["price"] for a in adjustments)
    rest = cents(event.total) - accounted
    if rest:
        adjustments.append({"title": "Shipping and fees" if rest > 0 else "Other discounts", "price": rest})
    return adjustments


def map_purchase(event: OrderEvent) -> tuple[str, dict]:
    """An order placed → ``POST /purchase`` (a completed purchase, keyed by extid = order id)."""
    what = f"order {event.order_id}"
    email = _require_email(event.email, what)
    if not event.line_items:
        raise PermanentError(f"{what} has no line items: a Sailthru purchase needs at least one")
    items = [_purchase_item(item, what) for item in event.line_items]
    payload = {
        "email": email,
        "items": items,
        "date": sailthru_date(event.occurred_at),
        "purchase_keys": {"extid": str(event.order_id)},
    }
    adjustments = _adjustments(event, items)
    if adjustments:
        payload["adjustments"] = adjustments
    if event.payment_method:
        payload["tenders"] = [{"title": event.payment_method, "price": cents(event.total)}]
    if event.message_id:
        payload["message_id"] = event.message_id
    check_sailthru("/purchase", payload, what)
    return "/purchase", payload


def map_return(event: OrderEvent) -> tuple[str, dict]:
    """An order cancelled or refunded → ``POST /return`` of all its lines (each with its URL:
    Sailthru requires ``items[].url``; a line without one is caught here, not sent)."""
    what = f"order {event.order_id}"
    email = _require_email(event.email, what)
    if not event.line_items:
        raise PermanentError(f"{what} has no line items to return")
    items = [{"qty": item.quantity, "price": cents(item.unit_price), "id": _item_id(item), "url": item.product_url}
             for item in event.line_items]
    payload = {"email": email, "items": items, "purchase_keys": {"extid": str(event.order_id)}}
    check_sailthru("/return", payload, what)
    return "/return", payload


def map_incomplete_purchase(event: CheckoutEvent, settings: ReminderSettings) -> tuple[str, dict]:
    """An open checkout → the whole cart as an incomplete purchase with the abandoned-cart
    reminder; a completed one → the clearing call (``items: []``, no reminder)."""
    what = f"checkout {event.checkout_id}"
    email = _require_email(event.email, what)
    if event.completed:
        return "/purchase", {"email": email, "items": [], "incomplete": 1}
    if not event.line_items:
        raise PermanentError(f"{what} is open but empty: nothing to remind about")
    payload = {
        "email": email,
        "items": [_purchase_item(item, what) for item in event.line_items],
        "incomplete": 1,
    }
    if settings.reminder_template:
        payload["reminder_template"] = settings.reminder_template
        payload["reminder_time"] = settings.reminder_time
    if event.message_id:
        payload["message_id"] = event.message_id
    check_sailthru("/purchase", payload, what)
    return "/purchase", payload


def map_content(event: ProductEvent) -> tuple[str, dict]:
    """A product created or changed → ``POST /content`` (the catalog item, keyed by URL and SKU)."""
    if not event.url:
        raise PermanentError(f"product {event.product_id} has no URL: Sailthru keys content by url")
    payload = {
        "url": event.url,
        "title": event.title,
        "price": cents(event.price),
        "tags": list(event.categories),
        "keys": {"sku": event.sku},
        "vars": {"sku": event.sku},
    }
    if event.brand:
        payload["vars"]["brand"] = event.brand
    if event.image_url:
        payload["images"] = {"full": {"url": event.image_url}}
    if event.inventory is not None:
        payload["inventory"] = event.inventory
    if event.description:
        payload["description"] = event.description
    check_sailthru("/content", payload, f"product {event.product_id}")
    return "/content", payload


def _var_value(value):
    """A profile var as JSON: money and other Decimals as numbers, dates as ISO text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return sailthru_date(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def map_user(event: CustomerEvent, ltv_vars: Mapping[str, object] | None = None) -> tuple[str, dict]:
    """A customer created or changed → ``POST /user`` (profile upsert keyed by extid).

    ``vars`` are the name fields, the customer's own ``vars`` and ``ltv_vars`` (later ones win);
    every name must fit Sailthru's 32 characters.
    """
    profile_vars = {"first_name": event.first_name, "last_name": event.last_name, "phone": event.phone,
                    **event.vars, **(ltv_vars or {})}
    too_long = sorted(name for name in profile_vars if len(name) > MAX_VAR_NAME)
    if too_long:
        raise PermanentError(f"customer {event.customer_id}: Sailthru var names must be at most "
                             f"{MAX_VAR_NAME} characters: {', '.join(too_long)}")
    payload = {
        "id": str(event.customer_id),
        "key": "extid",
        "keysconflict": "merge",
        "vars": {name: _var_value(value) for name, value in profile_vars.items() if value is not None},
    }
    if event.email:
        payload["keys"] = {"email": event.email}
    if not event.accepts_marketing:
        payload["optout_email"] = "all"
    check_sailthru("/user", payload, f"customer {event.customer_id}")
    return "/user", payload


__all__ = [
    "cents",
    "map_content",
    "map_incomplete_purchase",
    "map_purchase",
    "map_return",
    "map_user",
    "sailthru_date",
]
