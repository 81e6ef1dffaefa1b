"""Consent readback: the vendors' own unsubscribes are read into the ledger database and win.

The table logic on SQLite (and PostgreSQL where available); the readback and a customer sync
against the local emulator, whose summary lists every consent reversal it saw.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings, fingerprint
from storesync.pipeline.consent import (
    load_unsubscribed,
    read_back_sendlane,
    record_unsubscribes,
    unsubscribes,
)

T0 = datetime(2026, 11, 20, 12, 0)


def test_record_clear_and_reactivate(db_url):
    engine = create_engine(db_url)
    rows = [{"email": " Ann@Example.com ", "unsubscribed_at": "2026-11-19T10:00:00Z"},
            {"email": "bob@example.com", "unsubscribed_at": None}, {"email": ""}, {"email": None}]
    counts = record_unsubscribes(engine, "sendlane", "acct", rows, seen_at=T0, complete=True)
    assert counts == {"listed": 2, "new": 2, "reactivated": 0, "cleared": 0}
    assert load_unsubscribed(engine, "sendlane", "acct") == {"ann@example.com", "bob@example.com"}
    with engine.connect() as conn:
        ann = conn.execute(select(unsubscribes).where(unsubscribes.c.email == "ann@example.com")).mappings().one()
    assert ann["unsubscribed_at"] == datetime(2026, 11, 19, 10, 0) and ann["seen_at"] == T0

    # A partial listing (a readback that failed part-way) never clears anything.
    record_unsubscribes(engine, "sendlane", "acct", [{"email": "ann@example.com"}],
                        seen_at=T0 + timedelta(hours=1), complete=False)
    assert load_unsubscribed(engine, "sendlane", "acct") == {"ann@example.com", "bob@example.com"}
    # A complete listing without bob: bob re-subscribed at the vendor.
    counts = record_unsubscribes(engine, "sendlane", "acct", [{"email": "ann@example.com"}],
                                 seen_at=T0 + timedelta(hours=2), complete=True)
    assert counts["cleared"] == 1
    assert load_unsubscribed(engine, "sendlane", "acct") == {"ann@example.com"}
    # Listed again: active again. Other accounts and vendors are separate.
    counts = record_unsubscribes(engine, "sendlane", "acct", [{"email": "BOB@example.com"}, {"email": "ann@example.com"}],
                                 seen_at=T0 + timedelta(hours=3), complete=True)
    assert counts["reactivated"] == 1
    assert load_unsubscribed(engine, "sendlane", "acct") == {"ann@example.com", "bob@example.com"}
    assert load_unsubscribed(engine, "sendlane", "other") == frozenset()
    assert load_unsubscribed(engine, "sendlane") == {"ann@example.com", "bob@example.com"}
    engine.dispose()


def test_nothing_read_back_yet_is_an_empty_set_and_creates_no_file(tmp_path):
    missing = tmp_path / "never.db"
    assert load_unsubscribed(f"sqlite:///{missing}", "sendlane", "acct") == frozenset()
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    create_engine(f"sqlite:///{empty}").connect().close()
    assert load_unsubscribed(f"sqlite:///{empty}", "sendlane", "acct") == frozenset()


class FailingClient:
    """Two pages of unsubscribes, then the vendor stops answering."""

    def iter_unsubscribed(self, page_size=100):
        yield {"email": "carol@example.com", "unsubscribed_at": "2026-11-20T09:00:00Z"}
        yield {"email": "dave@example.com", "unsubscribed_at": "2026-11-20T09:05:00Z"}
        raise ConnectionError("vendor went away")


def test_a_failed_readback_keeps_what_it_read_and_clears_nothing(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    record_unsubscribes(engine, "sendlane", "acct", [{"email": "erin@example.com"}], seen_at=T0, complete=True)
    with pytest.raises(ConnectionError):
        read_back_sendlane(FailingClient(), engine, "acct", now=T0 + timedelta(hours=1))
    assert load_unsubscribed(engine, "sendlane", "acct") == {"carol@example.com", "dave@example.com",
                                                             "erin@example.com"}


# ---------------------------------------------------------------------------- against the emulator
@pytest.fixture
def consent_store(tmp_path, emulator):
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    end = datetime(2026, 11, 20)
    generate_demo_store(f"sqlite:///{tmp_path / 'store.db'}",
                        DemoStoreSpec(orders=120, seed=3, end=end, days=3, bad_share=0.0))
    emulator.configure(rate_limits_enabled=False)
    settings = Settings(
        warehouse_url=f"sqlite:///{tmp_path / 'store.db'}", ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=6000,
                                  list_id=emulator.sendlane_list_id),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=6000),
    )
    with create_engine(settings.warehouse_url).connect() as conn:
        consenting = conn.execute(text("SELECT email FROM customers WHERE accepts_marketing = 1 "
                                       "ORDER BY customer_id LIMIT 2")).scalars().all()
    return settings, emulator, consenting


def test_sendlane_unsubscribes_are_read_back_and_never_reversed(consent_store):
    from storesync.core.windows import Window
    from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity
    from storesync.pipeline.senders import default_sendlane_client

    settings, emulator, consenting = consent_store
    unsubscribed = consenting[0]
    # The person unsubscribed at Sendlane (a link in an email); the store still says they accept.
    emulator.configure(sendlane_unsubscribed=[{"email": unsubscribed.upper(),
                                               "unsubscribed_at": "2026-11-18T08:00:00Z"}])
    account = fingerprint(settings.sendlane.api_token)
    client = default_sendlane_client(settings.sendlane, account)
    counts = read_back_sendlane(client, settings.ledger_url, account, page_size=2)
    assert counts["listed"] >= 1 and counts["new"] == counts["listed"]
    assert unsubscribed.lower() in load_unsubscribed(settings.ledger_url, "sendlane", account)
    assert emulator.requests(vendor="sendlane", endpoint="/contacts/unsubscribed")

    ctx = open_context(settings, run_id="customers/1", sync_name="customers")
    plan_entity(ctx, "customers", Window.everything_before(datetime(2026, 11, 20)))
    for vendor in ("sendlane", "sailthru"):
        deliver_vendor(ctx, vendor)

    added = {r["body"]["email"]: r["body"] for r in
             emulator.requests(vendor="sendlane", endpoint="/tracking/customer-added")}
    assert added[unsubscribed]["accepts_marketing"] is False
    assert added[consenting[1]]["accepts_marketing"] is True
    contacts = {c["email"]: c for c in emulator.contacts(list_id=emulator.sendlane_list_id)}
    assert contacts[unsubscribed.lower()]["email_consent"] is False
    assert emulator.summary()["consent_reversals"] == []
    # Sailthru never receives optout "none": nothing there can reverse an opt-out either.
    assert all(r["body"].get("optout_email") != "none"
               for r in emulator.requests(vendor="sailthru", endpoint="/user", method="POST"))
    # Still unsubscribed at Sendlane after the sync.
    assert unsubscribed.lower() in {u["email"] for u in emulator.unsubscribed()}


def test_without_the_readback_the_same_sync_would_reverse_the_opt_out(consent_store):
    """The control: the emulator does see a reversal when the unsubscribes are ignored."""
    from storesync.core.windows import Window
    from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity
    from storesync.pipeline.targets import SendlaneTarget

    settings, emulator, consenting = consent_store
    emulator.configure(sendlane_unsubscribed=[consenting[0]])
    ctx = open_context(settings, run_id="customers/1", sync_name="customers", vendors=["sendlane"])
    ctx.targets = [SendlaneTarget(settings, unsubscribed=frozenset())]
    plan_entity(ctx, "customers", Window.everything_before(datetime(2026, 11, 20)))
    deliver_vendor(ctx, "sendlane")
    assert [r["email"] for r in emulator.summary()["consent_reversals"]][:1] == [consenting[0].lower()]
