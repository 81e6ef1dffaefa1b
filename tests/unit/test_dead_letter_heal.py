"""Fixed data heals: a delivery that died for its data (it could not be mapped, or the vendor
rejected it) is planned again from the warehouse's current data once that data changes, and
`replay` re-maps from the warehouse instead of resending a frozen payload. Exactly once holds:
nothing the vendor accepted is sent again, and an unchanged dead letter stays dead.

The ledger rules on their own first, then whole runs against the emulator (both vendors) on a
small demo store, checked for duplicates *and* completeness against what the warehouse owes."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text, update

from storesync.delivery.ledger import (
    ACCEPTED,
    DEAD,
    PLANNED,
    STAGED,
    SUPERSEDED,
    Ledger,
    Outcome,
    PlannedDelivery,
    deliveries,
)

# ---------------------------------------------------------------------------- the ledger's rules


def purchase(order_id: int, payload: dict, *, change_id: int = 1, seq: int = 1, endpoint="/purchase",
             event_type="purchase") -> PlannedDelivery:
    return PlannedDelivery("sailthru", "acct", event_type, str(order_id), str(change_id), endpoint, payload,
                           ordering_key=f"order:{order_id}", seq=seq, versioning="change")


def settle(ledger: Ledger, to: str, **where) -> None:
    """Set rows' state as the vendor's answers would (the engine is not what is tested here)."""
    conditions = [getattr(deliveries.c, k) == v for k, v in where.items()]
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(*conditions).values(state=to))


def plan_and_promote(ledger: Ledger, items, run_id: str, *, heal: bool = False):
    if heal:
        healed = ledger.replan_dead(items, sync_name="order_events", run_id=run_id)
    else:
        ledger.plan(items, sync_name="order_events", run_id=run_id)
        healed = Counter()
    ledger.promote(run_id)
    return healed


def rows(ledger: Ledger) -> list[dict]:
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(deliveries.select().order_by(deliveries.c.id)).mappings()]


@pytest.fixture
def ledger(db_url):
    return Ledger(db_url)  # SQLite and PostgreSQL


def test_a_dead_change_with_new_data_is_planned_again_and_replaces_the_dead_row(ledger):
    invalid = {"_invalid": "order 7: item TEE has no product URL"}
    plan_and_promote(ledger, [purchase(7, invalid, endpoint="/_invalid"),
                              purchase(7, {"items": ["tee"]}, event_type="return", change_id=2, seq=2,
                                       endpoint="/_invalid")], "run-1")
    settle(ledger, DEAD)
    later = purchase(7, {"email": "a@b.c"}, event_type="return", change_id=3, seq=3, endpoint="/return")
    plan_and_promote(ledger, [later], "run-2")
    assert ledger.waiting_behind_dead("sailthru", "acct") == 1  # the return waits behind its dead purchase

    # The same data again: nothing is re-planned, the dead rows stay dead.
    same = [purchase(7, invalid, endpoint="/_invalid")]
    assert plan_and_promote(ledger, same, "run-3", heal=True) == Counter()
    assert [r["state"] for r in rows(ledger)] == [DEAD, DEAD, PLANNED]

    # The product got its URL: the purchase is re-planned as a revision, the dead one superseded.
    fixed = {"email": "a@b.c", "items": [{"url": "https://shop/p/tee"}]}
    assert plan_and_promote(ledger, [purchase(7, fixed)], "run-4", heal=True) == Counter({"sailthru:purchase": 1})
    states = {(r["event_type"], r["version"].split("~")[0]): r["state"] for r in rows(ledger)
              if r["state"] != SUPERSEDED}
    assert states == {("purchase", "1"): PLANNED, ("return", "2"): DEAD, ("return", "3"): PLANNED}
    [old] = [r for r in rows(ledger) if r["state"] == SUPERSEDED]
    assert old["version"] == "1" and "re-planned" in old["vendor_error"]
    [revision] = [r for r in rows(ledger) if r["version"].startswith("1~")]
    assert revision["payload"] == '{"email":"a@b.c","items":[{"url":"https://shop/p/tee"}]}'
    assert revision["seq"] == 1 and revision["ordering_key"] == "order:7"
    # The purchase goes first; the old return still dead blocks the later one (order is kept).
    claimed = ledger.claim("sailthru", "acct", 10, "me")
    assert [(d.event_type, d.version) for d in claimed] == [("purchase", revision["version"])]


def test_nothing_accepted_or_in_flight_is_planned_again(ledger):
    plan_and_promote(ledger, [purchase(8, {"v": 1}), purchase(9, {"v": 1})], "run-1")
    settle(ledger, ACCEPTED, entity_id="8")
    settle(ledger, "sending", entity_id="9")
    assert plan_and_promote(ledger, [purchase(8, {"v": 2}), purchase(9, {"v": 2})], "run-2", heal=True) == Counter()
    assert [r["version"] for r in rows(ledger)] == ["1", "1"]


def test_two_planners_reading_the_same_fixed_data_plan_it_once(ledger):
    plan_and_promote(ledger, [purchase(7, {"v": 1})], "run-1")
    settle(ledger, DEAD)
    fixed = [purchase(7, {"v": 2})]
    ledger.replan_dead(fixed, sync_name="order_events", run_id="run-a")
    ledger.replan_dead(fixed, sync_name="order_events", run_id="run-b")  # read the same dead row
    assert len(rows(ledger)) == 2


def test_a_revision_that_dies_too_is_healed_by_the_next_change_and_a_failed_gate_is_adopted(ledger):
    plan_and_promote(ledger, [purchase(7, {"v": 1})], "run-1")
    settle(ledger, DEAD)
    plan_and_promote(ledger, [purchase(7, {"v": 2})], "run-2", heal=True)
    settle(ledger, DEAD, state=PLANNED)  # the vendor rejected the revision as well
    # run-3's gate fails: its revision stays staged; run-4 plans the same data and adopts it.
    ledger.replan_dead([purchase(7, {"v": 3})], sync_name="order_events", run_id="run-3")
    assert [r["state"] for r in rows(ledger)][-1] == STAGED
    assert plan_and_promote(ledger, [purchase(7, {"v": 3})], "run-4", heal=True) == Counter({"sailthru:purchase": 1})
    live = [r for r in rows(ledger) if r["state"] != SUPERSEDED]
    assert [(r["state"], r["planned_run_id"]) for r in live] == [(PLANNED, "run-4")]
    # Back to data seen before (v2, which died): a key of its own, owed once more.
    settle(ledger, DEAD, state=PLANNED)
    assert plan_and_promote(ledger, [purchase(7, {"v": 2})], "run-5", heal=True) == Counter({"sailthru:purchase": 1})
    assert [r["state"] for r in rows(ledger)] == [SUPERSEDED, SUPERSEDED, SUPERSEDED, PLANNED]


def test_a_dead_historical_row_is_re_planned_only_from_a_historical_event(ledger):
    from dataclasses import replace

    plan_and_promote(ledger, [replace(purchase(7, {"v": 1}), historical=True)], "run-1")
    settle(ledger, DEAD)
    assert ledger.dead_order_entities("sailthru", "acct") == {"7": {True}}
    assert plan_and_promote(ledger, [purchase(7, {"v": 2})], "run-2", heal=True) == Counter()  # a live event
    healed = plan_and_promote(ledger, [replace(purchase(7, {"v": 2}), historical=True)], "run-3", heal=True)
    assert healed == Counter({"sailthru:purchase": 1})
    assert [bool(r["historical"]) for r in rows(ledger) if r["state"] == PLANNED] == [True]


def test_a_waiting_row_with_old_data_is_replaced_but_never_once_it_has_left(ledger):
    """A return waiting (unsent) behind its dead purchase, planned from the old data, is replaced
    by the re-planned one. If it is claimed between the re-plan and the promote, the revision
    gives way instead: the change is sent once, never twice."""
    plan_and_promote(ledger, [purchase(7, {"v": 1}),
                              purchase(7, {"r": 1}, event_type="return", change_id=2, seq=2)], "run-1")
    settle(ledger, DEAD, event_type="purchase")
    healed = plan_and_promote(ledger, [purchase(7, {"v": 2}),
                                       purchase(7, {"r": 2}, event_type="return", change_id=2, seq=2)],
                              "run-2", heal=True)
    assert healed == Counter({"sailthru:purchase": 1, "sailthru:return": 1})
    live = [(r["event_type"], r["payload"], r["state"]) for r in rows(ledger) if r["state"] != SUPERSEDED]
    assert live == [("purchase", '{"v":2}', PLANNED), ("return", '{"r":2}', PLANNED)]

    plan_and_promote(ledger, [purchase(8, {"v": 1}),
                              purchase(8, {"r": 1}, event_type="return", change_id=2, seq=2)], "run-3")
    settle(ledger, DEAD, entity_id="8", event_type="purchase")
    ledger.replan_dead([purchase(8, {"r": 2}, event_type="return", change_id=2, seq=2)],
                       sync_name="order_events", run_id="run-4")
    settle(ledger, "sending", entity_id="8", event_type="return", version="2")  # claimed meanwhile
    ledger.promote("run-4")
    returns = {r["version"].split("~")[0] + ("~rev" if "~" in r["version"] else ""): r["state"]
               for r in rows(ledger) if r["entity_id"] == "8" and r["event_type"] == "return"}
    assert returns == {"2": "sending", "2~rev": SUPERSEDED}


# ---------------------------------------------------------------------------- whole runs
END = datetime(2026, 11, 20)


@pytest.fixture(scope="module")
def store_file(tmp_path_factory):
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    path = tmp_path_factory.mktemp("heal-store") / "store.db"
    generate_demo_store(f"sqlite:///{path}", DemoStoreSpec(orders=150, seed=7, end=END, days=2, bad_share=0.0))
    return path


@pytest.fixture
def env(tmp_path, emulator, store_file):
    import shutil

    from storesync.core.config import SailthruSettings, SendlaneSettings, Settings

    shutil.copy(store_file, tmp_path / "store.db")
    emulator.configure(rate_limits_enabled=False)
    settings = Settings(
        warehouse_url=f"sqlite:///{tmp_path / 'store.db'}", ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=0),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=0),
    )
    return settings, emulator


DAY1 = (END - timedelta(days=2), END - timedelta(days=1))
DAY2 = (END - timedelta(days=1), END)


def warehouse(settings, sql: str, **params):
    engine = create_engine(settings.warehouse_url)
    with engine.begin() as conn:
        result = conn.execute(text(sql), params)
        out = result.all() if result.returns_rows else None
    engine.dispose()
    return out


def break_a_product(settings) -> tuple[int, str, set[str], set[str]]:
    """Take the URL from the product most ordered on day one; returns it, its URL, the orders
    placed that day that hold it, and all orders that hold it. The first of day one's is
    cancelled later that day (its return is owed)."""
    start, end = DAY1
    placed = "SELECT order_id FROM order_status_history GROUP BY order_id HAVING MIN(changed_at) >= :s AND MIN(changed_at) < :e"
    [(product_id, url)] = warehouse(settings, f"""
        SELECT p.product_id, p.url FROM products p JOIN order_lines l ON l.product_id = p.product_id
        WHERE l.order_id IN ({placed}) GROUP BY p.product_id, p.url ORDER BY COUNT(*) DESC, p.product_id LIMIT 1""",
                                    s=start, e=end)
    orders = {str(o) for (o,) in warehouse(settings, f"SELECT DISTINCT order_id FROM order_lines WHERE product_id = :p "
                                                     f"AND order_id IN ({placed})", p=product_id, s=start, e=end)}
    everywhere = {str(o) for (o,) in warehouse(settings, "SELECT DISTINCT order_id FROM order_lines "
                                                         "WHERE product_id = :p", p=product_id)}
    warehouse(settings, "UPDATE products SET url = NULL WHERE product_id = :p", p=product_id)
    victim = min(orders, key=int)
    warehouse(settings, "DELETE FROM order_status_history WHERE order_id = :o AND history_id <> "
                        "(SELECT MIN(history_id) FROM order_status_history WHERE order_id = :o)", o=int(victim))
    warehouse(settings, "INSERT INTO order_status_history (history_id, order_id, status, changed_at) VALUES "
                        "((SELECT MAX(history_id) + 1 FROM order_status_history), :o, 'cancelled', :t)",
              o=int(victim), t=end - timedelta(minutes=1))
    return product_id, url, orders, everywhere


def run_window(settings, window, run_id: str) -> dict:
    from storesync.core.windows import Window
    from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity

    from storesync.pipeline.jobs import format_summary, summarise

    ctx = open_context(settings, run_id=run_id, sync_name="order_events", now=END + timedelta(hours=3))
    plan = plan_entity(ctx, "orders", Window(*window))
    delivered = {v: deliver_vendor(ctx, v) for v in ("sendlane", "sailthru")}
    return {"plan": plan, **delivered, "summary": format_summary(summarise(ctx, {"orders": plan}, delivered))}


def owed_purchases(settings) -> set[str]:
    return {str(o) for (o,) in warehouse(settings, "SELECT DISTINCT order_id FROM order_status_history "
                                                   "WHERE changed_at < :e", e=END)}


@pytest.mark.slow
def test_a_fixed_product_heals_its_orders_on_the_next_scheduled_run(env):
    settings, emulator = env
    product_id, url, broken, everywhere = break_a_product(settings)
    assert len(broken) >= 2

    first = run_window(settings, DAY1, "order_events/day1")
    sent = {p["extid"] for p in emulator.purchases()}
    assert not sent & broken  # caught locally, never sent
    ledger = Ledger(settings.ledger_url)
    dead = [d for d in ledger.in_state(DEAD, vendor="sailthru")]
    assert {d.entity_id for d in dead if d.event_type == "purchase"} == broken
    assert all(d.endpoint == "/_invalid" and "no product URL" in d.payload["_invalid"] for d in dead)
    assert first["sailthru"]["waiting_behind_dead"] >= 1  # the cancelled order's return waits
    assert (f"sailthru: {first['sailthru']['waiting_behind_dead']} deliveries wait behind a dead letter of their "
            "order: fix the data in the warehouse") in first["summary"]

    # Nothing changed: the next run re-plans nothing for them.
    second = run_window(settings, DAY2, "order_events/day2")
    assert second["plan"]["healed"] == {}
    assert not {p["extid"] for p in emulator.purchases()} & everywhere

    # The product is fixed in the warehouse; the next scheduled run (a window without those
    # orders) plans them again from the current data and delivers them, once, returns after.
    warehouse(settings, "UPDATE products SET url = :u WHERE product_id = :p", u=url, p=product_id)
    third = run_window(settings, (END, END + timedelta(hours=1)), "order_events/day3")
    # The purchases, and the cancelled order's return (it waited, unsent, with no item URL either).
    assert third["plan"]["healed"] == {"sailthru:purchase": len(everywhere), "sailthru:return": 1}
    assert third["sailthru"]["waiting_behind_dead"] == 0
    assert f"re-planned from fixed warehouse data: sailthru:purchase {len(everywhere)}" in third["summary"]
    assert "wait behind a dead letter" not in third["summary"]
    purchases = Counter(p["extid"] for p in emulator.purchases())
    assert set(purchases) == owed_purchases(settings) and max(purchases.values()) == 1
    placed = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed"))
    assert set(placed) == owed_purchases(settings) and max(placed.values()) == 1
    victim = min(broken, key=int)
    returns = [r for r in emulator.requests(vendor="sailthru", endpoint="/return")]
    assert [str(r["entity_id"]) for r in returns].count(victim) == 1
    sequence = [r["endpoint"] for r in emulator.requests(vendor="sailthru", entity_id=victim)]
    assert sequence == ["/purchase", "/return"]
    assert not ledger.in_state(DEAD, vendor="sailthru")

    # And the run after that sends nothing more.
    before = len(emulator.requests())
    run_window(settings, (END + timedelta(hours=1), END + timedelta(hours=2)), "order_events/day4")
    assert len(emulator.requests()) == before


@pytest.mark.slow
def test_replay_remaps_from_the_warehouse_instead_of_resending_the_frozen_payload(env, capsys, tmp_path):
    from storesync.pipeline.jobs import replay_dead_letters

    settings, emulator = env
    product_id, url, broken, _ = break_a_product(settings)
    run_window(settings, DAY1, "order_events/day1")
    assert not {p["extid"] for p in emulator.purchases()} & broken

    # Replayed before the fix: still cannot be mapped; nothing is sent, the reason is given.
    result = replay_dead_letters(settings, vendor="sailthru", run_id="replay-1")
    assert result["remapped"] == {} and result["requeued"] == 0
    assert {r["entity_id"] for r in result["still_invalid"]} >= broken
    assert all("no product URL" in r["reason"] or "no url" in r["reason"] for r in result["still_invalid"])
    # The command says so and what fixes it, and fails.
    from storesync.cli import main

    config = tmp_path / "replay.toml"
    config.write_text(
        f'warehouse_url = "{settings.warehouse_url}"\nledger_url = "{settings.ledger_url}"\n'
        f'[sendlane]\nbase_url = "{settings.sendlane.base_url}"\napi_token = "{settings.sendlane.api_token.reveal()}"\n'
        f'integration_token = "{settings.sendlane.integration_token.reveal()}"\n'
        f'[sailthru]\nbase_url = "{settings.sailthru.base_url}"\napi_key = "{settings.sailthru.api_key.reveal()}"\n'
        f'secret = "{settings.sailthru.secret.reveal()}"\n')
    assert main(["--config", str(config), "replay", "--vendor", "sailthru"]) == 1
    err = capsys.readouterr().err
    assert f"dead letters still cannot be mapped from the warehouse's data: fix it there" in err
    assert "has no product URL" in err and "@" not in err
    assert not {p["extid"] for p in emulator.purchases()} & broken

    # After the fix, replay re-maps them from the warehouse and sends each once.
    warehouse(settings, "UPDATE products SET url = :u WHERE product_id = :p", u=url, p=product_id)
    result = replay_dead_letters(settings, vendor="sailthru", run_id="replay-2")
    assert result["remapped"] == {"sailthru:purchase": len(broken), "sailthru:return": 1}
    assert not result["still_invalid"]
    purchases = Counter(p["extid"] for p in emulator.purchases())
    assert broken <= set(purchases) and max(purchases.values()) == 1
    victim = min(broken, key=int)
    assert [r["endpoint"] for r in emulator.requests(vendor="sailthru", entity_id=victim)] == ["/purchase", "/return"]
    assert result["deliveries"]["sailthru"]["waiting_behind_dead"] == 0
