"""Erasure end to end (issue 22): a customer with orders, carts and a profile, synced to both
vendors through the emulator, with LTV computed, is erased; afterwards no storesync table holds
their email, name or address in any column, the emulator holds nothing of theirs, and the next
runs (a changed profile, a rerun and a backfill of their old orders' windows) send nothing for
them, while everyone else still syncs. The ledger on SQLite and on PostgreSQL.

And on a warehouse that is not the demo's: a WooCommerce store (the pack's fixture), whose
erasure requests are WordPress's own (``wp_posts`` of type ``user_request``, read by the pack's
``erasure_requests.sql``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from personal_data import emulator_holds, traces
from sqlalchemy import create_engine, select, text

from storesync.core.config import DEFAULT_MODELS_DIR, SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.delivery.ledger import Ledger, erasures
from storesync.pipeline.jobs import run_nightly
from storesync.privacy.erasure import erase, requests_from_model
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

END = datetime(2026, 11, 20)
SPEC = DemoStoreSpec(orders=150, seed=22, end=END, days=6, bad_share=0.02)
WINDOW = Window(END - timedelta(days=7), END)
WOOCOMMERCE = Path(__file__).resolve().parents[2] / "include" / "sql" / "packs" / "woocommerce"


def _settings(warehouse_url, ledger_url, emulator, tmp_path) -> Settings:
    return Settings(
        warehouse_url=warehouse_url, ledger_url=ledger_url, models_dir=DEFAULT_MODELS_DIR, data_dir=tmp_path,
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=0,
                                  list_id=emulator.sendlane_list_id),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=0),
        quarantine_thresholds={"*": 0.5},  # the demo's bad rows in a short backfill window are not this test's
    )


def _person(warehouse_url) -> dict:
    """The customer with the most orders who also has a cart and a street address."""
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT c.customer_id, c.email, c.first_name, c.last_name, c.address_1, c.phone, COUNT(o.order_id) n"
            "  FROM customers c JOIN orders o ON o.customer_id = c.customer_id"
            " WHERE c.address_1 IS NOT NULL AND c.email LIKE '%@%'"
            "   AND EXISTS (SELECT 1 FROM checkouts k WHERE k.customer_id = c.customer_id)"
            " GROUP BY c.customer_id, c.email, c.first_name, c.last_name, c.address_1, c.phone"
            " ORDER BY n DESC, c.customer_id LIMIT 1")).mappings().one()
    engine.dispose()
    return dict(row)


def _sent_for(emulator, person, since_seq: int) -> list[dict]:
    email, cid = person["email"].lower(), str(person["customer_id"])
    return [r for r in emulator.requests(since_seq=since_seq, recorded=None)
            if email in json.dumps(r.get("body"), default=str).lower()
            or (r["endpoint"] == "/user" and cid in r["entity_ids"])]


@pytest.mark.slow
def test_erased_customer_leaves_no_trace_and_is_never_sent_again(db_url, emulator, tmp_path):
    from storesync.ltv.job import run_ltv_job

    emulator.configure(rate_limits_enabled=False)
    warehouse_url = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(warehouse_url, SPEC)
    settings = _settings(warehouse_url, db_url, emulator, tmp_path)
    person = _person(warehouse_url)

    run_nightly(settings, WINDOW, run_id="before")
    run_ltv_job(settings, END.date())
    # Preconditions: everything below would fail without the erasure.
    assert traces([db_url], [person]), "the ledger should hold the customer's payloads before the erasure"
    held = emulator_holds(emulator, person)
    assert {"users", "purchases", "records"} <= set(held), held
    ledger_before = Ledger(db_url)
    with create_engine(warehouse_url).connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM storesync_customer_ltv_versions WHERE customer_id = :c"),
                            {"c": person["customer_id"]}).scalar() > 0

    report = erase(settings, customer_ids=[str(person["customer_id"])], ledger=ledger_before)

    assert report.ok, report.failures
    assert report.vendors["sailthru"]["deleted"] == 1 and report.vendors["sendlane"]["deleted"] == 1
    assert report.scrubbed["storesync_deliveries"] > 0
    assert report.scrubbed["storesync_customer_ltv_versions"] > 0
    assert traces([db_url, warehouse_url], [person]) == []
    assert emulator_holds(emulator, person) == []
    with ledger_before.engine.connect() as conn:
        audit = conn.execute(select(erasures)).mappings().all()
    assert {a["kind"] for a in audit} == {"email", "customer_id"}
    assert all(a["erased_at"] is not None and json.loads(a["vendors"]) == {"sailthru": "deleted",
                                                                           "sendlane": "deleted"} for a in audit)

    # Their profile changes in the warehouse (a new content version would be owed), and so does
    # another customer's; the last day runs again, then a backfill of the whole old window.
    with create_engine(warehouse_url).begin() as conn:
        other = conn.execute(text("SELECT customer_id FROM customers WHERE customer_id <> :c AND email LIKE '%@%' "
                                  "ORDER BY customer_id LIMIT 1"), {"c": person["customer_id"]}).scalar()
        conn.execute(text("UPDATE customers SET last_name = last_name || 'son', updated_at = :t "
                          "WHERE customer_id IN (:c, :o)"),
                     {"t": END - timedelta(hours=1), "c": person["customer_id"], "o": other})
    since = max((r["seq"] for r in emulator.requests(recorded=None)), default=0)
    run_nightly(settings, Window(END - timedelta(days=1), END), run_id="after")
    run_nightly(settings, WINDOW, run_id="backfill")
    sent = emulator.requests(since_seq=since, recorded=None)
    assert any(r["endpoint"] == "/user" and str(other) in r["entity_ids"] for r in sent), \
        "everyone else still syncs: the other customer's changed profile goes out"
    assert _sent_for(emulator, person, since) == []
    assert emulator_holds(emulator, person) == []
    person["last_name"] += "son"
    assert traces([db_url], [person]) == []


def _privacy_request(warehouse_url: str, post_id: int, email: str, status: str) -> None:
    """A request as WordPress's wp_create_user_request() stores it."""
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO wp_posts (id, post_type, post_status, post_title, post_name,"
                          " post_parent, post_date_gmt, post_modified_gmt)"
                          " VALUES (:i, 'user_request', :s, :e, 'remove_personal_data', 0, :t, :t)"),
                     {"i": post_id, "s": status, "e": email, "t": datetime(2026, 11, 12, 9)})
    engine.dispose()


def test_erasure_requests_of_a_woocommerce_store_erase_the_customer_from_its_own_layout(emulator, tmp_path):
    from fixtures.packs import woocommerce as store

    warehouse_url = f"sqlite:///{tmp_path / 'store.db'}"
    store.build(warehouse_url)
    settings = replace(_settings(warehouse_url, f"sqlite:///{tmp_path / 'ledger.db'}", emulator, tmp_path),
                       models_dir=WOOCOMMERCE)
    emulator.configure(rate_limits_enabled=False)
    day = Window(store.DAY, store.DAY + timedelta(days=1))
    run_nightly(settings, day, run_id="day")
    # Dan (two orders, a profile) confirmed his request; Cleo's is still pending (not proven hers).
    dan = {"email": "dan@example.com", "customer_id": store.DAN, "first_name": "Dan", "last_name": "Dare"}
    cleo = {"email": "cleo@example.com", "customer_id": store.CLEO, "first_name": "Cleo",
            "last_name": "Patra"}
    _privacy_request(warehouse_url, 901, "dan@example.com", "request-confirmed")
    _privacy_request(warehouse_url, 902, "cleo@example.com", "request-pending")
    assert traces([settings.ledger_url], [dan]) and {"users", "purchases", "records"} <= set(
        emulator_holds(emulator, dan))

    requests = requests_from_model(settings)
    assert (requests.emails, requests.customer_ids) == (["dan@example.com"], [])
    report = erase(settings, emails=requests.emails, source="model", skip_done=True,
                   asked_at=requests.asked_at)

    assert report.ok and report.people == 1, report.failures
    assert report.vendors["sailthru"]["deleted"] == 1 and report.vendors["sendlane"]["deleted"] == 1
    assert traces([settings.ledger_url], [dan]) == [] and emulator_holds(emulator, dan) == []
    assert traces([settings.ledger_url], [cleo]) and emulator_holds(emulator, cleo)  # only who asked
    # Both profiles change (a new content version would be owed); the day runs again.
    with create_engine(warehouse_url).begin() as conn:
        conn.execute(text("UPDATE wp_wc_customer_lookup SET last_name = last_name || 'son',"
                          " date_last_active = :t WHERE user_id IN (:d, :c)"),
                     {"t": store.DAY + timedelta(hours=23), "d": store.DAN, "c": store.CLEO})
    since = max(r["seq"] for r in emulator.requests(recorded=None))
    run_nightly(settings, day, run_id="day-again")
    sent = emulator.requests(since_seq=since, recorded=None)
    assert any(r["endpoint"] == "/user" and str(store.CLEO) in r["entity_ids"] for r in sent)
    assert not any("dan@example.com" in json.dumps(r.get("body"), default=str).lower()
                   or (r["endpoint"] == "/user" and str(store.DAN) in r["entity_ids"])
                   for r in sent)
    assert erase(settings, emails=requests.emails, source="model", skip_done=True).people == 0  # done once
    with create_engine(settings.ledger_url).connect() as conn:  # when he asked, from WordPress's post
        assert set(conn.execute(select(erasures.c.requested_at)).scalars()) == {datetime(2026, 11, 12, 9)}
