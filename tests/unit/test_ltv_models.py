"""LTV from the user's SQL models and ``[ltv]`` settings alone, on a store whose schema is not the
demo's: other table and column names, no status-history table, ISO-text timestamps (with ``Z``
and an offset), several currencies with daily rates, and every kind of bad order.

The expected figures come from an independent pandas computation over the same rows (never from
the code under test); each test runs on SQLite, PostgreSQL and DuckDB.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import pytest
from sqlalchemy import Numeric, bindparam, create_engine, select, text

from storesync.cli import main
from storesync.core.config import Settings, load_settings
from storesync.core.errors import ConfigurationError
from storesync.core.ltv_settings import LtvSettings
from storesync.ltv import ltv_profile_fields
from storesync.ltv.job import run_ltv_job
from storesync.ltv.tables import ltv_tables

D = Decimal
AS_OF = date(2024, 3, 10)
VALID, REVERSED, EXCLUDED = ("paid", "shipped"), ("returned",), ("void",)

# (purchase_no, buyer_ref, state, ccy, amount, placed_at): ISO text, as some stores keep it.
ROWS = [
    (1, 1, "paid", "USD", "100.00", "2024-03-01T10:00:00"),
    (2, 1, "paid", "EUR", "50.00", "2024-03-05T09:00:00Z"),  # EUR at 1.20 from 03-05: 60.00
    (3, 1, "returned", "USD", "20.00", "2024-03-06T12:00:00"),  # gross only
    (4, 1, "shipped", "EUR", "10.00", "2024-03-04T23:59:59"),  # the day before 1.20: 1.10 -> 11.00
    (5, 1, "paid", "USD", "999.00", "2024-03-11T00:00:00"),  # at the cutoff: not yet
    (6, 2, "paid", "GBP", "40.00", "2024-03-02T08:00:00"),  # 1.25 -> 50.00
    (7, 2, "weird", "USD", "30.00", "2024-03-03T08:00:00"),  # unknown status: counts nowhere
    (8, 2, "void", "USD", "25.00", "2024-03-03T09:00:00"),  # excluded
    (9, 2, "paid", "JPY", "5000.00", "2024-03-04T08:00:00"),  # no rate: left out
    (10, 2, "paid", "USD", "-15.00", "2024-03-04T09:00:00"),  # negative total: left out
    (11, 2, "paid", "USD", "12.34", "2024-03-07T23:30:00-02:00"),  # 03-08 01:30 UTC
    (12, 3, "paid", "USD", "70.00", "2024-03-02T10:00:00"),
    (12, 3, "paid", "USD", "70.00", "2024-03-02T10:00:00"),  # a duplicated order row
    (13, 3, "paid", "USD", "80.00", "2024-03-09T10:00:00"),
    (14, 3, "paid", "EUR", "20.00", "2024-03-09T11:00:00"),  # 1.05 from 03-08 -> 21.00
    (15, 4, "paid", "USD", "33.00", "2024-03-05T10:00:00"),
    (16, 5, "weird", "USD", "9.00", "2024-03-05T10:00:00"),  # only an unknown status: zeros
    (17, 6, "paid", "USD", "10.00", "2024-02-20T10:00:00"),
    (18, 6, "paid", "USD", "20.00", "2024-02-25T10:00:00"),
    (19, 6, "paid", "EUR", "10.00", "2024-02-25T12:00:00"),  # before EUR's first rate: left out
    (20, 6, "shipped", "USD", "30.00", "2024-03-10T23:00:00"),
    (21, None, "paid", "USD", "5.00", "2024-03-05T10:00:00"),  # no customer: ignored
    (22, 6, "paid", "USD", "7.50", "2024-03-11T09:00:00"),  # the next day
    # Customers with nothing odd, so that a daily job recomputes a small share of them.
    *[(100 + i, 100 + i, "paid", "USD", f"{10 + i}.25", f"2024-02-{10 + i}T12:00:00") for i in range(14)],
]
FX = [("EUR", "2024-03-01", "1.10"), ("EUR", "2024-03-05", "1.20"), ("EUR", "2024-03-08", "1.05"),
      ("GBP", "2024-03-01", "1.25"), ("USD", "2024-03-01", "3.00")]  # a USD row is ignored: USD is 1

ORDERS_MODEL = """
-- Our shop's purchases, labelled to LTV's names. A colon in a comment is not a bind: :nothing
SELECT purchase_no AS order_id,
       buyer_ref   AS customer_id,
       state       AS status,
       ccy         AS currency,
       amount      AS total,
       placed_at   AS created_at,
       touched_at  AS updated_at
  FROM purchases
 WHERE state <> 'test 10:30'
"""
FX_MODEL = "SELECT ccy AS currency, fx_date AS day, usd_rate AS rate FROM daily_fx"


@pytest.fixture
def warehouse_url(warehouse_db_url):
    """SQLite, PostgreSQL and DuckDB (the shared fixture)."""
    return warehouse_db_url


def build_shop(url, rows=ROWS, fx=FX):
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE purchases (purchase_no INTEGER, buyer_ref INTEGER, state VARCHAR(20), "
                          "ccy VARCHAR(3), amount NUMERIC(12, 2), placed_at VARCHAR(40), touched_at VARCHAR(40))"))
        conn.execute(text("CREATE TABLE daily_fx (ccy VARCHAR(3), fx_date VARCHAR(10), usd_rate NUMERIC(12, 6))"))
        add_rows(conn, rows)
        if fx:
            conn.execute(text("INSERT INTO daily_fx VALUES (:c, :d, :r)").bindparams(bindparam("r", type_=Numeric(12, 6))),
                         [{"c": c, "d": d, "r": D(r)} for c, d, r in fx])
    engine.dispose()


def add_rows(conn, rows):
    conn.execute(text("INSERT INTO purchases VALUES (:n, :b, :s, :c, :a, :p, :p)").bindparams(
                     bindparam("a", type_=Numeric(12, 2))),
                 [{"n": n, "b": b, "s": s, "c": c, "a": D(a), "p": p} for n, b, s, c, a, p in rows])


def settings_for(url, tmp_path, **ltv) -> Settings:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    (models / "shop_orders.sql").write_text(ORDERS_MODEL)
    (models / "shop_fx.sql").write_text(FX_MODEL)
    options = dict(orders_model="shop_orders", status_history_model="", fx_rates_model="shop_fx",
                   currency="USD", valid_statuses=VALID, reversed_statuses=REVERSED,
                   excluded_statuses=EXCLUDED, initial_status="paid") | ltv
    return Settings(warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", models_dir=models,
                    ltv=LtvSettings(**options))


# ------------------------------------------------------------------------------ the pandas oracle
def oracle(rows, as_of: date, quarantined=(), fx=FX, reporting="USD", with_fx=True) -> dict:
    """Per customer, the figures docs/ltv.md defines, computed with pandas from the raw rows."""
    df = pd.DataFrame(rows, columns=["order_id", "customer_id", "status", "currency", "amount", "placed"])
    df = df[~df["order_id"].duplicated(keep=False)]
    df = df[~df["order_id"].astype(str).isin(set(quarantined)) & df["customer_id"].notna()]
    df = df[df["amount"].map(D) >= 0].copy()
    df["created"] = pd.to_datetime(df["placed"], utc=True, format="ISO8601").dt.tz_localize(None)
    rates = pd.DataFrame(fx, columns=["currency", "day", "rate"])
    rates = rates[rates["currency"] != reporting] if with_fx else rates.iloc[0:0]

    def rate(row):
        if row["currency"] == reporting:
            return D(1)
        known = rates[(rates["currency"] == row["currency"]) & (rates["day"] <= row["created"].date().isoformat())]
        return D(known.sort_values("day")["rate"].iloc[-1]) if len(known) else None

    df["rate"] = df.apply(rate, axis=1)
    df = df[df["rate"].notna() & (df["created"] < pd.Timestamp(as_of + timedelta(days=1)))].copy()
    df["total"] = [(D(a) * r).quantize(D("0.01"), ROUND_HALF_UP) for a, r in zip(df["amount"], df["rate"])]
    df["day"] = df["created"].dt.date
    out = {}
    for cid, g in df.groupby("customer_id"):
        valid = g[g["status"].isin(VALID)]
        gross = g[g["status"].isin(VALID + REVERSED)]
        count, net = len(valid), sum(valid["total"], D(0))
        days = valid.groupby("day")["total"].apply(lambda s: sum(s, D(0))).sort_index()
        row = {
            "order_count": count,
            "gross_revenue": sum(gross["total"], D(0)),
            "net_revenue": net,
            "avg_order_value": (net / count).quantize(D("0.01"), ROUND_HALF_UP) if count else None,
            "first_order_at": gross["created"].min().to_pydatetime() if len(gross) else None,
            "last_order_at": gross["created"].max().to_pydatetime() if len(gross) else None,
            "tenure_days": (as_of - gross["day"].min()).days if len(gross) else None,
            "rfm_frequency": len(days) - 1 if len(days) else None,
            "rfm_recency_days": (days.index[-1] - days.index[0]).days if len(days) else None,
            "rfm_t_days": (as_of - days.index[0]).days if len(days) else None,
            "rfm_monetary": (float(sum(days.iloc[1:], D(0))) / (len(days) - 1) if len(days) > 1 else 0.0)
            if len(days) else None,
        }
        out[int(cid)] = row
    return out


def ltv_rows(url, as_of: date) -> dict:
    engine = create_engine(url)
    with engine.connect() as conn:
        ltv, _ = ltv_tables(conn)
        rows = conn.execute(select(ltv).where(ltv.c.as_of == as_of)).mappings().all()
    engine.dispose()
    out = {}
    for r in rows:
        row = {k: r[k] for k in ("order_count", "gross_revenue", "net_revenue", "avg_order_value",
                                 "first_order_at", "last_order_at", "tenure_days", "rfm_frequency",
                                 "rfm_recency_days", "rfm_t_days", "rfm_monetary")}
        for k in ("gross_revenue", "net_revenue", "avg_order_value"):
            row[k] = None if row[k] is None else D(str(row[k])).quantize(D("0.01"))
        for k in ("first_order_at", "last_order_at"):
            if isinstance(row[k], str):
                row[k] = datetime.fromisoformat(row[k])
        out[int(r["customer_id"])] = row
    return out


def assert_matches(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for cid, want in expected.items():
        got = actual[cid]
        monetary = (got.pop("rfm_monetary"), want["rfm_monetary"])
        rest = {k: v for k, v in want.items() if k != "rfm_monetary"}
        assert got == rest, f"customer {cid}"
        assert (monetary[0] is None) == (monetary[1] is None), f"customer {cid}"
        if monetary[1] is not None:
            assert monetary[0] == pytest.approx(monetary[1], rel=1e-9), f"customer {cid}"


# ------------------------------------------------------------------------------------------ tests
def test_ltv_from_models_and_settings_alone_matches_pandas(warehouse_url, tmp_path):
    build_shop(warehouse_url)
    settings = settings_for(warehouse_url, tmp_path)
    report = run_ltv_job(settings, AS_OF, quarantined={"13", "15"}, predict=False)
    expected = oracle(ROWS, AS_OF, quarantined={"13", "15"})
    # What the oracle says about the tricky rows, written out so a wrong oracle cannot pass.
    assert expected[1]["net_revenue"] == D("100.00") + D("60.00") + D("11.00")
    assert expected[1]["gross_revenue"] == D("191.00")
    assert expected[2]["net_revenue"] == D("50.00") + D("12.34") and expected[2]["rfm_frequency"] == 1
    assert expected[3]["net_revenue"] == D("21.00") and 4 not in expected
    assert expected[5]["order_count"] == 0 and expected[5]["gross_revenue"] == 0
    assert_matches(ltv_rows(warehouse_url, AS_OF), expected)
    assert report.left_out == {"duplicate": 1, "quarantined": 2}
    assert report.method == "full" and report.currency == "USD"
    # JPY (no rate) and EUR before its first rate; the negative total; "weird" twice.
    assert report.not_counted == {"negative_total": 1, "no_fx_rate": 2, "unknown_status": 2}


def test_a_single_currency_store_without_rates_leaves_other_currencies_out(warehouse_url, tmp_path):
    build_shop(warehouse_url)
    settings = settings_for(warehouse_url, tmp_path, fx_rates_model="")
    run_ltv_job(settings, AS_OF, quarantined=set(), predict=False)
    assert_matches(ltv_rows(warehouse_url, AS_OF), oracle(ROWS, AS_OF, with_fx=False))


def test_quarantined_orders_count_once_fixed_and_their_earlier_days_are_recomputed(warehouse_url, tmp_path):
    build_shop(warehouse_url)
    settings = settings_for(warehouse_url, tmp_path)
    day1, day2, day3 = AS_OF - timedelta(days=1), AS_OF, AS_OF + timedelta(days=1)
    first = run_ltv_job(settings, day1, quarantined={"13", "15"}, predict=False)
    assert first.method == "full"
    assert_matches(ltv_rows(warehouse_url, day1), oracle(ROWS, day1, quarantined={"13", "15"}))

    # 13 fixed: the daily job counts it, and the day that left it out is recomputed.
    second = run_ltv_job(settings, day2, quarantined={"15"}, predict=False)
    assert second.method == "incremental"
    assert second.fixed_orders == 1 and second.earlier_days_recomputed == [day1.isoformat()]
    assert_matches(ltv_rows(warehouse_url, day2), oracle(ROWS, day2, quarantined={"15"}))
    assert_matches(ltv_rows(warehouse_url, day1), oracle(ROWS, day1, quarantined={"15"}))

    # Day 3: order 1 is quarantined, and order 20 gets a duplicate row: both left out by the
    # incremental job (the days before, computed while they passed, keep them).
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        add_rows(conn, [(20, 6, "shipped", "USD", "30.00", "2024-03-11T01:00:00")])
    engine.dispose()
    rows3 = [*ROWS, (20, 6, "shipped", "USD", "30.00", "2024-03-11T01:00:00")]
    third = run_ltv_job(settings, day3, quarantined={"15", "1"}, predict=False)
    assert third.method == "incremental"
    assert third.left_out == {"duplicate": 2, "quarantined": 2}
    assert third.not_counted_scope == "orders created on the day" and third.not_counted == {}
    assert_matches(ltv_rows(warehouse_url, day3), oracle(rows3, day3, quarantined={"15", "1"}))
    assert_matches(ltv_rows(warehouse_url, day2), oracle(ROWS, day2, quarantined={"15"}))

    # The same day in full gives the incremental job's figures.
    run_ltv_job(settings, day3, quarantined={"15", "1"}, full=True, predict=False)
    assert_matches(ltv_rows(warehouse_url, day3), oracle(rows3, day3, quarantined={"15", "1"}))


def test_the_vendors_are_told_the_currency(tmp_path):
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    build_shop(url)
    settings = settings_for(url, tmp_path)
    run_ltv_job(settings, AS_OF, quarantined=set(), predict=False)
    engine = create_engine(url)
    fields = dict(ltv_profile_fields(engine, AS_OF))
    engine.dispose()
    assert {f["ltv_currency"] for f in fields.values()} == {"USD"}
    assert fields[1]["ltv_net_revenue"] == D("171.00")  # 100 USD + 50 EUR at 1.20 + 10 EUR at 1.10


def test_the_quarantine_is_read_from_the_ledger(tmp_path):
    from storesync.delivery.ledger import Ledger
    from storesync.quality.gate import QuarantinedRow
    from storesync.quality.store import QuarantineStore

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    build_shop(url)
    settings = settings_for(url, tmp_path)
    store = QuarantineStore(Ledger(settings.ledger_url).engine)
    store.record_rows([QuarantinedRow("orders", 13, ["total_matches_lines: off by 1.00"], {"order_id": 13})],
                      run_id="r1", batch_id="b1")
    report = run_ltv_job(settings, AS_OF, predict=False)
    assert report.left_out == {"duplicate": 1, "quarantined": 1}
    assert ltv_rows(url, AS_OF)[3]["net_revenue"] == D("21.00")
    store.resolve_passed("orders", [13], "r2")
    report = run_ltv_job(settings, AS_OF, predict=False)
    assert ltv_rows(url, AS_OF)[3]["net_revenue"] == D("101.00")


def test_storesync_ltv_command(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    build_shop(url)
    settings = settings_for(url, tmp_path)
    config = tmp_path / "storesync.toml"
    config.write_text(f"""
warehouse_url = "{url}"
ledger_url = "{settings.ledger_url}"
models_dir = "{settings.models_dir}"

[ltv]
orders_model = "shop_orders"
status_history_model = ""
fx_rates_model = "shop_fx"
currency = "usd"
valid_statuses = ["paid", "shipped"]
reversed_statuses = ["returned"]
excluded_statuses = ["void"]
initial_status = "paid"
""")
    assert main(["--config", str(config), "ltv", "--as-of", AS_OF.isoformat(), "--no-predict", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["currency"] == "USD" and report["method"] == "full" and report["customers"] == 6 + 14
    assert_matches(ltv_rows(url, AS_OF), oracle(ROWS, AS_OF))
    assert main(["--config", str(config), "ltv", "--as-of", "2024-03-11", "--no-predict"]) == 0
    out = capsys.readouterr().out
    assert "LTV 2024-03-11 (incremental)" in out and "money in USD" in out

    (settings.models_dir / "shop_fx.sql").unlink()
    assert main(["--config", str(config), "ltv", "--as-of", "2024-03-11"]) != 0
    err = capsys.readouterr().err
    assert "shop_fx.sql not found" in err and 'fx_rates_model = ""' in err and "[ltv] currency" in err

    # Without the rates: the EUR and GBP orders are left out, and the report says what to do. No
    # --as-of: the last whole day (the store's orders are all older, so every one is in it).
    config.write_text(config.read_text().replace('fx_rates_model = "shop_fx"', 'fx_rates_model = ""'))
    assert main(["--config", str(config), "ltv", "--no-predict"]) == 0
    out = capsys.readouterr().out
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    assert f"LTV {yesterday.isoformat()} " in out
    assert "orders have no rate into USD" in out and "set [ltv] currency" in out


@pytest.mark.parametrize("table, message", [
    ({"currency": "dollars"}, "3-letter ISO 4217"),
    ({"valid_statuses": ["paid"], "reversed_statuses": ["paid"]}, "'paid' is in both"),
    ({"valid_statuses": []}, "valid_statuses is empty"),
    ({"initial_status": "new"}, "initial_status 'new' is in no status class"),
    ({"horizon_days": -1}, "must not be negative"),
    ({"orders_model": "../etc/passwd"}, "model file name"),
    ({"horizon": 30}, "unknown setting"),
])
def test_bad_ltv_settings_are_refused_with_what_to_fix(tmp_path, table, message):
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    config = tmp_path / "storesync.toml"
    config.write_text(f"[ltv]\n{lines}\n")
    with pytest.raises(ConfigurationError, match=message):
        load_settings(config)


def test_ltv_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STORESYNC_LTV_VALID_STATUSES", "paid, shipped")
    monkeypatch.setenv("STORESYNC_LTV_INITIAL_STATUS", "paid")
    monkeypatch.setenv("STORESYNC_LTV_HORIZON_DAYS", "90")
    settings = load_settings(tmp_path / "none.toml")
    assert settings.ltv.valid_statuses == ("paid", "shipped") and settings.ltv.horizon_days == 90


def test_predictions_from_the_models_match_lifetimes(warehouse_url, tmp_path):
    """The whole job (historic figures, BG/NBD and Gamma-Gamma fits, predictions written back)
    on each dialect, against lifetimes with the fitted parameters."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    from tests.unit.test_ltv_sql import GEN_AS_OF, generate_transactions, oracle_summary

    generated = generate_transactions(customers=120)
    rows = [(order_id, cid, status if status != "completed" else "paid", "USD", f"{total:.2f}",
             created.isoformat()) for order_id, cid, created, total, status in generated]
    build_shop(warehouse_url, rows=rows, fx=[])
    settings = settings_for(warehouse_url, tmp_path, valid_statuses=("paid", "fulfilled"),
                            reversed_statuses=("cancelled",), excluded_statuses=("failed",), horizon_days=90)
    report = run_ltv_job(settings, GEN_AS_OF, quarantined=set())
    assert report.predicted and report.repeat_customers > 0

    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        ltv, models = ltv_tables(conn)
        got = {int(r["customer_id"]): r for r in conn.execute(
            select(ltv).where(ltv.c.as_of == GEN_AS_OF)).mappings()}
        params = conn.execute(select(models.c.params).where(models.c.as_of == GEN_AS_OF)).scalar_one()
    engine.dispose()
    params = json.loads(params) if isinstance(params, str) else params
    summary = oracle_summary(generated, GEN_AS_OF, 7.0)
    x, t_x, T, m = (summary[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series(params["bgnbd"])[["r", "alpha", "a", "b"]]
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series(params["gamma_gamma"])[["p", "q", "v"]]
    expected = bgf.conditional_expected_number_of_purchases_up_to_time(90 / 7.0, x, t_x, T)
    aov = ggf.conditional_expected_average_profit(pd.Series(x), pd.Series(m)).to_numpy()
    import numpy as np

    np.testing.assert_allclose([got[c]["expected_purchases"] for c in summary.index], expected, rtol=1e-7)
    np.testing.assert_allclose([float(got[c]["predicted_clv"]) for c in summary.index], aov * expected,
                               rtol=1e-3, atol=0.006)


def test_the_shipped_models_on_the_demo_schema_give_the_demo_sources_figures(tmp_path):
    """include/sql's LTV models (with the status history) read the demo schema as the built-in
    demo source does: the same figures, as-of statuses included."""
    from storesync.ltv import compute_historic_ltv
    from storesync.ltv.tables import drop_ltv_tables
    from storesync.warehouse import schema
    from tests.unit.test_ltv_sql import AS_OF as DEMO_AS_OF
    from tests.unit.test_ltv_sql import build_store

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = create_engine(url)
    schema.metadata.create_all(engine)
    build_store(engine)
    compute_historic_ltv(engine, DEMO_AS_OF)
    built_in = ltv_rows(url, DEMO_AS_OF)
    with engine.begin() as conn:
        drop_ltv_tables(conn)
    engine.dispose()
    settings = Settings(warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    report = run_ltv_job(settings, DEMO_AS_OF, quarantined=set(), predict=False)
    assert report.left_out == {}
    assert ltv_rows(url, DEMO_AS_OF) == built_in and len(built_in) == 6


def test_a_status_no_history_row_has_moves_the_order_in_the_daily_job_as_in_a_full_one(tmp_path):
    """orders.status may disagree with the history (the demo generator writes such orders): an
    order counts with its history's status while it changes after the day, then with
    orders.status. The daily job must move it between classes when the full query does."""
    from storesync.warehouse import schema
    from tests.unit.test_ltv_sql import Store, dt

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = create_engine(url)
    schema.metadata.create_all(engine)
    store = Store(engine)
    store.order(1, 1, "40.00", dt(9, 10), ("pending", dt(9, 10)), ("fulfilled", dt(10, 9)))
    store.order(2, 1, "10.00", dt(8, 10), ("pending", dt(8, 10)), ("completed", dt(8, 12)))
    for cid in range(2, 12):  # others, so that one customer is a small share to recompute
        store.order(100 + cid, cid, "5.00", dt(1, 10), ("completed", dt(1, 10)))
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = 'shipped-ish' WHERE order_id = 1"))
    engine.dispose()
    settings = Settings(warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    day1, day2 = date(2024, 3, 9), date(2024, 3, 10)
    run_ltv_job(settings, day1, quarantined=set(), predict=False)
    assert ltv_rows(url, day1)[1]["net_revenue"] == D("50.00")  # pending as of 03-09: valid
    assert run_ltv_job(settings, day2, quarantined=set(), predict=False).method == "incremental"
    daily = ltv_rows(url, day2)
    assert daily[1]["net_revenue"] == D("10.00")  # 'shipped-ish' from 03-10 on: counts nowhere
    run_ltv_job(settings, day2, full=True, quarantined=set(), predict=False)
    assert ltv_rows(url, day2) == daily


def test_a_customer_with_negative_net_revenue_gets_no_predicted_clv(tmp_path):
    """The gated models never let a negative total through; a hand-built source can: such a
    customer keeps their figures but gets no CLV (a forecast from a refund balance)."""
    from storesync.ltv import run_ltv
    from storesync.warehouse import schema
    from tests.unit.test_ltv_sql import GEN_AS_OF, generate_transactions, load_transactions

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = create_engine(url)
    schema.metadata.create_all(engine)
    rows = generate_transactions(customers=120)
    first = datetime.combine(GEN_AS_OF, datetime.min.time()) - timedelta(days=30)
    rows += [(90_001, 9_999, first, -40.0, "completed"), (90_002, 9_999, first + timedelta(days=9), 15.0, "completed")]
    load_transactions(engine, rows)
    run_ltv(engine, GEN_AS_OF, horizon_days=90)
    got = ltv_rows_with_predictions(engine, GEN_AS_OF)
    assert got[9_999]["net_revenue"] == D("-25.00") and got[9_999]["rfm_frequency"] == 1
    assert got[9_999]["expected_purchases"] is not None and got[9_999]["predicted_clv"] is None
    assert sum(1 for r in got.values() if r["predicted_clv"] is not None) > 50
    engine.dispose()


def ltv_rows_with_predictions(engine, as_of) -> dict:
    with engine.connect() as conn:
        ltv, _ = ltv_tables(conn)
        return {int(r["customer_id"]): dict(r) for r in conn.execute(
            select(ltv).where(ltv.c.as_of == as_of)).mappings()}
