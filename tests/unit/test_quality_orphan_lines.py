"""Orphan order lines (issue 17.4): a line whose order does not exist is found by a bounded query
per window, quarantined with its reason, and counted in the run's summary, on the demo schema and
on a store of its own."""

from __future__ import annotations

from datetime import datetime, timedelta

from acme_store import AcmeStore, write_models
from sqlalchemy import create_engine, text

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.pipeline.jobs import format_summary, open_context, plan_entity, run_nightly
from storesync.quality import QuarantineStore
from storesync.warehouse.demo import ORPHAN_ORDER_OFFSET, DemoStoreSpec, generate_demo_store

W1 = Window(datetime(2026, 11, 10), datetime(2026, 11, 11))
W2 = Window(W1.end, W1.end + timedelta(days=1))


def _plan(settings: Settings, window: Window, run_id: str) -> dict:
    ctx = open_context(settings, run_id=run_id, sync_name="order_events", now=window.end + timedelta(minutes=5))
    return plan_entity(ctx, "orders", window)


def test_an_orphan_line_is_quarantined_in_its_window_and_released_once_its_order_arrives(tmp_path):
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    settings = Settings(warehouse_url=store.url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
                        models_dir=write_models(tmp_path / "models"), quarantine_thresholds={"*": 1.0},
                        sendlane=SendlaneSettings(api_token="t", integration_token="t"),  # a run needs them
                        sailthru=SailthruSettings(api_key="k", secret="s"))
    store.customer(1, W1.start)
    store.product(1, W1.start)
    store.order(1, 1, W1.start + timedelta(hours=3))
    store.item(55, 9, W1.start + timedelta(hours=5))      # order 9 does not exist (yet)
    store.item(56, 8, W1.start - timedelta(hours=5))      # an orphan of an earlier window: not this one's

    report = _plan(settings, W1, "w1")
    lines = report["entities"]["order_lines"]
    assert (lines["rows_in"], lines["passed"], lines["quarantined"]) == (2, 1, 1)
    assert set(lines["reasons"]) == {"order_exists"}
    quarantine = QuarantineStore(create_engine(settings.ledger_url))
    [record] = quarantine.open_rows("order_lines")
    assert str(record["entity_id"]) == "55" and "does not exist" in str(record["reasons"])
    assert report["planned"] == {"sendlane:order_placed": 1, "sailthru:purchase": 1}, "order 1 is sent"

    # Order 9 lands in the next window (its line 55 with it): the line passes and its record closes.
    store._insert("acme_orders", ord_no=9, cust_no=1, mail="c1@example.com", state="processing", cur="USD",
                  net=25.0, tax=0.0, disc=0.0, gross=25.0, placed=(W2.start + timedelta(hours=1)).isoformat("T"),
                  touched=(W2.start + timedelta(hours=1)).isoformat("T"))
    report = _plan(settings, W2, "w2")
    assert report["entities"]["order_lines"]["quarantined"] == 0
    assert report["resolved"] == {"order_lines": 1}
    assert quarantine.open_rows("order_lines") == []
    store.dispose()


def test_the_demo_store_has_an_orphan_line_and_the_nightly_summary_counts_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    end = datetime(2026, 11, 20)
    stats = generate_demo_store(url, DemoStoreSpec(orders=300, seed=3, end=end, days=5, bad_share=0.01))
    assert stats.orphan_lines == 1
    engine = create_engine(url)
    with engine.connect() as conn:
        orphan_at = conn.execute(text("SELECT created_at FROM order_lines WHERE order_id >= :o"),
                                 {"o": ORPHAN_ORDER_OFFSET}).scalar_one()
    engine.dispose()
    orphan_at = datetime.fromisoformat(str(orphan_at))
    window = Window(orphan_at.replace(minute=0, second=0, microsecond=0), end)
    settings = Settings(warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
                        quarantine_thresholds={"*": 1.0})
    summary = run_nightly(settings, window, run_id="dry", dry_run=True)
    assert summary["rows"]["order_lines"]["reasons"].get("order_exists") == 1
    assert "order_exists ×1" in format_summary(summary)
    # The window before it reads no orphan: the query is bounded by the window.
    before = Window(window.start - timedelta(hours=6), window.start)
    summary = run_nightly(settings, before, run_id="dry-before", dry_run=True)
    assert "order_exists" not in summary["rows"]["order_lines"]["reasons"]
