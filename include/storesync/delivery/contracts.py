"""The vendors' documented contracts for a repeated request, as data: which deliveries can be
sent again after an unknown outcome without a duplicate, and how a delivery is read back.

Used by the senders (``storesync.pipeline.senders``) to resolve unknown outcomes and by the
remedies and reconciliation (``storesync.delivery.remedies``, ``storesync.delivery.reconcile``)
to tell what a person must settle from what the next run settles. The sources are quoted in
``docs/exactly-once.md``.
"""

from __future__ import annotations

# Sendlane event types a resend cannot duplicate, and the vendor's word for why.
SENDLANE_SAFE_RESENDS = {
    "order_placed": "Sendlane records the first event for an event + order id and skips repeats",
    "order_fulfilled": "Sendlane records the first event for an event + order id and skips repeats",
    "order_cancelled": "Sendlane records the first event for an event + order id and skips repeats",
    "order_refunded": "Sendlane records the first event for an event + order id and skips repeats",
    "product_added": "new product data overwrites the product's existing data",
    "contact": "list contacts are added or updated by email",
}
# Sailthru endpoints whose writes can be read back (by extid, url, or profile id).
SAILTHRU_LOOKUPS = ("/purchase", "/content", "/user")


def sendlane_resend_is_safe(event_type: str, endpoint: str = "") -> bool:
    """Can this Sendlane delivery be sent again after an unknown outcome without a duplicate?"""
    return event_type in SENDLANE_SAFE_RESENDS or endpoint.startswith("/lists/")


def lookup_request(endpoint: str, payload: dict) -> tuple[str, dict] | None:
    """The Sailthru GET that reads back what ``payload`` wrote at ``endpoint``, or None."""
    if endpoint == "/purchase":
        extid = (payload.get("purchase_keys") or {}).get("extid") or payload.get("extid")
        return ("purchase", {"purchase_id": str(extid), "purchase_key": "extid"}) if extid else None
    if endpoint == "/content" and payload.get("url"):
        return "content", {"url": payload["url"]}
    if endpoint == "/user" and payload.get("id"):
        return "user", {"id": payload["id"], "key": payload.get("key", "email")}
    return None
