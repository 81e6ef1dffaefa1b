"""A ledger with known rows for the Storesync view's tests (every table the view reads).

Times are relative to ``now`` (the server reads the real clock): deliveries spread over the last
five days plus a batch 40 days back (outside every default window), answers in the last hour for
the per-minute chart, a live budget window, three runs, two watermarks, a quarantine with open
and fixed records, and one computed LTV day. Dead letters and held rows carry personal data in
their payloads and errors, so the masking shows.

``ledger_counts`` is the tests' oracle: plain SQL on the same database, independent of the view.
"""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta

from sqlalchemy import create_engine, text

SENDLANE_ACCOUNT = "acct-sl-1"
SAILTHRU_ACCOUNT = "acct-st-1"
PERSON = {"email": "jane.doe@example.com", "first_name": "Jane", "last_name": "Doe", "phone": "+1 555 0100",
          "address": {"street": "12 Elm Street", "city": "Springfield", "zip": "12345"}}
BUDGET_SLOTS = 37


def build_ui_ledger(url: str, now: datetime | None = None) -> dict:
    """Create the storesync tables on ``url`` and fill them; returns what was written."""
    from storesync.core.throttle import rate_slots, rate_slots_metadata
    from storesync.delivery import ledger
    from storesync.ltv.tables import ensure_ltv_tables
    from storesync.quality import store

    now = now or datetime.utcnow()
    engine = create_engine(url)
    for metadata in (ledger.metadata, store.metadata, rate_slots_metadata):
        metadata.create_all(engine, checkfirst=True)
    rows, n = [], 0

    def delivery(vendor, account, state, updated_at, *, event="order_placed", error=None, payload=None,
                 endpoint=None):
        nonlocal n
        n += 1
        rows.append({
            "delivery_key": f"{vendor}|{account}|{event}|{n}|v1", "vendor": vendor, "account": account,
            "event_type": event, "entity_id": str(1000 + n), "version": "v1", "ordering_key": f"order:{1000 + n}",
            "seq": 0, "method": "POST",
            "endpoint": endpoint or ("/tracking/order-placed" if vendor == "sendlane" else "/purchase"),
            "payload": json.dumps(payload or {"order_id": 1000 + n, "total": "19.60", **PERSON}),
            "historical": False, "state": state, "attempts": 1 if state != "planned" else 0,
            "error_class": error and error[0], "http_status": error and error[1], "vendor_code": error and error[2],
            "vendor_error": error and error[3], "sync_name": "order_events", "planned_run_id": "run-1",
            "last_run_id": "run-1", "window_start": updated_at - timedelta(hours=1), "window_end": updated_at,
            "occurred_at": updated_at - timedelta(minutes=30), "planned_at": updated_at - timedelta(minutes=5),
            "updated_at": updated_at, "accepted_at": updated_at if state == "accepted" else None,
            "versioning": "change"})

    for day in range(5):
        at = now - timedelta(days=day, hours=1)
        for i in range(10 + day):
            delivery("sendlane", SENDLANE_ACCOUNT, "accepted", at + timedelta(seconds=i))
        for i in range(4):
            delivery("sailthru", SAILTHRU_ACCOUNT, "accepted", at + timedelta(seconds=i))
    for i in range(12):  # answered in the last hour: the per-minute chart
        delivery("sendlane", SENDLANE_ACCOUNT, "accepted", now - timedelta(minutes=3 + i % 4, seconds=i))
    invalid = ("validation", 400, "E_EMAIL", "invalid email address jane.doe@example.com (from 10.1.2.3)")
    for i in range(3):
        delivery("sendlane", SENDLANE_ACCOUNT, "dead", now - timedelta(hours=2, minutes=i), error=invalid)
    delivery("sailthru", SAILTHRU_ACCOUNT, "dead", now - timedelta(hours=3), event="purchase",
             error=("validation", 400, "99", "Invalid template"))
    # Unknown outcomes, one of each kind (storesync.delivery.remedies.classify_unknown, default
    # settings): a Sendlane checkout no rule settled is held for a person; the rest settle on the
    # next run: a customer noted awaiting_read (its contact read), a Sailthru purchase (its lookup
    # by extid), a Sendlane order event (Sendlane skips a repeated order event: resent).
    timeout = "read timed out after the request was sent"
    delivery("sendlane", SENDLANE_ACCOUNT, "unknown", now - timedelta(hours=1), event="checkout_started",
             endpoint="/tracking/checkout-started", error=("network", None, None, timeout))
    delivery("sendlane", SENDLANE_ACCOUNT, "unknown", now - timedelta(hours=1, minutes=1),
             event="customer_added", endpoint="/tracking/customer-added",
             error=("network", None, "awaiting_read", timeout))
    delivery("sailthru", SAILTHRU_ACCOUNT, "unknown", now - timedelta(hours=1, minutes=2), event="purchase",
             error=("network", None, None, timeout),
             payload={"email": PERSON["email"], "items": [], "purchase_keys": {"extid": "order-1042"}})
    delivery("sendlane", SENDLANE_ACCOUNT, "unknown", now - timedelta(hours=1, minutes=3),
             error=("network", None, None, timeout))
    for i in range(5):
        delivery("sendlane", SENDLANE_ACCOUNT, "planned", now - timedelta(minutes=1))
    for i in range(20):  # outside every default window
        delivery("sendlane", SENDLANE_ACCOUNT, "accepted", now - timedelta(days=40, seconds=i))

    wall = time.time()
    with engine.begin() as conn:
        conn.execute(ledger.deliveries.insert(), rows)
        conn.execute(ledger.sync_runs.insert(), [
            {"run_id": "scheduled__run-ok", "sync_name": "order_events", "window_start": now - timedelta(hours=2),
             "window_end": now - timedelta(hours=1), "dry_run": False, "status": "succeeded",
             "started_at": now - timedelta(minutes=50), "finished_at": now - timedelta(minutes=49),
             "counts": json.dumps({"planned": 40, "sent": {"sendlane": 36, "sailthru": 4}}), "error": None},
            {"run_id": "scheduled__run-failed", "sync_name": "customers", "window_start": now - timedelta(hours=3),
             "window_end": now - timedelta(hours=2), "dry_run": False, "status": "failed",
             "started_at": now - timedelta(minutes=110), "finished_at": now - timedelta(minutes=109),
             "counts": None, "error": "quarantine share 0.2 over threshold; first bad row jane.doe@example.com"},
        ])
        conn.execute(ledger.watermarks.insert(), [
            {"sync_name": "order_events", "window_end": now - timedelta(hours=1), "updated_at": now},
            {"sync_name": "customers", "window_end": now - timedelta(hours=5), "updated_at": now},
        ])
        conn.execute(rate_slots.insert(), [{"key": f"sendlane:{SENDLANE_ACCOUNT}", "slot_at": wall - 5 - i * 0.1}
                                           for i in range(BUDGET_SLOTS)]
                     + [{"key": f"sendlane:{SENDLANE_ACCOUNT}", "slot_at": wall - 3600}])  # an old slot
        conn.execute(store.quarantine.insert(), [
            {"run_id": "run-1", "batch_id": "orders-0", "entity": "orders", "entity_id": str(5000 + i),
             "reasons": json.dumps(["email_well_formed: not an email address", "order_total_matches: off by 1.00"]
                                   if i % 2 else ["email_well_formed: not an email address"]),
             "row": json.dumps({"order_id": 5000 + i, **PERSON}), "quarantined_at": now - timedelta(days=i % 3),
             "resolved_at": now if i == 0 else None, "resolved_run_id": "run-2" if i == 0 else None}
            for i in range(4)])
        _ltv(conn, now.date(), ensure_ltv_tables)
    engine.dispose()
    return {"deliveries": len(rows), "now": now}


def _ltv(conn, as_of: date, ensure_ltv_tables) -> None:
    ensure_ltv_tables(conn)
    epoch = date(1970, 1, 1)
    customers = [(1, 10.0, 15.0), (2, 60.0, 80.0), (3, 60.0, None), (4, 300.0, 420.0), (5, 7000.0, 9000.0)]
    for cid, net, predicted in customers:
        conn.execute(text(
            "INSERT INTO storesync_customer_ltv_versions (customer_id, valid_from, valid_to, order_count, "
            "gross_revenue, net_revenue, avg_order_value, first_order_day, rfm_frequency, rfm_recency_days, "
            "first_valid_day, rfm_monetary) VALUES (:c, :f, :t, 1, :n, :n, :n, :d, 0, 0, :d, :n)"),
            {"c": cid, "f": as_of - timedelta(days=30), "t": date(9999, 12, 31), "n": net,
             "d": (as_of - timedelta(days=30) - epoch).days})
        if predicted is not None:
            conn.execute(text("INSERT INTO storesync_ltv_predictions (as_of, customer_id, predicted_clv, horizon_days) "
                              "VALUES (:a, :c, :p, 365)"), {"a": as_of, "c": cid, "p": predicted})
    conn.execute(text("INSERT INTO storesync_ltv_runs (as_of, computed_at, method, definition, rows_written, "
                      "customers_recomputed) VALUES (:a, :now, 'full', 'test', 5, 5)"),
                 {"a": as_of, "now": datetime.utcnow()})


def ledger_counts(url: str, *, days: int = 14, now: datetime | None = None) -> dict:
    """The oracle: what the view must show, straight from SQL."""
    now = now or datetime.utcnow()
    since = datetime.combine((now - timedelta(days=days - 1)).date(), datetime.min.time())
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            states = dict(conn.execute(text(
                "SELECT state, COUNT(*) FROM storesync_deliveries WHERE updated_at >= :s GROUP BY state"),
                {"s": since}).all())
            dead = conn.execute(text("SELECT COUNT(*) FROM storesync_deliveries WHERE state = 'dead'")).scalar()
            unknown = dict(conn.execute(text(  # by what build_ui_ledger made each (its comment)
                "SELECT event_type, id FROM storesync_deliveries WHERE state = 'unknown'")).all())
            dead_ids = [r[0] for r in conn.execute(text(
                "SELECT id FROM storesync_deliveries WHERE state = 'dead' ORDER BY id"))]
            open_q = dict(conn.execute(text(  # rows, not records: a still-bad row is recorded by every run
                "SELECT entity, COUNT(DISTINCT entity_id) + SUM(CASE WHEN entity_id IS NULL THEN 1 ELSE 0 END)"
                " FROM storesync_quarantine WHERE resolved_at IS NULL GROUP BY entity")).all())
            customers = conn.execute(text(
                "SELECT COUNT(*) FROM storesync_customer_ltv WHERE as_of = (SELECT MAX(as_of) FROM storesync_ltv_runs)"
            )).scalar()
    finally:
        engine.dispose()
    # The unknown rows' ids by what each is: held for a person, or settled by the next run's read,
    # lookup or resend.
    kinds = {"held": unknown["checkout_started"], "read": unknown["customer_added"],
             "lookup": unknown["purchase"], "resend": unknown["order_placed"]}
    return {"states": states, "dead": dead, "unknown": len(unknown), "unknown_ids": kinds,
            "dead_ids": dead_ids, "quarantine_open": open_q, "ltv_customers": customers}
