"""Predicted LTV: fit BG/NBD + Gamma-Gamma on the warehouse's RFM summary, write predictions back.

Only histograms leave the database: distinct (frequency, recency_days, T_days) rows with their
customer counts for BG/NBD, distinct (frequency, monetary) rows for Gamma-Gamma. Predictions that
depend on (x, t_x, T) only (expected purchases, P(alive), discounted purchases) are computed once
per distinct row, loaded into a temporary table, and joined back in ONE
``INSERT ... SELECT ... ON CONFLICT DO UPDATE``, where the Gamma-Gamma expected order value and
the CLV are plain arithmetic on each customer's row. Memory is O(distinct RFM rows) <= O(customers).
"""

from __future__ import annotations

import json
import time as _time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import (
    Column,
    Double,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine

from storesync.ltv.historic import _as_date, _in_transaction, upsert_insert
from storesync.ltv.models import (
    BgNbdParams,
    GammaGammaParams,
    LtvFitError,
    discounted_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
)
from storesync.ltv.tables import PREDICTED_COLUMNS, ltv_storage, ltv_tables

__all__ = ["LtvModelFit", "fit_ltv_models", "predict_ltv"]

_TMP_TABLE = "storesync_ltv_tmp_predictions"
_INSERT_CHUNK = 5000


@dataclass(frozen=True)
class LtvModelFit:
    """What predict_ltv fitted and wrote."""

    as_of: object
    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    n_customers: int
    n_repeat_customers: int
    n_distinct_rfm: int
    time_unit_days: float
    horizon_days: int
    discount_rate: float
    discount_period_days: float
    fit_seconds: float
    rows_written: int = 0

    def params_json(self) -> dict:
        return {
            "bgnbd": self.bgnbd.as_dict(),
            "gamma_gamma": self.gamma_gamma.as_dict(),
            "time_unit_days": self.time_unit_days,
            "horizon_days": self.horizon_days,
            "discount_rate": self.discount_rate,
            "discount_period_days": self.discount_period_days,
            "n_distinct_rfm": self.n_distinct_rfm,
        }


def _histograms(conn: Connection, ltv: Table, as_of):
    bg_rows = conn.execute(
        select(ltv.c.rfm_frequency, ltv.c.rfm_recency_days, ltv.c.rfm_t_days, func.count())
        .where(ltv.c.as_of == as_of, ltv.c.rfm_frequency.is_not(None))
        .group_by(ltv.c.rfm_frequency, ltv.c.rfm_recency_days, ltv.c.rfm_t_days)
        .order_by(ltv.c.rfm_frequency, ltv.c.rfm_recency_days, ltv.c.rfm_t_days)
    ).all()
    gg_rows = conn.execute(
        select(ltv.c.rfm_frequency, ltv.c.rfm_monetary, func.count())
        .where(ltv.c.as_of == as_of, ltv.c.rfm_frequency > 0, ltv.c.rfm_monetary > 0)
        .group_by(ltv.c.rfm_frequency, ltv.c.rfm_monetary)
        .order_by(ltv.c.rfm_frequency, ltv.c.rfm_monetary)
    ).all()
    bg = np.array(bg_rows, dtype=float).reshape(-1, 4)
    gg = np.array(gg_rows, dtype=float).reshape(-1, 3)
    return bg, gg


def fit_ltv_models(
    bind: Engine | Connection,
    as_of,
    *,
    time_unit_days: float = 7.0,
    penalizer: float = 0.0,
):
    """Fit both models on the RFM summary stored for ``as_of``; returns (bgnbd, gamma_gamma, bg_histogram)."""
    d = _as_date(as_of)

    def run(conn):
        ltv, _ = ltv_tables(conn)
        return _histograms(conn, ltv, d)

    bg, gg = _in_transaction(bind, run)
    return (*_fit(bg, gg, time_unit_days, penalizer), bg)


def _fit(bg: np.ndarray, gg: np.ndarray, time_unit_days: float, penalizer: float):
    if bg.shape[0] == 0:
        raise LtvFitError("no customer with a valid purchase for this date: run `storesync ltv` (or the storesync_ltv DAG) first")
    unit = float(time_unit_days)
    bgnbd = fit_bgnbd(bg[:, 0], bg[:, 1] / unit, bg[:, 2] / unit, bg[:, 3], penalizer=penalizer)
    gamma_gamma = fit_gamma_gamma(gg[:, 0], gg[:, 1], gg[:, 2], penalizer=penalizer)
    if not (bgnbd.converged and gamma_gamma.converged):
        raise LtvFitError(
            f"LTV models did not converge (BG/NBD {bgnbd.converged}, Gamma-Gamma {gamma_gamma.converged}); "
            "try a small penalizer such as 0.001"
        )
    return bgnbd, gamma_gamma


def predict_ltv(
    bind: Engine | Connection,
    as_of,
    *,
    horizon_days: int = 365,
    time_unit_days: float = 7.0,
    discount_rate: float = 0.0,
    discount_period_days: float = 30.0,
    penalizer: float = 0.0,
) -> LtvModelFit:
    """Fit BG/NBD and Gamma-Gamma on the RFM summary that ``compute_historic_ltv`` stored for
    ``as_of`` and write per-customer predictions over ``horizon_days`` into
    ``storesync_ltv_predictions`` (the view ``storesync_customer_ltv`` shows them) plus the
    fitted parameters into ``storesync_ltv_models``.

    ``time_unit_days``: the models' time unit (7 = weeks, the default; 1 = days); results do not
    depend on it beyond numerical noise. ``discount_rate``: per ``discount_period_days`` period
    (0 = undiscounted). Customers without a valid purchase get NULL predictions. Idempotent.
    """
    if horizon_days < 0 or time_unit_days <= 0 or discount_period_days <= 0 or discount_rate < 0:
        raise ValueError("horizon_days, discount_rate >= 0; time_unit_days, discount_period_days > 0")
    d = _as_date(as_of)
    unit = float(time_unit_days)

    def run(conn: Connection) -> LtvModelFit:
        ltv, models = ltv_tables(conn)
        bg, gg = _histograms(conn, ltv, d)
        started = _time.perf_counter()
        bgnbd, gamma_gamma = _fit(bg, gg, unit, penalizer)
        x, rec_days, t_days = bg[:, 0], bg[:, 1], bg[:, 2]
        t_x, T = rec_days / unit, t_days / unit
        horizon = horizon_days / unit
        expected = bgnbd.expected_purchases(horizon, x, t_x, T)
        alive = bgnbd.p_alive(x, t_x, T)
        discounted = discounted_purchases(
            bgnbd, x, t_x, T, horizon=horizon, discount_rate=discount_rate, period=discount_period_days / unit
        )
        fit_seconds = _time.perf_counter() - started
        if not (np.all(np.isfinite(expected)) and np.all(np.isfinite(discounted))):
            raise LtvFitError("non-finite predicted purchases; the fitted parameters are degenerate")

        rows = _write_predictions(conn, ltv, d, bg, expected, alive, discounted, gamma_gamma, horizon_days)
        fit = LtvModelFit(
            as_of=d,
            bgnbd=bgnbd,
            gamma_gamma=gamma_gamma,
            n_customers=int(bg[:, 3].sum()),
            n_repeat_customers=int(bg[x > 0, 3].sum()),
            n_distinct_rfm=int(bg.shape[0]),
            time_unit_days=unit,
            horizon_days=int(horizon_days),
            discount_rate=float(discount_rate),
            discount_period_days=float(discount_period_days),
            fit_seconds=fit_seconds,
            rows_written=rows,
        )
        values = {
            "as_of": d,
            "fitted_at": datetime.now(timezone.utc).replace(tzinfo=None),
            "n_customers": fit.n_customers,
            "n_repeat_customers": fit.n_repeat_customers,
            "time_unit_days": unit,
            "horizon_days": int(horizon_days),
            "discount_rate": float(discount_rate),
            "discount_period_days": float(discount_period_days),
            "params": json.loads(json.dumps(fit.params_json(), default=float)),
        }
        stmt = upsert_insert(conn, models).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[models.c.as_of],
            set_={k: stmt.excluded[k] for k in values if k != "as_of"},
        )
        conn.execute(stmt)
        return fit

    return _in_transaction(bind, run)


def _write_predictions(conn, ltv, d, bg, expected, alive, discounted, gg: GammaGammaParams, horizon_days):
    tmp = Table(
        f"{_TMP_TABLE}_{uuid.uuid4().hex[:12]}",
        MetaData(),
        Column("frequency", Integer, nullable=False),
        Column("recency_days", Integer, nullable=False),
        Column("t_days", Integer, nullable=False),
        Column("expected_purchases", Double, nullable=False),
        Column("p_alive", Double, nullable=False),
        Column("discounted_purchases", Double, nullable=False),
        PrimaryKeyConstraint("frequency", "recency_days", "t_days"),  # the join's lookup key
        prefixes=["TEMPORARY"],
    )
    # A temporary table lives in this connection only; on error the transaction rollback drops it.
    tmp.create(conn)
    columns = {
        "frequency": bg[:, 0].astype(np.int64).tolist(),
        "recency_days": bg[:, 1].astype(np.int64).tolist(),
        "t_days": bg[:, 2].astype(np.int64).tolist(),
        "expected_purchases": np.asarray(expected, dtype=float).tolist(),
        "p_alive": np.asarray(alive, dtype=float).tolist(),
        "discounted_purchases": np.asarray(discounted, dtype=float).tolist(),
    }
    payload = [dict(zip(columns, values)) for values in zip(*columns.values())]
    for start in range(0, len(payload), _INSERT_CHUNK):
        conn.execute(tmp.insert(), payload[start : start + _INSERT_CHUNK])
    if conn.dialect.name == "postgresql":
        conn.execute(text(f'ANALYZE "{tmp.name}"'))  # temporary tables get no autovacuum statistics

    # Gamma-Gamma E[M | x, m] = p (v + x m) / (p x + q - 1), in SQL on each customer's row.
    p, q, v = (literal(float(val), Double()) for val in (gg.p, gg.q, gg.v))
    x = ltv.c.rfm_frequency
    m = func.coalesce(ltv.c.rfm_monetary, 0.0)
    denominator = p * x + q - 1.0
    aov = case((denominator > 0, p * (v + x * m) / denominator))
    money = Numeric(20, 6)
    body = (
        select(
            ltv.c.as_of,
            ltv.c.customer_id,
            tmp.c.expected_purchases,
            tmp.c.p_alive,
            func.round(cast(aov, money), 2),
            # No CLV for a customer whose net revenue is negative (only possible from a source
            # that lets negative totals through): a forecast from a refund balance means nothing.
            case((ltv.c.net_revenue < 0, None), else_=func.round(cast(aov * tmp.c.discounted_purchases, money), 2)),
            literal(int(horizon_days), Integer()),
        )
        .select_from(
            ltv.join(
                tmp,
                and_(
                    tmp.c.frequency == ltv.c.rfm_frequency,
                    tmp.c.recency_days == ltv.c.rfm_recency_days,
                    tmp.c.t_days == ltv.c.rfm_t_days,
                ),
            )
        )
        .where(ltv.c.as_of == d)
    )
    # The day's predictions replace whatever an earlier run of it wrote (customers without a
    # valid purchase get none: the view shows NULLs).
    _, predictions, _ = ltv_storage(conn)
    conn.execute(predictions.delete().where(predictions.c.as_of == d))
    stmt = predictions.insert().from_select(["as_of", "customer_id", *PREDICTED_COLUMNS], body)
    written = conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount
    tmp.drop(conn)
    return written

