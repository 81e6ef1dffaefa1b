"""The vendors' required fields, checked on every payload before it is planned.

A payload the vendor would reject for a missing field is caught here instead: the mapper raises
``PermanentError`` naming the endpoint and the field, and the delivery is planned as a local dead
letter (``/_invalid``) that the next run re-plans once the warehouse's data is fixed. Nothing that
is bound to fail leaves for the vendor, and the reason says what to fix.

The requirements are the published ones (``/work/shared/vendors.md``, from the vendors'
references): Sendlane lists the required fields per tracking path (``token`` is added by the
client, so it is not checked here); Sailthru's purchase and return items need ``qty``, ``price``,
``id`` and ``url`` (a purchase item a ``title`` too).
"""

from __future__ import annotations

from collections.abc import Mapping

from storesync.core.errors import PermanentError

# Sendlane, by event name (its paths are configuration: ``sendlane.event_paths``). The order
# events without a published path take order-placed's shape, so they need what it needs.
SENDLANE_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "order_placed": ("order_id",),
    "order_fulfilled": ("order_id",),
    "order_cancelled": ("order_id",),
    "order_refunded": ("order_id",),
    "customer_added": ("customer_id",),
    "product_added": ("product_id", "product_url", "image_url"),
    "checkout_started": ("checkout_id",),
    "added_to_cart": ("cart_id",),
    "product_viewed": ("product_id",),
    "custom_event": ("custom_event",),
}

# Sailthru, by endpoint: top-level fields, and the fields of each entry of ``items``.
SAILTHRU_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "/purchase": ("email", "items"),
    "/return": ("email", "items"),
    "/content": ("url",),
    "/user": ("id",),
}
SAILTHRU_ITEM_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "/purchase": ("qty", "title", "price", "id", "url"),
    "/return": ("qty", "price", "id", "url"),
}


def _missing(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


def check_sendlane(event_name: str, payload: Mapping, what: str) -> None:
    """Raise ``PermanentError`` when ``payload`` lacks a field Sendlane requires for ``event_name``."""
    absent = [name for name in SENDLANE_REQUIRED.get(event_name, ()) if _missing(payload.get(name))]
    if absent:
        raise PermanentError(f"{what}: Sendlane {event_name} requires {', '.join(absent)}, "
                             f"which the warehouse does not have for it")


def check_sailthru(endpoint: str, payload: Mapping, what: str) -> None:
    """Raise ``PermanentError`` when ``payload`` lacks a field Sailthru requires at ``endpoint``.
    An incomplete purchase (a cart) may have no items: that is how a cart is cleared."""
    cart = endpoint == "/purchase" and payload.get("incomplete") == 1
    absent = [name for name in SAILTHRU_REQUIRED.get(endpoint, ())
              if _missing(payload.get(name)) and not (cart and name == "items")]
    if absent:
        raise PermanentError(f"{what}: Sailthru {endpoint} requires {', '.join(absent)}")
    for item in payload.get("items") or ():
        gaps = [name for name in SAILTHRU_ITEM_REQUIRED.get(endpoint, ()) if _missing(item.get(name))]
        if gaps:
            raise PermanentError(f"{what}: item {item.get('id') or '?'} has no {' or '.join(gaps)} "
                                 f"(Sailthru {endpoint} requires items[].{', items[].'.join(gaps)})")


__all__ = ["SAILTHRU_ITEM_REQUIRED", "SAILTHRU_REQUIRED", "SENDLANE_REQUIRED", "check_sailthru", "check_sendlane"]
