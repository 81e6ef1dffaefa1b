"""Quarantined orders re-checked on later runs (issues #4 and #5).

A small store, run window by window as the hourly order-events DAG runs it: an order that is
quarantined, changes status while quarantined and is fixed later owes every event of its earlier
windows, each planned exactly once and in order; a quarantined row that is never fixed is neither
counted again in a later run's quarantine share nor recorded again.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import create_engine, select, update

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.delivery.ledger import PLANNED, STAGED, Ledger, deliveries
from storesync.pipeline.jobs import open_context, plan_entity
from storesync.quality import QualityGateError, QuarantineStore
from storesync.warehouse import schema

DAY = timedelta(days=1)
W1 = Window(datetime(2026, 10, 1), datetime(2026, 10, 2))
W2 = Window(W1.end, W1.end + DAY)
W3 = Window(W2.end, W2.end + DAY)
W4 = Window(W3.end, W3.end + DAY)
SOON = timedelta(minutes=20)  # a run starts shortly after its window closes

# Every event an order owes each vendor, by the status change that makes it.
SENDLANE = {"placed": "order_placed", "fulfilled": "order_fulfilled", "refunded": "order_refunded"}
SAILTHRU = {"placed": "purchase", "refunded": "return"}


class Store:
    """A tiny warehouse on the demo schema, written the way a shop's database changes."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        schema.metadata.create_all(self.engine)
        self._history_id = 0
        created = datetime(2026, 9, 1)
        with self.engine.begin() as conn:
            conn.execute(schema.products.insert(), [dict(
                product_id=1, sku="MUG-1", title="Mug", url="https://shop.example/mug",
                image_url="https://shop.example/mug.jpg", price=D("10.00"), created_at=created,
                updated_at=created)])

    def add_order(self, order_id: int, placed_at: datetime, *, email: str | None = None) -> None:
        email = email or f"buyer{order_id}@example.com"
        with self.engine.begin() as conn:
            conn.execute(schema.customers.insert(), [dict(
                customer_id=order_id, email=f"buyer{order_id}@example.com", first_name="Ann",
                last_name="Buyer", accepts_marketing=True, created_at=placed_at, updated_at=placed_at)])
            conn.execute(schema.orders.insert(), [dict(
                order_id=order_id, customer_id=order_id, email=email, status="processing", currency="USD",
                subtotal=D("20.00"), total_tax=D("1.60"), total_discounts=D("0.00"), total=D("21.60"),
                payment_method="Visa", created_at=placed_at, updated_at=placed_at)])
            conn.execute(schema.order_lines.insert(), [dict(
                line_id=order_id * 10, order_id=order_id, product_id=1, sku="MUG-1", product_name="Mug",
                quantity=2, unit_price=D("10.00"), line_total=D("20.00"))])
        self._change(order_id, "processing", placed_at)

    def set_status(self, order_id: int, status: str, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schema.orders).where(schema.orders.c.order_id == order_id)
                         .values(status=status, updated_at=at))
        self._change(order_id, status, at)

    def fix_email(self, order_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schema.orders).where(schema.orders.c.order_id == order_id)
                         .values(email=f"buyer{order_id}@example.com"))

    def _change(self, order_id: int, status: str, at: datetime) -> None:
        self._history_id += 1
        with self.engine.begin() as conn:
            conn.execute(schema.order_status_history.insert(), [dict(
                history_id=self._history_id, order_id=order_id, status=status, changed_at=at)])


@pytest.fixture
def env(db_url, tmp_path):
    store = Store(db_url)
    settings = Settings(warehouse_url=db_url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
                        quarantine_thresholds={"*": 1.0},  # credentials: a run without them plans nothing
                        sendlane=SendlaneSettings(api_token="t", integration_token="t"),
                        sailthru=SailthruSettings(api_key="k", secret="s"))
    yield store, settings
    store.engine.dispose()


def plan(settings: Settings, window: Window, run_id: str, *, now: datetime | None = None) -> dict:
    ctx = open_context(settings, run_id=run_id, sync_name="order_events", now=now or window.end + SOON)
    return plan_entity(ctx, "orders", window)


def order_deliveries(settings: Settings, order_id: int) -> list[tuple]:
    """(vendor, event type, seq, state) of the order's deliveries, in the order they were staged."""
    with Ledger(settings.ledger_url).engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.vendor, deliveries.c.event_type, deliveries.c.seq,
                                   deliveries.c.state, deliveries.c.occurred_at)
                            .where(deliveries.c.entity_id == str(order_id)).order_by(deliveries.c.id)).all()
    return [tuple(r) for r in rows]


def owed(*kinds: str) -> Counter:
    """What ``report["planned"]`` counts for these order events (sendlane and sailthru)."""
    counts = Counter()
    for kind in kinds:
        counts[f"sendlane:{SENDLANE[kind]}"] += 1
        if kind in SAILTHRU:
            counts[f"sailthru:{SAILTHRU[kind]}"] += 1
    return counts


def assert_owed_in_order(settings: Settings, order_id: int, kinds: list[str]) -> None:
    rows = order_deliveries(settings, order_id)
    for vendor, names in (("sendlane", SENDLANE), ("sailthru", SAILTHRU)):
        mine = sorted((r for r in rows if r[0] == vendor), key=lambda r: r[2])
        expected = [(names[k], seq) for seq, k in enumerate(kinds, start=1) if k in names]
        # Each owed event once (seq = its place in the order's history), nothing else.
        assert [(r[1], r[2]) for r in mine] == expected, vendor
        assert all(r[3] == PLANNED for r in mine), mine
        occurred = [r[4] for r in mine]
        assert occurred == sorted(occurred), "events out of order"


@pytest.mark.parametrize("changed_in_fix_window", [False, True], ids=["quiet", "changed-again"])
def test_an_order_fixed_later_gets_every_event_of_its_earlier_windows(env, changed_in_fix_window):
    store, settings = env
    store.add_order(1, W1.start + timedelta(hours=3), email="not-an-email")  # quarantined in window 1
    store.add_order(2, W1.start + timedelta(hours=4))  # a good order alongside
    r1 = plan(settings, W1, "w1")
    assert r1["entities"]["orders"]["quarantined"] == 1
    assert Counter(r1["planned"]) == owed("placed")  # order 2 only

    store.set_status(1, "fulfilled", W2.start + timedelta(hours=2))  # still quarantined
    r2 = plan(settings, W2, "w2")
    assert r2["planned"] == {}
    assert order_deliveries(settings, 1) == []

    store.fix_email(1)  # fixed in the warehouse before window 3's run
    if changed_in_fix_window:  # ... and changed again in window 3, so window 3's own pass sees it
        store.set_status(1, "refunded", W3.start + timedelta(hours=5))
    r3 = plan(settings, W3, "w3")
    history = ["placed", "fulfilled"] + (["refunded"] if changed_in_fix_window else [])
    assert Counter(r3["planned"]) == owed(*history)
    assert_owed_in_order(settings, 1, history)
    assert QuarantineStore(Ledger(settings.ledger_url).engine).open_rows("orders") == []

    # A rerun of window 3 (a retry, and a backfill with a run id of its own) plans nothing.
    assert plan(settings, W3, "w3")["planned"] == {}
    assert plan(settings, W3, "w3-backfill")["planned"] == {}
    assert plan(settings, W4, "w4")["planned"] == {}
    assert_owed_in_order(settings, 1, history)


def test_a_late_rerun_of_an_old_window_replans_the_whole_history(env):
    """The re-check reads the order's history up to now, not to the end of the (old) window being
    rerun: otherwise the changes of later windows would be lost once the order resolves."""
    store, settings = env
    store.add_order(1, W1.start + timedelta(hours=3), email="not-an-email")
    store.add_order(2, W1.start + timedelta(hours=4))
    plan(settings, W1, "w1")
    store.set_status(1, "fulfilled", W2.start + timedelta(hours=2))
    plan(settings, W2, "w2")
    store.set_status(1, "refunded", W3.start + timedelta(hours=2))
    plan(settings, W3, "w3")
    assert order_deliveries(settings, 1) == []

    store.fix_email(1)
    late = W3.end + timedelta(hours=2)
    report = plan(settings, W1, "w1-backfill", now=late)  # someone backfills window 1
    assert Counter(report["planned"]) == owed("placed", "fulfilled", "refunded")
    assert plan(settings, W4, "w4")["planned"] == {}
    assert_owed_in_order(settings, 1, ["placed", "fulfilled", "refunded"])


def test_a_never_fixed_row_is_not_counted_or_recorded_again(env):
    store, settings = env
    settings = settings.with_overrides(quarantine_thresholds={"orders": 0.4, "order_lines": 0.4})
    store.add_order(1, W1.start + timedelta(hours=1), email="not-an-email")
    store.add_order(2, W1.start + timedelta(hours=2))
    store.add_order(3, W1.start + timedelta(hours=3))
    r1 = plan(settings, W1, "w1")  # 1 of 3 quarantined: under 40 %
    assert r1["entities"]["orders"] == {**r1["entities"]["orders"], "rows_in": 3, "quarantined": 1}

    quarantine = QuarantineStore(Ledger(settings.ledger_url).engine)
    (first,) = quarantine.history("orders", 1)

    # Window 2 has one good order. The old row, re-checked and still bad, is not part of it: counted
    # in, the share would be 1 of 2 (50 %) and this run would fail for a row of window 1.
    store.add_order(4, W2.start + timedelta(hours=1))
    r2 = plan(settings, W2, "w2")
    orders = r2["entities"]["orders"]
    assert (orders["rows_in"], orders["passed"], orders["quarantined"]) == (1, 1, 0)
    assert r2["entities"]["order_lines"]["rows_in"] == 1
    assert r2["rechecked"]["orders"] == {"checked": 1, "passed": 0, "quarantined": 1}
    assert Counter(r2["planned"]) == owed("placed")

    # Nor is it recorded again: one record, still the one of window 1.
    plan(settings, W3, "w3")
    assert quarantine.history("orders", 1) == [first]
    (still_open,) = quarantine.open_rows("orders")
    assert still_open["run_id"] == "w1" and still_open["entity_id"] == 1


def test_a_row_of_the_current_window_still_counts(env):
    """Only rows *re-checked* from earlier runs stay out of the share: an open order that changes
    in this window is part of this window's batch, counted and recorded as such."""
    store, settings = env
    settings = settings.with_overrides(quarantine_thresholds={"orders": 0.4, "order_lines": 0.4})
    store.add_order(1, W1.start + timedelta(hours=1), email="not-an-email")
    for i in (2, 3):
        store.add_order(i, W1.start + timedelta(hours=i))
    plan(settings, W1, "w1")
    store.set_status(1, "cancelled", W2.start + timedelta(hours=1))  # still bad, changed in window 2
    store.add_order(4, W2.start + timedelta(hours=2))
    with pytest.raises(QualityGateError):  # 1 of 2 quarantined in window 2
        plan(settings, W2, "w2")
    assert order_deliveries(settings, 4)[0][3] == STAGED  # nothing of a failed run is released


def test_an_order_fixed_in_a_run_whose_gate_fails_is_owed_to_the_rerun(env):
    """A re-checked order is resolved only once its run passed the gate: when the run fails, the
    rerun (with a run id of its own, as a backfill has) still owes and plans its events."""
    store, settings = env
    settings = settings.with_overrides(quarantine_thresholds={"orders": 0.4, "order_lines": 0.4})
    store.add_order(1, W1.start + timedelta(hours=1), email="not-an-email")
    for i in (2, 3):
        store.add_order(i, W1.start + timedelta(hours=i))
    plan(settings, W1, "w1")
    store.set_status(1, "fulfilled", W2.start + timedelta(hours=1))  # still bad: 1 of 3 in window 2
    store.add_order(5, W2.start + timedelta(hours=2))
    store.add_order(7, W2.start + timedelta(hours=3))
    plan(settings, W2, "w2")
    store.fix_email(1)

    store.add_order(6, W3.start + timedelta(hours=2), email="bad")  # window 3 alone fails its gate
    with pytest.raises(QualityGateError):
        plan(settings, W3, "w3")
    assert {r[3] for r in order_deliveries(settings, 1)} == {STAGED}
    quarantine = QuarantineStore(Ledger(settings.ledger_url).engine)
    assert 1 in {r["entity_id"] for r in quarantine.open_rows("orders")}

    store.fix_email(6)
    report = plan(settings, W3, "w3-rerun")
    assert_owed_in_order(settings, 1, ["placed", "fulfilled"])
    assert report["promoted"] == 3 + 2  # order 1's three (adopted) and order 6's two
    assert quarantine.open_rows("orders") == []


def test_the_summary_shows_the_recheck_apart(env):
    from storesync.pipeline.jobs import format_summary, summarise

    store, settings = env
    store.add_order(1, W1.start + timedelta(hours=1), email="not-an-email")
    plan(settings, W1, "w1")
    store.add_order(2, W2.start + timedelta(hours=1))
    ctx = open_context(settings, run_id="w2", sync_name="order_events", now=W2.end + SOON)
    summary = summarise(ctx, {"orders": plan_entity(ctx, "orders", W2)}, {})
    assert summary["rows"]["orders"]["rows_in"] == 1
    assert summary["rechecked"]["orders"] == {"checked": 1, "passed": 0, "quarantined": 1}
    assert "re-checked from earlier runs' quarantine: 1, fixed 0, still quarantined 1" in format_summary(summary)


def test_an_order_whose_deliveries_another_run_took_over_stays_open(env, monkeypatch):
    """Two runs re-check the same fixed order and plan the same keys: the second (a backfill)
    takes the staged rows over. The first passes its gate, but its promote does not release the
    order's rows (they are the backfill's now), so it must not close the order's quarantine record:
    the backfill then fails its gate, and only the still-open record makes a later run plan (and so
    adopt and release) the order's events."""
    from storesync.pipeline import syncs

    store, settings = env
    settings = settings.with_overrides(quarantine_thresholds={"orders": 0.4, "order_lines": 0.4})
    store.add_order(1, W1.start + timedelta(hours=1), email="not-an-email")
    for i in (2, 3):
        store.add_order(i, W1.start + timedelta(hours=i))
    plan(settings, W1, "w1")  # 1 of 3 quarantined: passes
    store.fix_email(1)
    store.add_order(4, W3.start + timedelta(hours=1))  # the hourly run's own good order
    store.add_order(5, W2.start + timedelta(hours=1), email="bad")  # the backfill's window fails

    real_gate = syncs._gate
    backfill: list[Exception] = []

    def gate(ctx, report):
        if ctx.run_id == "hourly" and not backfill:
            # The backfill plans between the hourly run's planning and its gate.
            with pytest.raises(QualityGateError) as failed:
                plan(settings, W2, "backfill", now=W3.end + SOON)
            backfill.append(failed.value)
        return real_gate(ctx, report)

    monkeypatch.setattr(syncs, "_gate", gate)
    hourly = plan(settings, W3, "hourly")
    assert backfill, "the backfill did not run inside the hourly run"
    assert hourly["rechecked"]["orders"]["passed"] == 1
    with Ledger(settings.ledger_url).engine.connect() as conn:
        owners = set(conn.execute(select(deliveries.c.planned_run_id)
                                  .where(deliveries.c.entity_id == "1")).scalars())
    assert owners == {"backfill"}  # taken over: the hourly run's promote left them staged
    assert {r[3] for r in order_deliveries(settings, 1)} == {STAGED}
    assert hourly["promoted"] == 2  # order 4's placed event, both vendors
    assert "orders" not in hourly["resolved"]
    quarantine = QuarantineStore(Ledger(settings.ledger_url).engine)
    assert 1 in {r["entity_id"] for r in quarantine.open_rows("orders")}

    monkeypatch.setattr(syncs, "_gate", real_gate)
    later = plan(settings, W4, "w4")  # the next hourly run re-checks it and adopts its rows
    assert later["resolved"] == {"orders": 1}
    assert_owed_in_order(settings, 1, ["placed"])
    assert 1 not in {r["entity_id"] for r in quarantine.open_rows("orders")}
