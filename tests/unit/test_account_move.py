"""An account key changed: the ledger's deliveries and the pipeline's per-account rows move together."""

from __future__ import annotations

from collections import Counter
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


# ---------------------------------------------------------------------------- a corrected credential
def settle(ledger, account, **values):
    from sqlalchemy import update

    from storesync.delivery.ledger import deliveries

    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.account == account).values(**values))


def test_rows_of_a_key_the_vendor_refused_are_adopted_and_a_real_account_is_not(db_url):
    """A key whose every answer was an auth error never reached an account: the sync's open rows
    under it move to the current key (a row planned again under the current key is superseded,
    not doubled); another sync's (another account of the vendor, its token mistyped) stay. A key
    the vendor answered anything else under is a real account and stays where it is."""
    from storesync.delivery.ledger import ACCEPTED, RETRY, SUPERSEDED
    from storesync.pipeline.accounts import move_bookkeeping

    ledger = HistoricalLedger(db_url)
    ledger.plan([delivery("typo", "o1"), delivery("typo", "o2"), delivery("right", "o2")], sync_name="s", run_id="r")
    ledger.plan([delivery("typo-b", "o9")], sync_name="brand-b", run_id="rb")
    ledger.promote("r")
    ledger.promote("rb")
    settle(ledger, "typo-b", state=RETRY, error_class="auth", http_status=401)
    with ledger.engine.begin() as conn:
        conn.execute(insert(chunks), {"entity": "orders", "day": date(2025, 12, 1), "vendor": "sailthru",
                                      "account": "typo", "status": "planned", "planned": 2, "updated_at": NOW})
    # Never tried at all: not proof of anything, so not adopted.
    assert ledger.adopt_unproven_accounts("sailthru", "right", sync_name="s", also=move_bookkeeping) == {}
    settle(ledger, "typo", state=RETRY, error_class="auth", http_status=401, vendor_error="invalid API key")
    assert ledger.adopt_unproven_accounts("sailthru", "right", sync_name="s", also=move_bookkeeping) == {"typo": 1}
    assert ledger.open_by_account("sailthru") == {"right": 2, "typo-b": 1}  # brand B's own stay B's
    states = {(d.account, d.entity_id): d.state for d in ledger.in_state(SUPERSEDED)}
    assert states == {("typo", "o2"): SUPERSEDED}  # the right key holds o2 already
    assert [r[3] for r in rows(ledger.engine, chunks)] == ["right"]  # checkpoints follow

    # A real account (the vendor accepted something under it) is never adopted.
    ledger.plan([delivery("brand-a", "o3"), delivery("brand-a", "o4")], sync_name="s", run_id="r2")
    ledger.promote("r2")
    settle(ledger, "brand-a", state=RETRY, error_class="auth", http_status=401)
    with ledger.engine.begin() as conn:
        from sqlalchemy import update

        from storesync.delivery.ledger import deliveries

        conn.execute(update(deliveries).where(deliveries.c.entity_id == "o3").values(state=ACCEPTED))
    assert ledger.adopt_unproven_accounts("sailthru", "right", sync_name="s", also=move_bookkeeping) == {}
    assert ledger.open_by_account("sailthru") == {"right": 2, "brand-a": 1, "typo-b": 1}
    # Nor one that answered a data error (the credentials worked there).
    ledger.plan([delivery("brand-b", "o5"), delivery("brand-b", "o6")], sync_name="s", run_id="r3")
    ledger.promote("r3")
    settle(ledger, "brand-b", state=RETRY, error_class="auth", http_status=401)
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.entity_id == "o5").values(
            state="dead", error_class="permanent", http_status=400))
    assert ledger.adopt_unproven_accounts("sailthru", "right", sync_name="s", also=move_bookkeeping) == {}


@pytest.fixture
def wrong_then_right(tmp_path, emulator):
    from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    end = datetime(2026, 11, 20)
    generate_demo_store(f"sqlite:///{tmp_path / 'store.db'}", DemoStoreSpec(orders=60, seed=3, end=end, days=2,
                                                                            bad_share=0.0))
    emulator.configure(rate_limits_enabled=False)

    def settings(*, typo: bool) -> Settings:
        token, key = emulator.sendlane_api_token, emulator.sailthru_api_key
        return Settings(
            warehouse_url=f"sqlite:///{tmp_path / 'store.db'}", ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=token + "x" if typo else token,
                                      integration_token=emulator.sendlane_integration_token, budget_per_minute=0),
            sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=key + "x" if typo else key,
                                      secret=emulator.sailthru_secret, budget_per_minute=0))

    return settings, end


@pytest.mark.slow
def test_a_corrected_credential_delivers_everything_once_with_no_command(wrong_then_right, emulator):
    """Wrong token and key -> the run fails on auth -> both corrected in the settings (the
    connection) -> the next scheduled run delivers every order of both windows, each once, to
    both vendors: nothing stranded under the wrong key, no `ledger move-account`."""
    from datetime import timedelta

    from sqlalchemy import create_engine, text

    from storesync.core.errors import AuthError
    from storesync.core.windows import Window
    from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity

    settings, end = wrong_then_right
    first, second = Window(end - timedelta(days=2), end - timedelta(days=1)), Window(end - timedelta(days=1), end)

    def run(window, run_id, current):
        ctx = open_context(current, run_id=run_id, sync_name="order_events", now=end + timedelta(hours=1))
        plan_entity(ctx, "orders", window)
        return {vendor: deliver_vendor(ctx, vendor) for vendor in ("sendlane", "sailthru")}

    wrong = settings(typo=True)
    ctx = open_context(wrong, run_id="run-1", sync_name="order_events", now=end + timedelta(hours=1))
    plan_entity(ctx, "orders", first)
    for vendor in ("sendlane", "sailthru"):
        with pytest.raises(AuthError):
            deliver_vendor(ctx, vendor)
    assert not emulator.purchases() and not emulator.requests(vendor="sendlane")
    wrong_keys = {v: getattr(wrong, v).account for v in ("sendlane", "sailthru")}

    right = settings(typo=False)
    # The failed run is cleared and runs again (its window planned again, now under the right
    # key): the rows planned under the wrong one are superseded by those, not sent twice.
    run(first, "run-1", right)
    reports = run(second, "run-2", right)
    for vendor in ("sendlane", "sailthru"):
        assert reports[vendor]["open_under_other_accounts"] == {}
        assert Ledger(right.ledger_url).open_by_account(vendor) == {}
        assert wrong_keys[vendor] != getattr(right, vendor).account

    engine = create_engine(right.warehouse_url)
    with engine.connect() as conn:
        owed = {str(o) for (o,) in conn.execute(text(
            "SELECT order_id FROM order_status_history GROUP BY order_id HAVING MIN(changed_at) >= :s "
            "AND MIN(changed_at) < :e"), {"s": first.start, "e": second.end})}
    engine.dispose()
    purchases = Counter(p["extid"] for p in emulator.purchases())
    placed = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed"))
    assert owed and set(purchases) == owed == set(placed)
    assert max(purchases.values()) == max(placed.values()) == 1
