"""Storefront events → Sendlane ``added_to_cart`` and ``product_viewed`` (issue 17.8).

The ``site_events`` model reads the window's events from the tracker's tables (Segment's
``tracks`` or a Snowplow ``events`` table: event id, name, anonymous/user id, email, product, cart,
time). Each event passes the quality gate (``site_events`` suite), then becomes one Sendlane
delivery whose identity is the event's own id: an event replanned by a rerun, a backfill or a
retry is already in the ledger and is sent once. A person's events share one ordering key (a hash
of the email, never the email), so they reach Sendlane in the order they happened.

Not sent, and counted in the report's ``events``: events of other names (``site_event_other``)
and events with no email (``site_event_anonymous``: Sendlane ties events to a contact by email;
browsing before login is normal, not bad data). Sailthru has no such events here.
"""

from __future__ import annotations

from decimal import Decimal


from storesync.core.events import CheckoutEvent, LineItem
from storesync.core.windows import Window
from storesync.delivery.ledger import CHANGE, PlannedDelivery
from storesync.pipeline import syncs
from storesync.pipeline.build import _clean, _int_or_str, _records
from storesync.pipeline.targets import person_key

SITE_EVENT_NAMES = ("added_to_cart", "product_viewed")
# An event is immutable: its id is its identity, and one version says "this event".
EVENT_VERSION = "event"


def _line(row: dict) -> LineItem:
    quantity = int(row.get("quantity") or 1)
    price = row.get("price")
    return LineItem(
        product_id=_int_or_str(row["product_id"]), sku=_clean(row.get("sku")) or "",
        product_name=_clean(row.get("product_name")) or "", quantity=quantity,
        unit_price=price if price is not None else Decimal("0"),
        total=(price * quantity) if price is not None else Decimal("0"),
        product_url=_clean(row.get("product_url")), image_url=_clean(row.get("image_url")),
        variant_id=_clean(row.get("variant_id")),
    )


def _cart(row: dict) -> CheckoutEvent:
    """An add to cart as the cart Sendlane's mapper takes: the line added, and the cart's total
    when the tracker recorded it (else the line's)."""
    line = _line(row)
    total = row.get("cart_total")
    return CheckoutEvent(
        checkout_id=_int_or_str(row["cart_id"]), customer_id=_int_or_str(row.get("user_id")),
        email=row["email"], status="open", checkout_url=_clean(row.get("checkout_url")),
        currency=_clean(row.get("currency")) or "", subtotal=line.total, total_tax=Decimal("0"),
        total=total if total is not None else line.total, created_at=row["occurred_at"],
        updated_at=row["occurred_at"], line_items=(line,), completed=False,
    )


def _planned(target, row: dict) -> PlannedDelivery:
    from storesync.mappers import sendlane
    from storesync.mappers.sendlane import unix_seconds

    paths = target.settings.sendlane.event_paths
    name = row["event_name"]
    if name == "added_to_cart":
        mapped = target._safely(sendlane.map_added_to_cart, _cart(row), paths)
    else:
        mapped = target._safely(lambda: sendlane.map_product_viewed(
            row["email"], _int_or_str(row["product_id"]), paths, variant_id=_clean(row.get("variant_id"))))
    endpoint, payload = mapped
    if endpoint != "/_invalid":
        payload["time"] = unix_seconds(row["occurred_at"])  # when it happened, not when it arrived
    return PlannedDelivery(
        vendor=target.vendor, account=target.account, event_type=name, entity_id=str(row["event_id"]),
        version=EVENT_VERSION, endpoint=endpoint, payload=payload,
        ordering_key=f"person:{person_key(row['email'])}", seq=unix_seconds(row["occurred_at"]),
        occurred_at=row["occurred_at"], versioning=CHANGE,
    )


def plan_site_events(ctx: syncs.SyncContext, window: Window) -> syncs.PlanReport:
    """The window's storefront events, through the gate, into the ledger for Sendlane."""
    report = syncs._new_report(ctx, window)
    targets = [t for t in ctx.targets if t.vendor == "sendlane"]
    for n, frame in enumerate(ctx.warehouse.stream("site_events", window, ctx.settings.chunk_size)):
        known = frame["event_name"].isin(SITE_EVENT_NAMES)
        report.events["site_event_other"] += int((~known).sum())
        frame = frame[known].reset_index(drop=True)
        if not len(frame):
            continue
        passed = syncs._validated(ctx, report, "site_events", frame, f"site-events-{n}")
        rows = _records(passed)
        anonymous = [r for r in rows if not r.get("email")]
        report.events["site_event_anonymous"] += len(anonymous)
        rows = [r for r in rows if r.get("email")]
        report.events.update(r["event_name"] for r in rows)
        syncs._stage(ctx, report, window, (_planned(t, r) for r in rows for t in targets))
    syncs._gate(ctx, report)
    return report


__all__ = ["SITE_EVENT_NAMES", "plan_site_events"]
