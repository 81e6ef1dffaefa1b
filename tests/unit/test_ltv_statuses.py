"""The daily LTV job's as-of statuses, set-based (``storesync.ltv.statuses``, DuckDB's way) and
looked up per order (SQLite's and PostgreSQL's), on a store whose schema is not the demo's: its
own table and column names, ISO-text timestamps, a status history of its own with ties, changes
after the day, histories that start late and a current status no history row has.

The reference is the full recompute of each day: an incremental day must equal it row for row,
and both ways of finding the statuses must give the same rows, on SQLite, PostgreSQL and DuckDB.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Numeric, bindparam, create_engine, text

import storesync.ltv.historic as historic
from storesync.core.config import Settings
from storesync.core.ltv_settings import LtvSettings
from storesync.ltv.job import run_ltv_job
from storesync.ltv.tables import drop_ltv_tables
from tests.unit.test_ltv_models import ltv_rows
from tests.unit.test_ltv_sql import differing

FIRST_DAY = date(2024, 5, 1)
DAYS = [FIRST_DAY + timedelta(days=n) for n in range(5)]
VALID, REVERSED, EXCLUDED = ("placed", "paid", "shipped"), ("refunded", "cancelled"), ("failed",)

ORDERS_MODEL = """SELECT sale_ref AS order_id, client AS customer_id, state AS status, ccy AS currency,
       amount AS total, placed_at AS created_at, touched_at AS updated_at FROM sales"""
HISTORY_MODEL = """SELECT event_no AS history_id, sale_ref AS order_id, new_state AS status,
       happened_at AS changed_at FROM sale_events"""
FX_MODEL = "SELECT ccy AS currency, valid_from AS day, rate FROM rates"


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S")


def shop_rows(seed: int = 11):
    """(sales, events): heavy buyers whose older orders move day after day (refunds, shipments,
    cancellations dated in each day and after the last one), and many quiet customers."""
    rng = random.Random(seed)
    sales, events = [], []
    event_no = iter(range(1, 10**6))
    start = datetime(2024, 4, 10)
    ref = 0
    for customer in range(1, 301):
        heavy = customer <= 8
        for _ in range(rng.randint(20, 40) if heavy else 1):
            ref += 1
            placed = start + timedelta(minutes=rng.randint(0, 26 * 24 * 60))
            history = [("placed", placed)]
            if heavy and rng.random() < 0.7:
                at = placed + timedelta(hours=rng.randint(1, 24 * 6))
                history.append((rng.choice(["paid", "shipped", "refunded", "cancelled", "failed"]), at))
                if rng.random() < 0.4:  # a tie: two changes at one instant, the later row counts
                    history.append((rng.choice(["refunded", "shipped"]), at))
                if rng.random() < 0.5:  # and a change after it (the tie is then an as-of status)
                    history.append((rng.choice(["paid", "refunded", "cancelled", "shipped"]),
                                    at + timedelta(hours=rng.randint(1, 72))))
            if heavy and rng.random() < 0.1:  # a history that starts after the order was placed
                history = [(status, at + timedelta(days=3)) for status, at in history]
            state = history[-1][0]
            if heavy and rng.random() < 0.05:
                state = "shipped-ish"  # a current status no history row has
            amount = Decimal(rng.randint(100, 20000)) / 100
            sales.append({"ref": ref, "client": customer, "state": state, "amount": amount,
                          "ccy": rng.choice(["USD", "USD", "EUR"]),
                          "placed": iso(placed), "touched": iso(max(at for _, at in history))})
            events += [{"no": next(event_no), "ref": ref, "state": status, "at": iso(at)}
                       for status, at in history]
    return sales, events


def build_shop(url: str) -> None:
    sales, events = shop_rows()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE sales (sale_ref INTEGER, client INTEGER, state VARCHAR(20), "
                          "ccy VARCHAR(3), amount NUMERIC(12, 2), placed_at VARCHAR(25), "
                          "touched_at VARCHAR(25))"))
        conn.execute(text("CREATE TABLE sale_events (event_no INTEGER, sale_ref INTEGER, "
                          "new_state VARCHAR(20), happened_at VARCHAR(25))"))
        conn.execute(text("CREATE TABLE rates (ccy VARCHAR(3), valid_from VARCHAR(10), rate NUMERIC(12, 6))"))
        conn.execute(text("INSERT INTO sales VALUES "
                          "(:ref, :client, :state, :ccy, :amount, :placed, :touched)")
                     .bindparams(bindparam("amount", type_=Numeric(12, 2))), sales)
        conn.execute(text("INSERT INTO sale_events VALUES (:no, :ref, :state, :at)"), events)
        conn.execute(text("INSERT INTO rates VALUES "
                          "('EUR', '2024-01-01', 1.08), ('EUR', '2024-05-03', 1.12)"))
    engine.dispose()


def settings_for(url: str, tmp_path) -> Settings:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for name, sql in (("sales", ORDERS_MODEL), ("sale_events", HISTORY_MODEL), ("rates", FX_MODEL)):
        (models / f"{name}.sql").write_text(sql)
    return Settings(warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", models_dir=models,
                    ltv=LtvSettings(orders_model="sales", status_history_model="sale_events",
                                    fx_rates_model="rates", currency="USD", valid_statuses=VALID,
                                    reversed_statuses=REVERSED, excluded_statuses=EXCLUDED,
                                    initial_status="placed"))


def days_as_computed(url: str, settings: Settings, dialect: str, set_based: bool, monkeypatch) -> dict:
    """Every day of DAYS as the daily job computes it (the first in full), then the same days
    recomputed in full: both, per day."""
    monkeypatch.setattr(historic, "SET_BASED_DIALECTS", frozenset({dialect} if set_based else ()))
    daily, methods, recomputed = {}, [], []
    for day in DAYS:
        report = run_ltv_job(settings, day, quarantined={"5"} if day == DAYS[2] else set(), predict=False)
        methods.append(report.method)
        daily[day] = ltv_rows(url, day)
    engine = create_engine(url)
    with engine.connect() as conn:
        recomputed = [conn.execute(text("SELECT customers_recomputed FROM storesync_ltv_runs "
                                        "WHERE as_of = :d"), {"d": day}).scalar_one() for day in DAYS[1:]]
    engine.dispose()
    assert methods == ["full"] + ["incremental"] * (len(DAYS) - 1)
    assert all(0 < n < 60 for n in recomputed), recomputed  # the heavy buyers and the gate's, not all 300
    full = {}
    for day in DAYS:
        run_ltv_job(settings, day, full=True, quarantined={"5"} if day == DAYS[2] else set(), predict=False)
        full[day] = ltv_rows(url, day)
    return {"daily": daily, "full": full}


def test_the_daily_job_equals_a_full_recompute_whichever_way_it_finds_statuses(warehouse_db_url, tmp_path,
                                                                                monkeypatch):
    url = warehouse_db_url
    dialect = create_engine(url).dialect.name
    build_shop(url)
    settings = settings_for(url, tmp_path)
    runs = {}
    for set_based in (True, False):
        engine = create_engine(url)
        with engine.begin() as conn:
            drop_ltv_tables(conn)
        engine.dispose()
        runs[set_based] = days_as_computed(url, settings, dialect, set_based, monkeypatch)
    for day in DAYS:
        reference = runs[False]["full"][day]
        assert len(reference) > 250  # customers with an order by the day
        for set_based in (True, False):
            for how in ("daily", "full"):
                assert differing(runs[set_based][how][day], reference) == {}, (day, set_based, how)
    # The store's moves reach the figures: a heavy buyer's refunds and cancellations since the
    # first day lower net revenue on a later day (as-of statuses, not today's).
    first, last = runs[True]["daily"][DAYS[0]], runs[True]["daily"][DAYS[-1]]
    assert any(last[c]["order_count"] != first[c]["order_count"] for c in range(1, 9))
