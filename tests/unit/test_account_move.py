"""An account key changed: the ledger's deliveries and the pipeline's per-account rows move together."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import insert, select

from storesync.delivery.ledger import Ledger, LedgerConflict, PlannedDelivery
from storesync.pipeline.accounts import move_account
from storesync.pipeline.consent import ensure_table, unsubscribes
from storesync.pipeline.historical import HistoricalLedger, chunks, jobs

NOW = datetime(2026, 1, 2)


def delivery(account, entity):
    return PlannedDelivery(vendor="sailthru", account=account, event_type="purchase", entity_id=entity,
                           version="1", endpoint="/purchase", payload={"id": entity})


def rows(engine, table):
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(*[table.c[c] for c in table.primary_key.columns.keys()],
                                                            table.c.account)))


def test_moving_an_account_re_keys_the_historical_bookkeeping_and_unsubscribes_with_the_deliveries(db_url):
    ledger = HistoricalLedger(db_url)  # the ledger's tables and the historical sync's
    ensure_table(ledger.engine)
    ledger.plan([delivery("old", "o1")], sync_name="s", run_id="r")
    with ledger.engine.begin() as conn:
        conn.execute(insert(chunks), [
            {"entity": "orders", "day": date(2025, 12, 1), "vendor": "sailthru", "account": "old", "status": "done",
             "planned": 3, "updated_at": NOW},
            # The new key already checkpointed this day: its row is kept, the old one dropped.
            {"entity": "orders", "day": date(2025, 12, 2), "vendor": "sailthru", "account": "old",
             "status": "planned", "planned": 1, "updated_at": NOW},
            {"entity": "orders", "day": date(2025, 12, 2), "vendor": "sailthru", "account": "new", "status": "done",
             "planned": 1, "updated_at": NOW},
            {"entity": "orders", "day": date(2025, 12, 1), "vendor": "sendlane", "account": "old", "status": "done",
             "planned": 2, "updated_at": NOW},  # another vendor's key of the same name: not moved
        ])
        conn.execute(insert(jobs), {"batch_key": "b1", "vendor": "sailthru", "account": "old", "job": "purchase_import",
                                    "event_type": "purchase", "status": "completed", "created_at": NOW})
        conn.execute(insert(unsubscribes), [
            {"vendor": "sailthru", "account": "old", "email": "a@example.com", "seen_at": NOW},
            {"vendor": "sailthru", "account": "old", "email": "b@example.com", "seen_at": NOW},
            {"vendor": "sailthru", "account": "new", "email": "b@example.com", "seen_at": NOW},
        ])
    moved = move_account(Ledger(db_url), "sailthru", "old", "new")
    assert moved == {"storesync_deliveries": 1, chunks.name: 1, unsubscribes.name: 1, jobs.name: 1}
    assert rows(ledger.engine, chunks) == [
        ("orders", date(2025, 12, 1), "sailthru", "new", "new"),
        ("orders", date(2025, 12, 1), "sendlane", "old", "old"),
        ("orders", date(2025, 12, 2), "sailthru", "new", "new"),
    ]
    assert rows(ledger.engine, unsubscribes) == [("sailthru", "new", "a@example.com", "new"),
                                                 ("sailthru", "new", "b@example.com", "new")]
    with ledger.engine.connect() as conn:
        assert conn.execute(select(jobs.c.account)).scalars().all() == ["new"]
    assert ledger.open_by_account("sailthru") == {"new": 1}


def test_a_refused_move_changes_no_table(db_url):
    ledger = HistoricalLedger(db_url)
    ensure_table(ledger.engine)
    ledger.plan([delivery("old", "o1"), delivery("new", "o1")], sync_name="s", run_id="r")
    with ledger.engine.begin() as conn:
        conn.execute(insert(unsubscribes), {"vendor": "sailthru", "account": "old", "email": "a@example.com",
                                            "seen_at": NOW})
    with pytest.raises(LedgerConflict, match="already holds 1 sailthru deliveries"):
        move_account(Ledger(db_url), "sailthru", "old", "new")
    assert rows(ledger.engine, unsubscribes) == [("sailthru", "old", "a@example.com", "old")]
