"""Historic LTV and the RFM summary in the warehouse, on SQLite and PostgreSQL.

Expected numbers are worked out by hand below (written as the arithmetic), never by the code
under test; the RFM summary and the predictions are checked against ``lifetimes`` as an oracle.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import MetaData, Table, create_engine, insert, select, text, update

from storesync.ltv import (
    LTV_TABLE,
    PROFILE_FIELDS,
    OrderSource,
    compute_historic_ltv,
    historic_ltv_select,
    ltv_index_available,
    ltv_profile_fields,
    predict_ltv,
    rfm_summary,
    run_ltv,
)
from storesync.ltv.tables import RUNS_TABLE, ltv_tables
from storesync.warehouse import schema

AS_OF = date(2024, 3, 10)
D = Decimal


@pytest.fixture(params=["covering index", "no covering index"])
def engine(db_url, request):
    """Each test runs on both queries: the one-pass query the demo schema's covering index
    allows, and the general one a warehouse without that index gets."""
    engine = create_engine(db_url)
    schema.metadata.create_all(engine)
    if request.param == "no covering index":
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_orders_customer_ltv"))
            conn.execute(text("CREATE INDEX ix_orders_customer_only ON orders (customer_id)"))
    assert ltv_index_available(engine) == (request.param == "covering index")
    yield engine
    engine.dispose()


class Store:
    """Builds orders and their status history; orders.status is always the CURRENT status."""

    def __init__(self, engine):
        self.engine = engine
        self._history_ids = itertools.count(1)

    def order(self, order_id, customer_id, total, created_at, *history, current=None):
        """history: (status, changed_at) pairs in the order written; current: orders.status
        when there is no history (else the last history status)."""
        status = history[-1][0] if history else current
        with self.engine.begin() as conn:
            conn.execute(
                insert(schema.orders).values(
                    order_id=order_id,
                    customer_id=customer_id,
                    email=f"c{customer_id}@example.com",
                    status=status,
                    currency="USD",
                    subtotal=D(total),
                    total_tax=D("0.00"),
                    total_discounts=D("0.00"),
                    total=D(total),
                    created_at=created_at,
                    updated_at=history[-1][1] if history else created_at,
                )
            )
            for st, at in history:
                self.change(order_id, st, at, conn=conn)

    def change(self, order_id, status, changed_at, conn=None):
        def run(c):
            c.execute(
                insert(schema.order_status_history).values(
                    history_id=next(self._history_ids),
                    order_id=order_id,
                    status=status,
                    changed_at=changed_at,
                )
            )
            c.execute(
                update(schema.orders)
                .where(schema.orders.c.order_id == order_id)
                .values(status=status, updated_at=changed_at)
            )

        if conn is not None:
            run(conn)
        else:
            with self.engine.begin() as c:
                run(c)


def dt(day, hour=12, minute=0, second=0, month=3):
    return datetime(2024, month, day, hour, minute, second)


def build_store(engine) -> Store:
    s = Store(engine)
    # Customer 1: a refund, two orders on one day, a cancellation AFTER as_of, an order in the
    # last second of as_of, and one just after the cutoff.
    s.order(101, 1, "100.00", dt(1, 10), ("pending", dt(1, 10)), ("completed", dt(2, 9)))
    s.order(102, 1, "50.50", dt(5, 9), ("pending", dt(5, 9)), ("refunded", dt(8, 15)))
    s.order(103, 1, "20.25", dt(5, 18), ("pending", dt(5, 18)), ("completed", dt(6, 8)))
    s.order(104, 1, "30.00", dt(9, 12), ("pending", dt(9, 12)), ("cancelled", dt(12, 9)))  # after as_of
    s.order(105, 1, "10.00", dt(10, 23, 59, 59), ("pending", dt(10, 23, 59, 59)))
    s.order(106, 1, "999.00", dt(11, 0, 0, 0), ("pending", dt(11, 0, 0, 0)))  # after the cutoff
    # Customer 2: a failed order, and a cancelled one.
    feb20 = dt(20, 9, month=2)
    s.order(201, 2, "80.00", feb20, ("pending", feb20), ("failed", feb20 + timedelta(hours=1)))
    s.order(202, 2, "40.00", dt(3, 14), ("pending", dt(3, 14)), ("cancelled", dt(4, 8)))
    # Customer 3: only a failed order.
    s.order(301, 3, "60.00", dt(2, 11), ("pending", dt(2, 11)), ("failed", dt(2, 11, 5)))
    # Customer 4: a refund after as_of (still pending as of as_of).
    s.order(401, 4, "15.99", dt(7, 10), ("pending", dt(7, 10)), ("completed", dt(7, 11)))
    s.order(402, 4, "9.01", dt(8, 10), ("pending", dt(8, 10)), ("refunded", dt(15, 10)))  # after as_of
    # Customer 5: one order without any history (its own status counts), one whose history
    # starts after as_of (initial status "pending", not today's "refunded").
    s.order(501, 5, "12.34", dt(4, 16), current="completed")
    s.order(502, 5, "7.66", dt(9, 16), current="pending")
    s.change(502, "refunded", dt(11, 1))
    # Customer 6: two changes at the same instant: the later history row wins (refunded).
    s.order(601, 6, "5.00", dt(6, 8), ("pending", dt(6, 8)), ("completed", dt(6, 9)), ("refunded", dt(6, 9)))
    # Orders without a customer are ignored, also one changed after as_of (a NULL among the
    # customers with changes must not hide every other customer from the one-pass query).
    s.order(901, None, "77.00", dt(6, 8), ("completed", dt(6, 8)))
    s.order(902, None, "3.00", dt(6, 8), ("pending", dt(6, 8)), ("refunded", dt(12, 8)))
    return s


def ltv_rows(engine, as_of=AS_OF) -> dict:
    with engine.connect() as conn:
        ltv, _ = ltv_tables(conn)
        rows = conn.execute(select(ltv).where(ltv.c.as_of == as_of).order_by(ltv.c.customer_id)).mappings()
        return {row["customer_id"]: dict(row) for row in rows}


HISTORIC = (
    "order_count",
    "gross_revenue",
    "net_revenue",
    "avg_order_value",
    "first_order_at",
    "last_order_at",
    "tenure_days",
    "rfm_frequency",
    "rfm_recency_days",
    "rfm_t_days",
)


def test_historic_ltv_by_hand(engine):
    build_store(engine)
    written = compute_historic_ltv(engine, AS_OF)
    rows = ltv_rows(engine)
    assert written == 6
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]

    c1 = rows[1]  # valid: 101, 103, 104 (pending as of as_of), 105; 102 refunded; 106 too late
    assert c1["order_count"] == 4
    assert c1["gross_revenue"] == D("100.00") + D("50.50") + D("20.25") + D("30.00") + D("10.00")
    assert c1["net_revenue"] == D("100.00") + D("20.25") + D("30.00") + D("10.00")
    assert c1["avg_order_value"] == D("40.06")  # 160.25 / 4 = 40.0625
    assert c1["first_order_at"] == dt(1, 10)
    assert c1["last_order_at"] == dt(10, 23, 59, 59)
    assert c1["tenure_days"] == 10 - 1
    # valid purchase days 03-01, 03-05, 03-09, 03-10: 3 repeat days
    assert c1["rfm_frequency"] == 4 - 1
    assert c1["rfm_recency_days"] == 10 - 1
    assert c1["rfm_t_days"] == 10 - 1
    assert c1["rfm_monetary"] == pytest.approx((20.25 + 30.00 + 10.00) / 3)

    c2 = rows[2]  # 201 failed (left out entirely), 202 cancelled (gross only)
    assert c2["order_count"] == 0
    assert c2["gross_revenue"] == D("40.00")
    assert c2["net_revenue"] == D("0.00")
    assert c2["avg_order_value"] is None
    assert c2["first_order_at"] == c2["last_order_at"] == dt(3, 14)
    assert c2["tenure_days"] == 10 - 3
    assert c2["rfm_frequency"] is None and c2["rfm_t_days"] is None and c2["rfm_monetary"] is None

    c3 = rows[3]  # only failed orders: a row of zeros
    assert (c3["order_count"], c3["gross_revenue"], c3["net_revenue"]) == (0, D("0.00"), D("0.00"))
    assert c3["first_order_at"] is None and c3["tenure_days"] is None and c3["rfm_frequency"] is None

    c4 = rows[4]  # 402's refund comes after as_of: both orders count
    assert c4["order_count"] == 2
    assert c4["gross_revenue"] == c4["net_revenue"] == D("15.99") + D("9.01")
    assert c4["avg_order_value"] == D("12.50")  # 25.00 / 2
    assert (c4["rfm_frequency"], c4["rfm_recency_days"], c4["rfm_t_days"]) == (1, 8 - 7, 10 - 7)
    assert c4["rfm_monetary"] == pytest.approx(9.01)

    c5 = rows[5]  # 501: no history, own status completed; 502: history starts later -> pending
    assert c5["order_count"] == 2
    assert c5["gross_revenue"] == c5["net_revenue"] == D("12.34") + D("7.66")
    assert c5["avg_order_value"] == D("10.00")
    assert (c5["rfm_frequency"], c5["rfm_recency_days"], c5["rfm_t_days"]) == (1, 9 - 4, 10 - 4)

    c6 = rows[6]  # refunded (tie on changed_at broken by the later history row)
    assert (c6["order_count"], c6["gross_revenue"], c6["net_revenue"]) == (0, D("5.00"), D("0.00"))
    assert c6["rfm_frequency"] is None


def test_rerun_is_idempotent_and_backfill_reproduces_the_day(engine):
    store = build_store(engine)
    compute_historic_ltv(engine, AS_OF)
    first = ltv_rows(engine)
    compute_historic_ltv(engine, AS_OF)
    assert ltv_rows(engine) == first

    # Later: new orders and status changes arrive.
    store.change(101, "refunded", dt(13, 10))
    store.change(103, "cancelled", dt(14, 10))
    store.order(107, 1, "44.00", dt(13, 9), ("pending", dt(13, 9)), ("completed", dt(13, 10)))
    store.order(701, 7, "19.00", dt(12, 9), ("completed", dt(12, 9)))
    later = date(2024, 3, 15)
    compute_historic_ltv(engine, later)
    compute_historic_ltv(engine, AS_OF)  # the backfill of the earlier day

    assert ltv_rows(engine) == first
    now = ltv_rows(engine, later)
    # Customer 1 as of 03-15: valid 105 (pending), 106 (pending), 107; 101/102 refunded, 103/104 cancelled
    assert now[1]["order_count"] == 3
    assert now[1]["gross_revenue"] == D("100.00") + D("50.50") + D("20.25") + D("30.00") + D("10.00") + D(
        "999.00"
    ) + D("44.00")
    assert now[1]["net_revenue"] == D("10.00") + D("999.00") + D("44.00")
    # valid days 03-10, 03-11, 03-13
    rfm = (now[1]["rfm_frequency"], now[1]["rfm_recency_days"], now[1]["rfm_t_days"])
    assert rfm == (2, 13 - 10, 15 - 10)
    assert now[4]["net_revenue"] == D("15.99")  # 402 refunded on 03-15 10:00, before the 03-15 cutoff
    assert sorted(now) == [1, 2, 3, 4, 5, 6, 7]


def test_source_is_a_parameter(engine):
    """A user's own relation: labels map its columns onto the names LTV needs."""
    build_store(engine)
    o = schema.orders
    custom = (
        select(
            o.c.order_id,
            o.c.customer_id,
            o.c.status,
            o.c.subtotal.label("total"),
            o.c.created_at,
        )
        .where(o.c.customer_id == 4)
        .subquery("my_orders")
    )
    source = OrderSource(
        orders=custom,
        status_history=None,  # no history: current statuses (402 is refunded now)
        excluded_statuses=("failed",),
        reversed_statuses=("refunded",),
    )
    compute_historic_ltv(engine, AS_OF, source)
    rows = ltv_rows(engine)
    assert list(rows) == [4]
    assert rows[4]["order_count"] == 1
    assert rows[4]["gross_revenue"] == D("15.99") + D("9.01")
    assert rows[4]["net_revenue"] == D("15.99")


# ----------------------------------------------------------------- generated store, with oracles
def generate_transactions(seed=7, customers=250, start=date(2023, 1, 1), days=180):
    """A BG/NBD-like population: Poisson purchases, a drop-out chance after each purchase,
    gamma-distributed spend; a few failed/cancelled orders the oracle must not see."""
    rng = np.random.default_rng(seed)
    rows = []
    order_id = 1
    for cid in range(1, customers + 1):
        lam = rng.gamma(0.8, 1 / 10)  # purchases per day
        drop = rng.beta(1.0, 4.0)
        spend = rng.gamma(6.0, 1 / 6.0) * 30
        t = rng.uniform(0, days * 0.6)
        alive = True
        while alive and t < days + 20:  # some orders fall after as_of
            created = datetime.combine(start, datetime.min.time()) + timedelta(days=float(t))
            created = created.replace(microsecond=0)
            total = round(float(rng.gamma(4.0, spend / 4.0)) + 1.0, 2)
            status = rng.choice(["completed", "completed", "completed", "fulfilled", "failed", "cancelled"])
            rows.append((order_id, cid, created, total, str(status)))
            order_id += 1
            if rng.random() < 0.25:  # a second order on the same day sometimes
                rows.append((order_id, cid, created + timedelta(minutes=7), round(total / 2, 2), "completed"))
                order_id += 1
            alive = rng.random() > drop
            t += rng.exponential(1 / max(lam, 1e-3))
    return rows


def load_transactions(engine, rows):
    orders, history = [], []
    for order_id, cid, created, total, status in rows:
        orders.append(
            dict(
                order_id=order_id,
                customer_id=cid,
                email=None,
                status=status,
                currency="USD",
                subtotal=D(str(total)),
                total_tax=D("0"),
                total_discounts=D("0"),
                total=D(str(total)),
                created_at=created,
                updated_at=created,
            )
        )
        history.append(dict(history_id=order_id, order_id=order_id, status=status, changed_at=created))
    with engine.begin() as conn:
        conn.execute(insert(schema.orders), orders)
        conn.execute(insert(schema.order_status_history), history)


def oracle_summary(rows, as_of, multiplier):
    from lifetimes.utils import summary_data_from_transaction_data

    cutoff = datetime.combine(as_of, datetime.min.time()) + timedelta(days=1)
    valid = [r for r in rows if r[4] not in ("failed", "cancelled") and r[2] < cutoff]
    df = pd.DataFrame(valid, columns=["order_id", "customer_id", "created_at", "total", "status"])
    return summary_data_from_transaction_data(
        df,
        "customer_id",
        "created_at",
        monetary_value_col="total",
        observation_period_end=pd.Timestamp(as_of),
        freq="D",
        freq_multiplier=multiplier,
    ).sort_index()


GEN_AS_OF = date(2023, 6, 29)


@pytest.mark.parametrize("unit", [1.0, 7.0])
def test_rfm_summary_matches_lifetimes(engine, unit):
    rows = generate_transactions()
    load_transactions(engine, rows)
    ours = rfm_summary(engine, GEN_AS_OF, time_unit_days=unit)
    oracle = oracle_summary(rows, GEN_AS_OF, unit)
    assert len(oracle) > 100
    assert list(ours.customer_id) == list(oracle.index)
    np.testing.assert_array_equal(ours.frequency, oracle["frequency"].to_numpy())
    np.testing.assert_allclose(ours.recency, oracle["recency"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.T, oracle["T"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.monetary, oracle["monetary_value"].to_numpy(), rtol=1e-9, atol=1e-9)
    assert (ours.frequency > 0).sum() > 50


def test_predictions_written_match_lifetimes(engine):
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    rows = generate_transactions()
    load_transactions(engine, rows)
    run = run_ltv(engine, GEN_AS_OF, horizon_days=90, time_unit_days=7.0)
    fit = run.fit
    assert fit.bgnbd.converged and fit.gamma_gamma.converged
    first = ltv_rows(engine, GEN_AS_OF)

    summary = oracle_summary(rows, GEN_AS_OF, 7.0)
    x, t_x, T, m = (summary[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
    bgf = BetaGeoFitter()
    b = fit.bgnbd
    bgf.params_ = pd.Series({"r": b.r, "alpha": b.alpha, "a": b.a, "b": b.b})
    expected = bgf.conditional_expected_number_of_purchases_up_to_time(90 / 7.0, x, t_x, T)
    alive = bgf.conditional_probability_alive(x, t_x, T)
    ggf = GammaGammaFitter()
    g = fit.gamma_gamma
    ggf.params_ = pd.Series({"p": g.p, "q": g.q, "v": g.v})
    aov = ggf.conditional_expected_average_profit(pd.Series(x), pd.Series(m)).to_numpy()

    got = [first[cid] for cid in summary.index]
    np.testing.assert_allclose([r["expected_purchases"] for r in got], expected, rtol=1e-7)
    np.testing.assert_allclose([r["p_alive"] for r in got], alive, rtol=1e-7)
    np.testing.assert_allclose([float(r["expected_aov"]) for r in got], aov, atol=0.005 + 1e-9)
    np.testing.assert_allclose(
        [float(r["predicted_clv"]) for r in got], aov * expected, rtol=1e-3, atol=0.006
    )
    assert all(r["horizon_days"] == 90 for r in got)
    # customers without a valid purchase carry no prediction
    assert all(r["predicted_clv"] is None for cid, r in first.items() if r["rfm_frequency"] is None)

    # idempotent: the same run again writes the same rows and the same parameters
    with engine.connect() as conn:
        _, models = ltv_tables(conn)
        params_before = conn.execute(select(models.c.params)).scalar_one()
    again = run_ltv(engine, GEN_AS_OF, horizon_days=90, time_unit_days=7.0)
    assert ltv_rows(engine, GEN_AS_OF) == first
    with engine.connect() as conn:
        assert conn.execute(select(models.c.params)).scalar_one() == params_before
    assert again.fit.bgnbd.r == fit.bgnbd.r

    # the fitted parameters do not depend on the time unit beyond scaling alpha
    in_days = predict_ltv(engine, GEN_AS_OF, horizon_days=90, time_unit_days=1.0)
    assert in_days.bgnbd.alpha == pytest.approx(fit.bgnbd.alpha * 7.0, rel=1e-4)
    assert in_days.bgnbd.r == pytest.approx(fit.bgnbd.r, rel=1e-4)
    in_days_rows = ltv_rows(engine, GEN_AS_OF)
    np.testing.assert_allclose(
        [in_days_rows[cid]["expected_purchases"] for cid in summary.index],
        [first[cid]["expected_purchases"] for cid in summary.index],
        rtol=1e-4,
    )

    # the profile fields the vendor mappers take
    fields = dict(ltv_profile_fields(engine, GEN_AS_OF, customer_ids=[1, 2, 3, 10_000]))
    assert set(fields) <= {1, 2, 3}
    for cid, values in fields.items():
        assert set(values) == set(PROFILE_FIELDS)
        assert all(len(name) <= 32 for name in values)
        assert values["ltv_order_count"] == first[cid]["order_count"]
        assert values["ltv_net_revenue"] == first[cid]["net_revenue"]
        assert values["ltv_predicted_clv"] == first[cid]["predicted_clv"]
    assert sum(1 for _ in ltv_profile_fields(engine, GEN_AS_OF)) == len(first)


def test_profile_fields_before_prediction(engine):
    build_store(engine)
    compute_historic_ltv(engine, AS_OF)
    fields = dict(ltv_profile_fields(engine, AS_OF))
    assert fields[1] == {
        "ltv_order_count": 4,
        "ltv_net_revenue": D("160.25"),
        "ltv_predicted_clv": None,
        "ltv_p_alive": None,
        "ltv_currency": None,  # a source that does not say its currency
    }
    assert LTV_TABLE == "storesync_customer_ltv"


# ------------------------------------------------------------------------------- incremental days
def ltv_run(engine, as_of):
    with engine.connect() as conn:
        runs = Table(RUNS_TABLE, MetaData(), autoload_with=conn)
        return conn.execute(select(runs).where(runs.c.as_of == as_of)).mappings().one()


def differing(rows, expected) -> dict:
    """Columns that differ, per customer: the monetary value within 1e-9 relative (a daily run
    adds one day's takings to the mean, the full query sums the days again), the rest exactly."""
    out = {}
    for cid in sorted(set(rows) | set(expected)):
        a, b = rows.get(cid), expected.get(cid)
        if a is None or b is None:
            out[cid] = ("missing", a, b)
            continue
        bad = {k: (a[k], b[k]) for k in b if k != "rfm_monetary" and a[k] != b[k]}
        if (a["rfm_monetary"] is None) != (b["rfm_monetary"] is None) or (
                b["rfm_monetary"] is not None and a["rfm_monetary"] != pytest.approx(b["rfm_monetary"], rel=1e-9)):
            bad["rfm_monetary"] = (a["rfm_monetary"], b["rfm_monetary"])
        if bad:
            out[cid] = bad
    return out


def test_daily_runs_carry_unchanged_customers_forward_and_equal_the_full_query(engine):
    """Day after day on a generated store (orders, refunds, cancellations, malformed rows):
    each incremental day equals that day recomputed in full, row for row."""
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    end = datetime(2024, 4, 1)
    generate_demo_store(str(engine.url), DemoStoreSpec(orders=3_000, seed=7, end=end, days=30))
    days = [end.date() - timedelta(days=n) for n in range(8, 0, -1)]
    incremental = {}
    for day in days:
        compute_historic_ltv(engine, day, max_recompute_share=1.0)
        incremental[day] = ltv_rows(engine, day)
    recomputed = [ltv_run(engine, day)["customers_recomputed"] for day in days[1:]]
    assert [ltv_run(engine, day)["method"] for day in days] == ["full"] + ["incremental"] * 7
    assert all(0 < n < len(incremental[day]) for n, day in zip(recomputed, days[1:]))
    for day in days:
        compute_historic_ltv(engine, day, incremental=False)
        assert ltv_run(engine, day)["method"] == "full"
        assert differing(incremental[day], ltv_rows(engine, day)) == {}, day


def test_a_late_order_is_counted_by_the_next_daily_run(engine):
    """An order dated before yesterday's cutoff but loaded after yesterday's run moves its
    customer's numbers: its updated_at (when it was loaded) puts it in the recomputed set."""
    store = build_store(engine)
    previous = AS_OF - timedelta(days=1)
    compute_historic_ltv(engine, previous)
    loaded_now = datetime.now(timezone.utc).replace(tzinfo=None)
    store.order(403, 4, "70.00", dt(8, 12), current="completed")
    with engine.begin() as conn:
        conn.execute(update(schema.orders).where(schema.orders.c.order_id == 403).values(updated_at=loaded_now))
    compute_historic_ltv(engine, AS_OF, max_recompute_share=0.0)  # one customer to recompute is too many
    assert ltv_run(engine, AS_OF)["method"] == "full"
    compute_historic_ltv(engine, AS_OF, max_recompute_share=1.0)  # a store of 6 customers
    assert ltv_run(engine, AS_OF)["method"] == "incremental"
    assert ltv_run(engine, AS_OF)["customers_recomputed"] == 1
    carried = ltv_rows(engine)
    assert carried[4]["net_revenue"] == D("15.99") + D("9.01") + D("70.00")
    compute_historic_ltv(engine, AS_OF, incremental=False)
    assert differing(carried, ltv_rows(engine)) == {}


def test_another_definition_or_a_missing_day_computes_in_full(engine):
    build_store(engine)
    previous = AS_OF - timedelta(days=1)
    compute_historic_ltv(engine, previous - timedelta(days=1))
    compute_historic_ltv(engine, AS_OF)  # the day before was never computed
    assert ltv_run(engine, AS_OF)["method"] == "full"
    compute_historic_ltv(engine, previous)
    compute_historic_ltv(engine, AS_OF, max_recompute_share=1.0)
    assert ltv_run(engine, AS_OF)["method"] == "incremental"
    assert ltv_run(engine, AS_OF)["from_as_of"] == previous
    stricter = OrderSource(orders=schema.orders, status_history=schema.order_status_history,
                           reversed_statuses=("cancelled", "refunded", "pending"))
    compute_historic_ltv(engine, AS_OF, stricter)  # pending orders no longer count
    assert ltv_run(engine, AS_OF)["method"] == "full"
    assert ltv_rows(engine)[1]["order_count"] == 2  # 101 and 103: 104 cancelled later, 105 pending


# ------------------------------------------------------------------------- versions behind the view
STORED = ("order_count", "gross_revenue", "net_revenue", "avg_order_value", "first_order_at", "last_order_at",
          "rfm_frequency", "rfm_recency_days", "rfm_monetary")


def versions_starting(engine, day) -> set:
    from storesync.ltv.tables import VERSIONS_TABLE

    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text(f"SELECT customer_id FROM {VERSIONS_TABLE} WHERE valid_from = :d"),
                                           {"d": day})}


def all_days(engine, days) -> dict:
    return {day: ltv_rows(engine, day) for day in days}


def test_a_daily_run_writes_versions_only_for_the_customers_whose_figures_moved(engine):
    """The day's versions are exactly the customers whose stored figures differ from the day
    before (or who are new); everyone else's row is the day before's, tenure and T a day on."""
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    end = datetime(2024, 4, 1)
    generate_demo_store(str(engine.url), DemoStoreSpec(orders=2_000, seed=11, end=end, days=20))
    previous, day = end.date() - timedelta(days=3), end.date() - timedelta(days=2)
    compute_historic_ltv(engine, previous)
    compute_historic_ltv(engine, day, max_recompute_share=1.0)
    assert ltv_run(engine, day)["method"] == "incremental"
    before, after = ltv_rows(engine, previous), ltv_rows(engine, day)
    moved = {cid for cid, row in after.items()
             if cid not in before or any(row[k] != before[cid][k] for k in STORED)}
    assert moved and len(moved) < len(after) / 2
    assert versions_starting(engine, day) == moved
    assert ltv_run(engine, day)["versions_written"] == len(moved)
    assert ltv_run(engine, day)["rows_written"] == len(after)
    for cid in set(after) - moved:  # NULL stays NULL (no non-failed order, no valid purchase)
        for grows in ("tenure_days", "rfm_t_days"):
            was = before[cid][grows]
            assert after[cid][grows] == (None if was is None else was + 1)


def test_recomputing_an_earlier_day_keeps_the_later_days_as_they_were(engine):
    """A correction made in place (no updated_at) and an earlier day recomputed in full: that
    day shows the correction, the days before and after it keep the figures they were shown."""
    build_store(engine)
    days = [AS_OF - timedelta(days=2), AS_OF - timedelta(days=1), AS_OF, AS_OF + timedelta(days=1)]
    for day in days:
        compute_historic_ltv(engine, day, max_recompute_share=1.0)
    shown = all_days(engine, days)
    with engine.begin() as conn:  # 101 (customer 1's first order) was 100.00: now 90.00
        conn.execute(update(schema.orders).where(schema.orders.c.order_id == 101).values(total=D("90.00")))
    compute_historic_ltv(engine, days[1], incremental=False)
    now = all_days(engine, days)
    assert now[days[1]][1]["net_revenue"] == shown[days[1]][1]["net_revenue"] - 10
    assert differing({k: v for k, v in now[days[1]].items() if k != 1},
                     {k: v for k, v in shown[days[1]].items() if k != 1}) == {}
    for day in (days[0], days[2], days[3]):
        assert differing(now[day], shown[day]) == {}, day
    # Recomputed in full, the later days pick the correction up, each on its own.
    for day in days[2:]:
        compute_historic_ltv(engine, day, incremental=False)
        assert ltv_rows(engine, day)[1]["net_revenue"] == shown[day][1]["net_revenue"] - 10
    assert differing(ltv_rows(engine, days[0]), shown[days[0]]) == {}


def test_an_incremental_rerun_takes_back_what_an_earlier_attempt_wrote(engine):
    """A day rerun incrementally gives the day before's figures, a day on, to every customer it
    does not recompute, including those an earlier (full) attempt of that day wrote."""
    build_store(engine)
    previous = AS_OF - timedelta(days=1)
    compute_historic_ltv(engine, previous)
    compute_historic_ltv(engine, AS_OF, max_recompute_share=1.0)
    incremental = ltv_rows(engine)
    with engine.begin() as conn:  # in place, unseen by an incremental run
        conn.execute(update(schema.orders).where(schema.orders.c.order_id == 401).values(total=D("25.99")))
    compute_historic_ltv(engine, AS_OF, incremental=False)
    assert ltv_rows(engine)[4]["net_revenue"] == D("25.99") + D("9.01")  # 402 still pending
    assert 4 in versions_starting(engine, AS_OF)
    compute_historic_ltv(engine, AS_OF, max_recompute_share=1.0)
    assert ltv_run(engine, AS_OF)["method"] == "incremental"
    assert differing(ltv_rows(engine), incremental) == {}
    assert 4 not in versions_starting(engine, AS_OF)


def test_a_customer_whose_orders_are_gone_has_no_row_from_a_full_day_on(engine):
    build_store(engine)
    previous = AS_OF - timedelta(days=1)
    compute_historic_ltv(engine, previous)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM order_status_history WHERE order_id IN (501, 502)"))
        conn.execute(text("DELETE FROM orders WHERE customer_id = 5"))
    compute_historic_ltv(engine, AS_OF, incremental=False)
    assert 5 not in ltv_rows(engine)
    assert 5 in ltv_rows(engine, previous)
    assert ltv_run(engine, AS_OF)["rows_written"] == len(ltv_rows(engine)) == 5


def test_an_earlier_release_per_day_table_is_moved_aside(engine):
    """An earlier release wrote storesync_customer_ltv as a TABLE: it is renamed (kept, with its
    runs), the view takes its name and the day is computed in full."""
    from storesync.ltv.tables import LEGACY_SUFFIX

    build_store(engine)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {LTV_TABLE} (customer_id INTEGER, as_of DATE, order_count INTEGER)"))
        conn.execute(text(f"INSERT INTO {LTV_TABLE} VALUES (1, '2024-03-09', 99)"))
        conn.execute(text(f"CREATE TABLE {RUNS_TABLE} (as_of DATE PRIMARY KEY, method VARCHAR(16))"))
        conn.execute(text(f"INSERT INTO {RUNS_TABLE} VALUES ('2024-03-09', 'full')"))
    compute_historic_ltv(engine, AS_OF)
    assert ltv_run(engine, AS_OF)["method"] == "full"
    assert ltv_rows(engine)[1]["order_count"] == 4
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT order_count FROM {LTV_TABLE}{LEGACY_SUFFIX}")).scalar_one() == 99
        assert conn.execute(text(f"SELECT method FROM {RUNS_TABLE}{LEGACY_SUFFIX}")).scalar_one() == "full"


def sqlite_store(tmp_path):
    """A SQLite file with the demo schema and ``build_store``'s orders (plan tests)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    schema.metadata.create_all(engine)
    build_store(engine)
    return engine


@contextmanager
def sqlite_plans(engine, wanted):
    """Yields a list that gets the EXPLAIN QUERY PLAN steps of each statement ``wanted(statement)``
    accepts, taken just before it runs (through a cursor beside its own)."""
    from sqlalchemy import event

    plans = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if not executemany and wanted(statement):
            raw = conn.connection.dbapi_connection.cursor()
            plans.append([row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)])

    event.listen(engine, "before_cursor_execute", explain)
    try:
        yield plans
    finally:
        event.remove(engine, "before_cursor_execute", explain)


def test_the_staged_day_is_probed_by_index_never_scanned_per_customer(tmp_path):
    """A full day over existing versions asks, per customer, whether the staged day holds it
    (NOT EXISTS). SQLite builds no automatic index for a correlated subquery: without one, 2M
    customers scanned 2M staged rows each (the 10M-order full recompute ran for many minutes)."""
    engine = sqlite_store(tmp_path)
    compute_historic_ltv(engine, AS_OF - timedelta(days=1))
    with sqlite_plans(engine, lambda statement: "ltv_tmp_day" in statement and "EXISTS" in statement) as plans:
        compute_historic_ltv(engine, AS_OF, incremental=False)  # staged in full, gone customers found
        compute_historic_ltv(engine, AS_OF + timedelta(days=1))  # incremental: the carried are probed too
    probes = [" / ".join(p) for p in plans if any("ltv_tmp_day" in step for step in p)]
    assert len(probes) >= 2, plans
    assert all("USING INDEX ix_ltv_tmp_day_customer_id" in p or "USING COVERING INDEX ix_ltv_tmp_day_customer_id" in p
               for p in probes), probes


@pytest.mark.parametrize("indexed", [True, False], ids=["covering index", "general query"])
def test_each_order_changed_since_the_cutoff_looks_its_status_up_once(tmp_path, indexed):
    """The as-of status of an order changed since the cutoff is one history lookup. Flattened
    into the grouping, SQLite repeated it in every aggregate that tests the status (ten in the
    plan, six a row): a day with many later changes, a backfill, paid for it several times."""
    engine = sqlite_store(tmp_path)
    with sqlite_plans(engine, lambda statement: True) as plans, engine.connect() as conn:
        rows = conn.execute(historic_ltv_select(AS_OF - timedelta(days=5), indexed=indexed)).all()
    assert rows  # the day has customers, and orders changed since its cutoff
    (plan,) = plans
    lookups = [step for step in plan if step.startswith("SEARCH order_status_history USING INDEX")]
    assert len(lookups) == 1, plan


# ------------------------------------------------- PostgreSQL: changed orders read from the index
def twins_store(engine) -> Store:
    """``build_store`` and customers with orders the covering index cannot tell apart (same
    customer, instant, status and total), one of each pair changed after the cutoff."""
    s = build_store(engine)
    twin = dt(6, 14)
    # Customer 7: both completed as of AS_OF; one refunded after the cutoff.
    s.order(701, 7, "25.00", twin, ("pending", twin), ("completed", dt(7, 9)))
    s.order(702, 7, "25.00", twin, ("pending", twin), ("completed", dt(7, 9)), ("refunded", dt(12, 9)))
    # Customer 8: both refunded now; one was refunded after the cutoff (completed as of AS_OF).
    s.order(801, 8, "40.00", twin, ("pending", twin), ("refunded", dt(8, 9)))
    s.order(802, 8, "40.00", twin, ("pending", twin), ("completed", dt(7, 9)), ("refunded", dt(13, 9)))
    # Customer 9: one of the pair has a history that starts after the cutoff (pending as of AS_OF).
    s.order(951, 9, "11.00", twin, current="completed")
    s.order(952, 9, "11.00", twin, current="completed")
    s.change(952, "completed", dt(12, 10))
    return s


def select_rows(conn, as_of, **kwargs) -> dict:
    rows = conn.execute(historic_ltv_select(as_of, **kwargs)).mappings()
    return {row["customer_id"]: dict(row) for row in rows}


@pytest.mark.postgres
def test_orders_changed_since_the_cutoff_read_from_the_index_give_the_table_reads_figures(pg_url):
    """On PostgreSQL the orders of the customers changed since the cutoff come from the covering
    index, less the changed orders as they are now, plus those orders as of the cutoff (EXCEPT
    ALL / UNION ALL). Equal rows in the index are taken away one copy at a time: twin orders, one
    of them changed, still count as two orders with their own statuses."""
    engine = create_engine(pg_url)
    schema.metadata.create_all(engine)
    twins_store(engine)
    statements = []
    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with engine.connect() as conn:
        for as_of in (AS_OF, AS_OF - timedelta(days=3), AS_OF + timedelta(days=5)):
            from_index = select_rows(conn, as_of, indexed=True, except_all=True)
            assert "EXCEPT ALL" in statements[-1]
            assert from_index == select_rows(conn, as_of, indexed=True), as_of
            assert from_index == select_rows(conn, as_of), as_of  # the general query: every order read
    with engine.connect() as conn:
        by_hand = select_rows(conn, AS_OF, indexed=True, except_all=True)
    assert (by_hand[7]["order_count"], by_hand[7]["net_revenue"]) == (2, D("50.00"))  # both completed
    assert (by_hand[8]["order_count"], by_hand[8]["net_revenue"]) == (1, D("40.00"))  # 802 not yet refunded
    assert (by_hand[9]["order_count"], by_hand[9]["net_revenue"]) == (2, D("22.00"))  # 952 pending as of AS_OF: counts
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("most", [0, None], ids=["table read", "index read"])
def test_the_daily_run_reads_changed_customers_from_the_index_only_when_they_are_few(pg_url, monkeypatch, most):
    """Past ``FROM_INDEX_MAX_CUSTOMERS`` customers changed since the cutoff (a backfill's first
    day: 150k of them on 10M orders), setting their index rows against each other costs more than
    the table scan: the full and the daily run read the table. Both ways give the same figures."""
    from sqlalchemy import event

    from storesync.ltv import historic

    engine = create_engine(pg_url)
    schema.metadata.create_all(engine)
    twins_store(engine)
    if most is not None:
        monkeypatch.setattr(historic, "FROM_INDEX_MAX_CUSTOMERS", most)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    days = [AS_OF - timedelta(days=n) for n in (4, 3, 2, 1, 0)]
    for n, day in enumerate(days):
        compute_historic_ltv(engine, day, max_recompute_share=1.0)
        assert ltv_run(engine, day)["method"] == ("full" if n == 0 else "incremental")
    daily = {day: ltv_rows(engine, day) for day in days}
    assert any("EXCEPT ALL" in s for s in statements) == (most is None)
    monkeypatch.setattr(historic, "FROM_INDEX_MAX_CUSTOMERS", 10**9)
    for day in days:
        compute_historic_ltv(engine, day, incremental=False)
        assert differing(daily[day], ltv_rows(engine, day)) == {}, day
    engine.dispose()


@pytest.mark.postgres
def test_the_daily_run_compiles_nothing_and_gives_the_callers_jit_setting_back(pg_url):
    """The daily run's statements read few rows but are planned at costs past ``jit_above_cost``:
    they run without JIT, and a caller's own transaction gets its setting back afterwards."""
    from sqlalchemy import event

    engine = create_engine(pg_url)
    schema.metadata.create_all(engine)
    build_store(engine)
    seen = []

    def jit_now(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO ltv_tmp_"):
            raw = conn.connection.dbapi_connection.cursor()
            raw.execute("SHOW jit")
            seen.append(raw.fetchone()[0])

    with engine.begin() as conn:
        conn.execute(text("SET LOCAL jit = on"))
        compute_historic_ltv(conn, AS_OF - timedelta(days=1))
        event.listen(engine, "before_cursor_execute", jit_now)
        compute_historic_ltv(conn, AS_OF, max_recompute_share=1.0)
        event.remove(engine, "before_cursor_execute", jit_now)
        assert conn.execute(text("SHOW jit")).scalar_one() == "on"
    assert seen and set(seen) == {"off"}, seen
    assert ltv_run(engine, AS_OF)["method"] == "incremental"
    engine.dispose()


@pytest.mark.postgres
def test_each_candidate_order_looks_its_statuses_up_once_on_postgresql(pg_url):
    """Which customers a day must recompute asks, per candidate order, whether it changed later,
    its class before the day, and after it (whether it changed after the day, and if so its
    history's status then): four history lookups. A searched CASE over a status lookup made
    PostgreSQL repeat the lookup in each arm (five a row, before the after-the-day test)."""
    from storesync.ltv.historic import _customers_to_recompute_by_lookup

    engine = create_engine(pg_url)
    schema.metadata.create_all(engine)
    build_store(engine)
    query = _customers_to_recompute_by_lookup(OrderSource.demo(), AS_OF, datetime(2024, 3, 9))
    with engine.connect() as conn:
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = [row[0] for row in conn.execute(text(f"EXPLAIN {compiled}"))]
    subplans = {line.strip() for line in plan if line.strip().startswith("SubPlan")}
    assert len(subplans) == 4, plan
    engine.dispose()
