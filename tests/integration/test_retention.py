"""Retention through the real sync (issue 22, Must-show 1): the order-events sync runs three daily
windows of a small demo store into the emulator, with two orders quarantined (a bad email) and
one of them fixed, so resolved. The retention job then scrubs with an explicit clock 31 days on
(no waiting): afterwards no storesync table holds any sent customer's email, name, address or
phone in any column; the resolved quarantine row is scrubbed, the open one is not. A rerun of the
same windows and a backfill of them (the historical sync, checkpoints ignored) send nothing: the
emulator's counts do not move. The ledger on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from personal_data import traces
from sqlalchemy import create_engine, select, text

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.delivery.ledger import ACCEPTED, Ledger, deliveries
from storesync.pipeline.historical import HistoricalRequest, JobPolicy, run_historical
from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity
from storesync.privacy.retention import SCRUBBED_PAYLOAD, scrub_expired
from storesync.quality import QuarantineStore
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

END = datetime(2026, 11, 20)
DAYS = [date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19)]
SPEC = DemoStoreSpec(orders=45, seed=23, end=END, days=3, bad_share=0.0)
ROWS = select(deliveries.c.id, deliveries.c.state).order_by(deliveries.c.id)


def _settings(warehouse_url: str, ledger_url: str, emulator) -> Settings:
    return Settings(
        warehouse_url=warehouse_url, ledger_url=ledger_url,
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=0),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=0),
        quarantine_thresholds={"*": 0.5},  # two bad orders of a handful a day are this test's own
    )


def _sync(settings: Settings, day: date, run_id: str) -> None:
    """What the order-events DAG's tasks do for one window: plan, then deliver to each vendor."""
    ctx = open_context(settings, run_id=run_id, sync_name="order_events")
    plan_entity(ctx, "orders", HistoricalRequest.window(day))
    for vendor in ("sendlane", "sailthru"):
        deliver_vendor(ctx, vendor)


def _people(warehouse_url: str) -> dict[str, dict]:
    """Every order of the windows with its buyer's email, names, street address and phone."""
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT o.order_id, o.customer_id, o.email, c.first_name, c.last_name, c.address_1, c.phone"
            "  FROM orders o LEFT JOIN customers c ON c.customer_id = o.customer_id"
            " WHERE o.order_id IN (SELECT order_id FROM order_status_history"
            "                       WHERE changed_at >= :s AND changed_at < :e)"),
            {"s": datetime(2026, 11, 17), "e": END}).mappings().all()
    engine.dispose()
    return {str(r["order_id"]): dict(r) for r in rows}


def _first_orders_of(warehouse_url: str, day: date, n: int) -> list[str]:
    engine = create_engine(warehouse_url)
    start = datetime(day.year, day.month, day.day)
    with engine.connect() as conn:
        ids = conn.execute(text(
            "SELECT o.order_id FROM orders o JOIN customers c ON c.customer_id = o.customer_id"
            " WHERE o.order_id IN (SELECT order_id FROM order_status_history GROUP BY order_id"
            "                       HAVING MIN(changed_at) >= :s AND MIN(changed_at) < :e)"
            "   AND c.address_1 IS NOT NULL ORDER BY o.order_id LIMIT :n"),
            {"s": start, "e": start + timedelta(days=1), "n": n}).scalars().all()
    engine.dispose()
    return [str(i) for i in ids]


def _set_email(warehouse_url: str, order_id: str, email: str) -> None:
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET email = :e WHERE order_id = :o"),
                     {"e": email, "o": int(order_id)})
    engine.dispose()


@pytest.mark.slow
def test_after_retention_no_sent_customer_is_left_and_a_rerun_and_a_backfill_send_nothing(
        db_url, emulator, tmp_path):
    emulator.configure(rate_limits_enabled=False, job_delay_s=0.05)
    warehouse_url = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(warehouse_url, SPEC)
    settings = _settings(warehouse_url, db_url, emulator)
    fixed, still_bad = _first_orders_of(warehouse_url, DAYS[0], 2)
    for order_id in (fixed, still_bad):
        _set_email(warehouse_url, order_id, "not-an-email")

    _sync(settings, DAYS[0], "order_events/day1")
    quarantine = QuarantineStore(Ledger(db_url).engine)
    assert {fixed, still_bad} <= quarantine.open_ids("orders")
    _set_email(warehouse_url, fixed, "fixed.buyer@example.com")  # the next window's re-check passes it
    for n, day in enumerate(DAYS[1:], start=2):
        _sync(settings, day, f"order_events/day{n}")
    assert quarantine.open_ids("orders") == {still_bad}
    ledger = Ledger(db_url)
    with ledger.engine.connect() as conn:
        states = conn.execute(ROWS).all()
    assert states and {s for _, s in states} == {ACCEPTED}
    people = _people(warehouse_url)
    sent = {k: p for k, p in people.items() if k != still_bad}
    open_person = people[still_bad]
    # Only the open quarantine row may still name its buyer (and whoever shares their name).
    others = [p for p in sent.values() if p["customer_id"] != open_person["customer_id"]]

    def open_row(table: str, row: dict) -> bool:
        return table == "storesync_quarantine" and row["resolved_at"] is None

    assert len(others) >= 20 and traces([db_url], others, skip=open_row), \
        "before retention the ledger holds what it sent"

    too_soon = scrub_expired(ledger, days=30, now=datetime.utcnow() + timedelta(days=29))
    assert too_soon.deliveries == 0 and too_soon.quarantine == 0
    report = scrub_expired(ledger, days=30, now=datetime.utcnow() + timedelta(days=31))

    assert report.deliveries == len(states) and report.quarantine == 1
    assert traces([db_url], others, skip=open_row) == []
    assert traces([db_url], [{"email": "fixed.buyer@example.com"}, {"email": "not-an-email"}],
                  skip=open_row) == []
    resolved = quarantine.history("orders", fixed)
    assert resolved and all(r["row"] == {"scrubbed": "retention"} for r in resolved)
    assert quarantine.open_rows("orders")[0]["row"]["email"] == "not-an-email"  # still to be fixed
    with ledger.engine.connect() as conn:
        assert set(conn.execute(select(deliveries.c.payload)).scalars()) == {SCRUBBED_PAYLOAD}

    # The same windows again, live, then a backfill of them: nothing new is owed or sent.
    before = len(emulator.requests(recorded=None))
    for n, day in enumerate(DAYS, start=1):
        _sync(settings, day, f"order_events/day{n}-rerun")
    summary = run_historical(settings, HistoricalRequest(
        entities=("orders",), start=DAYS[0], end=DAYS[-1], dry_run=False, restart=True,
        jobs=JobPolicy(poll_interval_s=0.05, timeout_s=20)), "orders", run_id_prefix="backfill")
    assert summary["days"] == len(DAYS)
    assert len(emulator.requests(recorded=None)) == before
    with ledger.engine.connect() as conn:
        assert conn.execute(ROWS).all() == states
    assert traces([db_url], others, skip=open_row) == []
