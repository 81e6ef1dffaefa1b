"""Sendlane `added_to_cart` and `product_viewed` from a warehouse events model (issue 17.8), against
the emulator: each event sent once, whatever reruns the window, on the demo store (Segment's
`tracks` table; SQLite, PostgreSQL and DuckDB) and on a store of its own (ISO text timestamps)."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

import pytest
from acme_store import AcmeStore, write_models
from sqlalchemy import create_engine, text

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity
from storesync.quality import QuarantineStore
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

END = datetime(2026, 11, 20)


def _settings(emulator, warehouse_url, tmp_path, **more) -> Settings:
    emulator.configure(rate_limits_enabled=False)
    return Settings(
        warehouse_url=warehouse_url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=6000),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=6000),
        quarantine_thresholds={"*": 0.5}, **more)


def _run(settings: Settings, window: Window, run_id: str) -> tuple[dict, dict]:
    ctx = open_context(settings, run_id=run_id, sync_name="site_events", now=window.end + timedelta(minutes=5))
    plan = plan_entity(ctx, "site_events", window)
    return plan, deliver_vendor(ctx, "sendlane")


def _sent(emulator) -> dict:
    return {path: emulator.requests("sendlane", path)
            for path in ("/tracking/product-viewed", "/tracking/added-to-cart")}


def test_demo_store_events_reach_sendlane_once(tmp_path, emulator, warehouse_db_url):
    url = warehouse_db_url
    stats = generate_demo_store(url, DemoStoreSpec(orders=400, seed=4, end=END, days=5, bad_share=0.0))
    engine = create_engine(url)
    with engine.connect() as conn:
        with_email = conn.execute(text(
            "SELECT event, COUNT(*) FROM tracks WHERE context_traits_email IS NOT NULL GROUP BY event")).all()
    engine.dispose()
    expected = dict(with_email)
    assert stats.site_events > 0 and expected["Product Viewed"] > 0 and expected["Product Added"] > 0
    settings = _settings(emulator, url, tmp_path)
    everything = Window(END - timedelta(days=6), END)

    plan, delivery = _run(settings, everything, "first")
    assert plan["events"]["product_viewed"] == expected["Product Viewed"]
    assert plan["events"]["added_to_cart"] == expected["Product Added"]
    assert plan["events"]["site_event_anonymous"] == stats.site_events - sum(expected.values())
    assert plan["entities"]["site_events"]["quarantined"] == 0
    sent = _sent(emulator)
    assert len(sent["/tracking/product-viewed"]) == expected["Product Viewed"]
    assert len(sent["/tracking/added-to-cart"]) == expected["Product Added"]
    add = sent["/tracking/added-to-cart"][0]["body"]
    assert add["cart_id"] and add["line_items"][0]["product_id"] and isinstance(add["time"], int)
    assert delivery["accepted"] == sum(expected.values())

    # A rerun of the window, and a day inside it: nothing new is planned or sent.
    plan, _ = _run(settings, everything, "rerun")
    _run(settings, Window(END - timedelta(days=1), END), "day")
    assert sum(plan["planned"].values()) == 0
    assert {k: len(v) for k, v in _sent(emulator).items()} == {k: len(v) for k, v in sent.items()}


def test_a_store_of_its_own_with_iso_text_events(tmp_path, emulator):
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    settings = _settings(emulator, store.url, tmp_path, models_dir=write_models(tmp_path / "models"))
    hour = Window(datetime(2026, 11, 10, 10), datetime(2026, 11, 10, 11))
    store.track("v1", "Product Viewed", hour.start + timedelta(minutes=5))
    store.track("a1", "Product Added", hour.start + timedelta(minutes=6), cart_id="c9", quantity=2, price="12.50")
    store.track("a2", "Product Added", hour.start + timedelta(minutes=7), cart_id=None, quantity=1, price="12.50")
    store.track("v2", "Product Viewed", hour.start + timedelta(minutes=8), email=None)
    store.track("o1", "Order Completed", hour.start + timedelta(minutes=9))
    store.track("v3", "Product Viewed", hour.end)  # the next hour's

    plan, delivery = _run(settings, hour, "h1")
    assert plan["events"] == {"site_event_other": 1, "site_event_anonymous": 1, "product_viewed": 1,
                              "added_to_cart": 1}
    assert plan["entities"]["site_events"]["reasons"] == {"cart_present_when_added": 1}
    [record] = QuarantineStore(create_engine(settings.ledger_url)).open_rows("site_events")
    assert record["entity_id"] == "a2"
    sent = _sent(emulator)
    [viewed] = sent["/tracking/product-viewed"]
    assert viewed["body"]["email"] == "c1@example.com" and viewed["body"]["product_id"] == 1
    [added] = sent["/tracking/added-to-cart"]
    assert added["body"]["cart_id"] == "c9" and added["body"]["total"] == 25.0
    assert added["body"]["time"] == calendar.timegm((hour.start + timedelta(minutes=6)).timetuple())
    assert delivery["accepted"] == 2

    plan, _ = _run(settings, hour, "h1-again")
    assert sum(plan["planned"].values()) == 0 and len(emulator.requests("sendlane")) == 2
    store.dispose()
