"""Historical sync: parking, Sailthru bulk jobs, checkpoints and resume, budget shares.

Against the local emulator (both vendors) and a small demo store on SQLite; no Airflow.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.delivery.ledger import ACCEPTED, DEAD, SENDING, Ledger, PlannedDelivery
from storesync.pipeline.historical import (
    PARK_BASE,
    HeaderReserve,
    HistoricalIncomplete,
    HistoricalLedger,
    HistoricalRequest,
    JobPolicy,
    SailthruJobRunner,
    StackedLimiter,
    account_of,
    apply_budget_share,
    park,
    run_historical,
    unpark,
)
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

END = datetime(2026, 11, 20)
DAY1, DAY2 = date(2026, 11, 18), date(2026, 11, 19)


def make_settings(tmp_path, emulator) -> Settings:
    return Settings(
        warehouse_url=f"sqlite:///{tmp_path / 'store.db'}",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=6000),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=6000),
    )


@pytest.fixture(scope="module")
def store_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("historical-store") / "store.db"
    generate_demo_store(f"sqlite:///{path}", DemoStoreSpec(orders=240, seed=5, end=END, days=3, bad_share=0.0))
    return path


@pytest.fixture
def env(tmp_path, emulator, store_file):
    import shutil

    shutil.copy(store_file, tmp_path / "store.db")
    emulator.configure(rate_limits_enabled=False, job_delay_s=0.1)
    return make_settings(tmp_path, emulator), emulator


def request(**overrides) -> HistoricalRequest:
    fields = dict(entities=("orders",), start=DAY1, end=DAY2, dry_run=False,
                  jobs=JobPolicy(poll_interval_s=0.05, timeout_s=20))
    fields.update(overrides)
    return HistoricalRequest(**fields)


def orders_changed_on(settings, days) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.warehouse_url)
    start = datetime(days[0].year, days[0].month, days[0].day)
    end = datetime(days[-1].year, days[-1].month, days[-1].day) + timedelta(days=1)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT order_id FROM order_status_history GROUP BY order_id "
                                 "HAVING MIN(changed_at) >= :s AND MIN(changed_at) < :e"),
                            {"s": start, "e": end}).scalars().all()
    engine.dispose()
    return {str(r) for r in rows}


# ---------------------------------------------------------------------------- parking
def test_park_keeps_order_and_round_trips():
    now = datetime(2026, 11, 23, 12, 0)
    assert park(None) == PARK_BASE and park(datetime(1999, 1, 1)) == PARK_BASE
    assert park(now) > park(now - timedelta(seconds=1)) > PARK_BASE
    assert unpark(park(now)) == now and unpark(now) == now and unpark(None) is None


def _item(entity, event_type="return", vendor="sailthru", seq=0, payload=None, endpoint="/return"):
    return PlannedDelivery(vendor=vendor, account="acct", event_type=event_type, entity_id=str(entity),
                           version="1", endpoint=endpoint, payload=payload or {"id": entity}, seq=seq,
                           ordering_key=f"order:{entity}", historical=True)


def test_parked_deliveries_are_invisible_to_live_claims(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    hist, live = HistoricalLedger(url), Ledger(url)
    hist.plan([_item(1, "purchase", endpoint="/purchase", seq=1), _item(2, "return", seq=3),
               _item(3, "content", endpoint="/content")], sync_name="historical", run_id="h1")
    assert hist.promote("h1") == 3
    live.plan([_item(9, "return")], sync_name="order_events", run_id="l1")
    live.promote("l1")
    # The live drain sees only its own delivery, never the parked ones.
    assert [d.entity_id for d in live.claim("sailthru", "acct", 50, "live:1")] == ["9"]
    # The historical single-call drain skips the job event types (purchase, content) ...
    assert [d.entity_id for d in hist.claim("sailthru", "acct", 50, "hist:1")] == ["2"]
    # ... which only a job claim takes.
    [held] = hist.claim_for_job("sailthru", "acct", "purchase", 50, "storesync-job:k1:0")
    assert held.entity_id == "1"
    assert live.claim("sailthru", "acct", 50, "live:2") == []
    # A job's claim never expires: no live recovery takes its rows for lost, however long it runs.
    from sqlalchemy import select

    from storesync.delivery.ledger import deliveries, owner_is_alive

    with hist.engine.connect() as conn:
        claimed_at = conn.execute(select(deliveries.c.claimed_at).where(deliveries.c.id == held.id)).scalar()
    assert claimed_at == PARK_BASE and owner_is_alive(held.claimed_by, claimed_at)
    assert live.orphaned("sailthru", "acct") == []


def test_a_historical_retry_stays_parked_with_its_delay(tmp_path):
    from storesync.delivery.ledger import RETRY, Outcome

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    hist, live = HistoricalLedger(url), Ledger(url)
    hist.plan([_item(1)], sync_name="historical", run_id="h1")
    hist.promote("h1")
    [delivery] = hist.claim("sailthru", "acct", 5, "hist:1")
    due = datetime.utcnow() + timedelta(hours=1)
    hist.record([(delivery, Outcome(RETRY, next_attempt_at=due))], run_id="h1")
    assert live.claim("sailthru", "acct", 5, "live") == []
    assert hist.claim("sailthru", "acct", 5, "hist:2") == []  # not due yet
    assert abs((hist.next_parked_due("sailthru", "acct") - due).total_seconds()) < 1


# ---------------------------------------------------------------------------- budget shares
def test_header_reserve_keeps_the_live_share_of_each_window():
    clock = {"t": 1000.0}
    slept = []

    def sleep(s):
        slept.append(s)
        clock["t"] += s

    reserve = HeaderReserve(0.25, clock=lambda: clock["t"], sleep=sleep, margin_s=0)
    assert reserve.acquire() == 0  # nothing announced yet: admitted (the vendor throttle paces it)
    reserve.observe({"X-Rate-Limit-Limit": "40", "X-Rate-Limit-Remaining": "39", "X-Rate-Limit-Reset": "1060"})
    admitted = 0
    while not slept:
        reserve.acquire()
        admitted += 1
    # 39 left, 30 (75% of 40) reserved for live syncs: 9 historical requests, then wait for the window.
    assert admitted == 9 + 1  # the 10th waited for the next window and was admitted after it
    assert clock["t"] == pytest.approx(1060.0)


def test_sendlane_share_is_a_second_window_on_top_of_the_account_budget(tmp_path, emulator):
    settings = make_settings(tmp_path, emulator)
    from storesync.pipeline.targets import targets_for

    ledger = HistoricalLedger(settings.ledger_url)
    [target] = targets_for(settings, ["sendlane"])
    sender = target.sender(limiter_engine=ledger.engine)
    account_limiter = sender.client.limiter
    apply_budget_share(sender, settings, ledger.engine, 0.25)
    stacked = sender.client.limiter
    assert isinstance(stacked, StackedLimiter)
    share, account = stacked.limiters
    assert account is account_limiter
    assert share.key == f"sendlane:{target.account}:historical" and share.limit == 1500  # 25% of 6000
    assert account.key == f"sendlane:{target.account}" and account.limit == 6000


# ---------------------------------------------------------------------------- whole runs
def test_orders_go_by_job_resume_after_a_crash_and_a_rerun_sends_nothing(env):
    settings, emulator = env
    crashed = []

    def crash_after_first_day(entity, day):
        if not crashed:
            crashed.append(day)
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run_historical(settings, request(), "orders", run_id_prefix="hist/1", on_chunk=crash_after_first_day)
    ledger = HistoricalLedger(settings.ledger_url)
    done = {(r["day"], r["vendor"]) for r in ledger.chunk_rows("orders") if r["status"] == "done"}
    assert done == {(DAY1, "sendlane"), (DAY1, "sailthru")}
    jobs_after_crash = len(emulator.jobs())

    # The restart (an Airflow retry) resumes at day two and finishes.
    summary = run_historical(settings, request(), "orders", run_id_prefix="hist/1")
    assert summary["skipped_days"] == 1 and summary["days"] == 1
    assert len(emulator.jobs()) == jobs_after_crash + 1

    expected = orders_changed_on(settings, [DAY1, DAY2])
    purchases = emulator.purchases()
    assert expected and {p["extid"] for p in purchases} == expected
    assert Counter(p["extid"] for p in purchases).most_common(1)[0][1] == 1  # each once
    assert {p["source"] for p in purchases} == {"job"}  # none by a single /purchase
    assert not emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST", source="api")
    placed = emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed")
    assert {str(r["entity_id"]) for r in placed} == expected
    assert all(r["body"]["initial_sync"] is True and r["body"]["time"] for r in placed)
    assert all(j["status"] == "completed" for j in emulator.jobs())
    assert {r["status"] for r in ledger.job_rows()} == {"completed"}

    # Everything is checkpointed: a rerun sends nothing at all.
    before = len(emulator.requests())
    again = run_historical(settings, request(), "orders", run_id_prefix="hist/2")
    assert again["skipped_days"] == 2 and len(emulator.requests()) == before


def test_history_and_live_share_identities(env):
    from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity

    settings, emulator = env
    # The live hourly sync already sent day one's orders.
    ctx = open_context(settings, run_id="order_events/live", sync_name="order_events")
    plan_entity(ctx, "orders", HistoricalRequest.window(DAY1))
    for vendor in ("sendlane", "sailthru"):
        deliver_vendor(ctx, vendor)
    live = {p["extid"] for p in emulator.purchases(source="api")}
    assert live == orders_changed_on(settings, [DAY1])

    run_historical(settings, request(), "orders", run_id_prefix="hist/1")
    purchases = emulator.purchases()
    assert Counter(p["extid"] for p in purchases).most_common(1)[0][1] == 1
    assert {p["extid"] for p in purchases if p["source"] == "job"} == orders_changed_on(settings, [DAY2])
    placed = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                                    endpoint="/tracking/order-placed"))
    assert placed.most_common(1)[0][1] == 1


def set_email(settings, order_id, email):
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET email = :e WHERE order_id = :o"), {"e": email, "o": int(order_id)})
    engine.dispose()


def test_a_day_owed_to_one_vendor_leaves_a_fixed_orders_quarantine_to_the_live_sync(env):
    """Day one went to Sendlane with an order quarantined (a bad email); the order is fixed; day
    one now goes to Sailthru only (Sendlane's chunk is done). The order passes and is planned for
    Sailthru, but its quarantine record stays open: it is owed to Sendlane too, and the next live
    run re-checks it and plans it for both (Sailthru's already sent: nothing twice)."""
    from sqlalchemy import create_engine

    from storesync.core.windows import Window
    from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity
    from storesync.quality import QuarantineStore

    settings, emulator = env
    order_id = sorted(orders_changed_on(settings, [DAY1]), key=int)[0]
    set_email(settings, order_id, "not-an-email")
    run_historical(settings, request(end=DAY1, vendors=("sendlane",)), "orders", run_id_prefix="hist/1")
    quarantine = QuarantineStore(create_engine(settings.ledger_url))
    assert order_id in quarantine.open_ids("orders")
    set_email(settings, order_id, "fixed@example.com")

    run_historical(settings, request(end=DAY1), "orders", run_id_prefix="hist/2")

    def sent(vendor):
        if vendor == "sailthru":
            return Counter(p["extid"] for p in emulator.purchases())[order_id]
        return Counter(str(r["entity_id"]) for r in emulator.requests(
            vendor="sendlane", endpoint="/tracking/order-placed"))[order_id]

    assert (sent("sailthru"), sent("sendlane")) == (1, 0)
    assert order_id in quarantine.open_ids("orders")  # still owed to Sendlane
    ctx = open_context(settings, run_id="order_events/live", sync_name="order_events")
    plan_entity(ctx, "orders", Window(END, END + timedelta(hours=1)))
    for vendor in ("sendlane", "sailthru"):
        deliver_vendor(ctx, vendor)
    assert (sent("sailthru"), sent("sendlane")) == (1, 1)
    assert order_id not in quarantine.open_ids("orders")


def test_a_running_job_is_polled_again_never_resubmitted(env):
    settings, emulator = env
    emulator.configure(job_delay_s=2.0)
    slow = request(entities=("products",), start=date(2026, 11, 17), end=date(2026, 11, 19),
                   vendors=("sailthru",), jobs=JobPolicy(poll_interval_s=0.05, timeout_s=0.2))
    with pytest.raises(HistoricalIncomplete, match="still running"):
        run_historical(settings, slow, "products", run_id_prefix="hist/1")
    [job] = emulator.jobs()
    ledger = HistoricalLedger(settings.ledger_url)
    held = ledger.in_state(SENDING, vendor="sailthru")
    assert held and all(d.claimed_by.startswith("storesync-job:") for d in held)
    # A live delivery run on the same account neither sends nor "recovers" the job's rows.
    from storesync.pipeline.jobs import deliver_vendor, open_context

    deliver_vendor(open_context(settings, run_id="live", sync_name="products", vendors=["sailthru"]), "sailthru")
    assert {d.id for d in ledger.in_state(SENDING, vendor="sailthru")} == {d.id for d in held}

    patient = request(entities=("products",), start=date(2026, 11, 17), end=date(2026, 11, 19),
                      vendors=("sailthru",), jobs=JobPolicy(poll_interval_s=0.1, timeout_s=20))
    run_historical(settings, patient, "products", run_id_prefix="hist/1")
    jobs = emulator.jobs()
    assert jobs[0]["job_id"] == job["job_id"] and all(j["status"] == "completed" for j in jobs)
    # The running job was polled again; its rows were never put in a second job.
    assert sum(j["rows"] for j in jobs) == ledger.counts(vendor="sailthru")[ACCEPTED]
    assert ledger.counts(vendor="sailthru") == {ACCEPTED: sum(j["rows"] for j in jobs)}
    polled = emulator.requests(vendor="sailthru", endpoint="/job", method="GET", entity_id=job["job_id"])
    assert len(polled) >= 2
    assert not emulator.requests(vendor="sailthru", endpoint="/content", method="POST", source="api")


def test_rows_a_job_rejects_become_dead_letters(env):
    settings, emulator = env
    from storesync.pipeline.targets import targets_for

    ledger = HistoricalLedger(settings.ledger_url)
    good = {"email": "ann@example.com", "items": [{"qty": 1, "title": "Mug", "price": 1200, "id": "MUG",
                                                   "url": "https://shop.example.com/mug"}],
            "date": "2026-11-01 10:00:00 UTC", "purchase_keys": {"extid": "9001"}}
    bad = {**good, "email": "not-an-email", "purchase_keys": {"extid": "9002"}}
    [target] = targets_for(settings, ["sailthru"])
    items = [PlannedDelivery(vendor="sailthru", account=target.account, event_type="purchase", entity_id=e,
                             version="1", endpoint="/purchase", payload=p, seq=1, ordering_key=f"order:{e}",
                             historical=True) for e, p in (("9001", good), ("9002", bad))]
    ledger.plan(items, sync_name="historical", run_id="h1")
    ledger.promote("h1")
    report = SailthruJobRunner(ledger, target.sender(), run_id="h1",
                               policy=JobPolicy(poll_interval_s=0.05, timeout_s=10)).run()
    assert report.as_dict()["accepted"] == 1 and report.dead == 1 and report.jobs == 1
    states = {d.entity_id: d for d in ledger.in_state(ACCEPTED) + ledger.in_state(DEAD)}
    assert states["9001"].state == ACCEPTED and states["9002"].state == DEAD
    [dead] = ledger.in_state(DEAD)
    assert [p["extid"] for p in emulator.purchases()] == ["9001"]
    with ledger.engine.connect() as conn:
        from sqlalchemy import select

        from storesync.delivery.ledger import deliveries

        error = conn.execute(select(deliveries.c.vendor_error).where(deliveries.c.id == dead.id)).scalar()
    assert "row 2" in error


def test_a_dry_run_counts_and_sends_nothing(env):
    settings, emulator = env
    summary = run_historical(settings, request(dry_run=True, entities=("orders", "products")), "orders",
                             run_id_prefix="hist/dry")
    assert summary["dry_run"] and summary["planned"]["sailthru:purchase"] == len(
        orders_changed_on(settings, [DAY1, DAY2]))
    assert summary["samples"]  # emails masked
    assert all("***@" in s["payload"]["email"] for s in summary["samples"]["sailthru:purchase"])
    assert emulator.requests() == []
    ledger = HistoricalLedger(settings.ledger_url)
    assert ledger.chunk_rows() == [] and ledger.counts() == {}


def test_request_from_params_checks_the_range():
    params = {"entities": ["orders", "products"], "start_date": "2026-11-01", "end_date": "2026-11-03",
              "vendors": ["sailthru"], "dry_run": False, "budget_share": 0.1}
    parsed = HistoricalRequest.from_params(params, today=date(2026, 11, 23))
    assert parsed.entities == ("orders", "products") and parsed.vendors == ("sailthru",)
    assert parsed.days() == [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    assert HistoricalRequest.from_params({"start_date": "2026-11-01", "end_date": "2026-11-01"},
                                         today=date(2026, 11, 23)).dry_run is True
    with pytest.raises(ValueError, match="not in the past"):
        HistoricalRequest.from_params({**params, "end_date": "2026-11-23"}, today=date(2026, 11, 23))
    with pytest.raises(ValueError, match="before start_date"):
        HistoricalRequest.from_params({**params, "end_date": "2026-10-01"}, today=date(2026, 11, 23))
    with pytest.raises(ValueError, match="entities"):
        HistoricalRequest.from_params({**params, "entities": ["checkouts"]}, today=date(2026, 11, 23))
    with pytest.raises(ValueError, match="budget_share"):
        HistoricalRequest.from_params({**params, "budget_share": 0.9}, today=date(2026, 11, 23))
    with pytest.raises(ValueError, match="required"):
        HistoricalRequest.from_params({"end_date": "2026-11-01"}, today=date(2026, 11, 23))
    assert account_of(Settings(), "sendlane") == "unconfigured"


# ---------------------------------------------------------------------------- one account key
def one_try_clients():
    """Vendor clients without in-line retries: a 503 goes straight back to the ledger as a retry."""
    from storesync.clients.http import RetryPolicy
    from storesync.pipeline.vendor_clients import default_sailthru_client, default_sendlane_client

    def sendlane(vendor_settings):
        client = default_sendlane_client(vendor_settings, vendor_settings.account)
        client.retry_policy = RetryPolicy(max_attempts=1)
        return client

    def sailthru(vendor_settings):
        client = default_sailthru_client(vendor_settings)
        client.retry_policy = RetryPolicy(max_attempts=1)
        return client

    return {"sendlane": sendlane, "sailthru": sailthru}


@pytest.mark.parametrize("account_id", [None, "acme-sendlane"])
def test_every_part_keys_the_account_the_same_way(env, account_id):
    """Ledger rows, historical checkpoints and the shared budget are keyed by ``account_of``:
    ``account_id`` when set, else the credential's fingerprint."""
    from dataclasses import replace

    from storesync.core.config import account_of as config_account_of
    from storesync.core.config import fingerprint

    settings, _ = env
    settings = replace(settings, sendlane=replace(settings.sendlane, account_id=account_id))
    expected = account_id or fingerprint(settings.sendlane.api_token)
    assert account_of(settings, "sendlane") == config_account_of(settings, "sendlane") == expected
    run_historical(settings, request(vendors=("sendlane",), end=DAY1), "orders", run_id_prefix="hist/key")
    ledger = HistoricalLedger(settings.ledger_url)
    assert {r["account"] for r in ledger.chunk_rows("orders")} == {expected}
    assert set(ledger.open_by_account("sendlane")) <= {expected}
    assert {d.account for d in ledger.in_state(ACCEPTED, vendor="sendlane")} == {expected}
    from storesync.pipeline.targets import targets_for

    [target] = targets_for(settings, ["sendlane"])
    assert target.sender(limiter_engine=ledger.engine).client.limiter.key == f"sendlane:{expected}"
    with pytest.raises(ValueError, match="unknown vendor"):
        account_of(settings, "mailchimp")


@pytest.mark.parametrize("account_id", [None, "acme-sendlane"])
def test_a_day_is_done_only_once_its_deliveries_are_settled(env, account_id):
    """Every Sendlane request answered 503: nothing is accepted, so the day is not done (it was
    marked done with ``account_id`` set: the open-row check looked under the fingerprint)."""
    from dataclasses import replace

    settings, emulator = env
    settings = replace(settings, sendlane=replace(settings.sendlane, account_id=account_id))
    emulator.set_faults(error_rate=1.0, error_statuses=[503], vendors=["sendlane"])
    with pytest.raises(HistoricalIncomplete, match="still open"):
        run_historical(settings, request(vendors=("sendlane",), end=DAY1), "orders", run_id_prefix="hist/503",
                       client_factories=one_try_clients(), sleep=lambda s: None)
    ledger = HistoricalLedger(settings.ledger_url)
    assert not [r for r in ledger.chunk_rows("orders") if r["status"] == "done"]
    assert ledger.counts(vendor="sendlane").get(ACCEPTED, 0) == 0
    open_rows = ledger.open_by_account("sendlane")
    assert list(open_rows) == [account_of(settings, "sendlane")] and open_rows[account_of(settings, "sendlane")]

    # The vendor recovers: the retry (resuming from the checkpoint) finishes the day, each order once.
    emulator.clear_faults()
    import storesync.delivery.ledger as ledger_module

    ledger_module_now = ledger_module.utcnow
    later = ledger_module_now() + timedelta(hours=1)
    try:
        ledger_module.utcnow = lambda: later  # every parked retry is due
        run_historical(settings, request(vendors=("sendlane",), end=DAY1), "orders", run_id_prefix="hist/503",
                       client_factories=one_try_clients(), sleep=lambda s: None)
    finally:
        ledger_module.utcnow = ledger_module_now
    assert {r["status"] for r in ledger.chunk_rows("orders")} == {"done"}
    placed = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                                    endpoint="/tracking/order-placed"))
    assert set(placed) == orders_changed_on(settings, [DAY1]) and max(placed.values()) == 1


def test_a_corrected_credential_finishes_the_day_once_with_no_command(env):
    """A mistyped Sendlane token: the day fails on auth. Corrected, the retry delivers the day's
    orders once: the rows planned under the wrong token's key are the corrected key's now."""
    from dataclasses import replace

    from storesync.core.errors import AuthError

    settings, emulator = env
    typo = replace(settings, sendlane=replace(settings.sendlane, api_token=settings.sendlane.api_token.reveal() + "x"))
    with pytest.raises(AuthError):
        run_historical(typo, request(vendors=("sendlane",), end=DAY1), "orders", run_id_prefix="hist/typo",
                       client_factories=one_try_clients(), sleep=lambda s: None)
    ledger = HistoricalLedger(settings.ledger_url)
    assert set(ledger.open_by_account("sendlane")) == {account_of(typo, "sendlane")}
    assert not emulator.requests(vendor="sendlane")

    summary = run_historical(settings, request(vendors=("sendlane",), end=DAY1), "orders", run_id_prefix="hist/ok",
                             client_factories=one_try_clients(), sleep=lambda s: None)
    assert summary["days"] == 1
    assert ledger.open_by_account("sendlane") == {}
    assert {(r["account"], r["status"]) for r in ledger.chunk_rows("orders")} == {(account_of(settings, "sendlane"),
                                                                                    "done")}
    placed = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                                    endpoint="/tracking/order-placed"))
    assert set(placed) == orders_changed_on(settings, [DAY1]) and max(placed.values()) == 1
