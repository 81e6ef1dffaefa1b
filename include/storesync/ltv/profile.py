"""The LTV fields the vendor mappers put on a customer's profile (Sailthru vars, Sendlane custom fields).

Names are at most 32 characters (Sailthru's var-name limit). Money is ``Decimal`` in currency
units, like every amount in storesync; the mappers convert it the way their vendor wants.
``ltv_currency`` says which currency the money fields are in (the ``[ltv]`` reporting currency
the day was computed in; None for a day computed without one).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.engine import Engine

from storesync.ltv.historic import _as_date
from storesync.ltv.tables import ltv_storage, ltv_tables

__all__ = ["PROFILE_FIELDS", "ltv_profile_fields"]

PROFILE_FIELDS = ("ltv_order_count", "ltv_net_revenue", "ltv_predicted_clv", "ltv_p_alive", "ltv_currency")
assert all(len(name) <= 32 for name in PROFILE_FIELDS)

_ID_CHUNK = 1000  # customer ids per IN (...) list
_P_ALIVE_DIGITS = 4


def _row_fields(row, currency) -> dict:
    return {
        "ltv_order_count": int(row.order_count or 0),
        "ltv_net_revenue": row.net_revenue if row.net_revenue is not None else Decimal("0.00"),
        "ltv_predicted_clv": row.predicted_clv,
        "ltv_p_alive": None if row.p_alive is None else round(float(row.p_alive), _P_ALIVE_DIGITS),
        "ltv_currency": currency,
    }


def ltv_profile_fields(
    engine: Engine, as_of, customer_ids: Iterable | None = None
) -> Iterator[tuple[object, dict]]:
    """Yield ``(customer_id, {"ltv_order_count": int, "ltv_net_revenue": Decimal,
    "ltv_predicted_clv": Decimal | None, "ltv_p_alive": float | None, "ltv_currency": str | None})`` for the customers that
    have an LTV row for ``as_of`` (all of them, ordered by customer_id, or those of
    ``customer_ids``, chunk by chunk). Predictions are None until ``predict_ltv`` ran for the date.
    Rows are streamed: memory does not grow with the number of customers."""
    d = _as_date(as_of)
    with engine.connect() as conn:
        ltv, _ = ltv_tables(conn)
        _, _, runs = ltv_storage(conn)
        currency = conn.execute(select(runs.c.currency).where(runs.c.as_of == d)).scalar_one_or_none()
        base = select(
            ltv.c.customer_id, ltv.c.order_count, ltv.c.net_revenue, ltv.c.predicted_clv, ltv.c.p_alive
        ).where(ltv.c.as_of == d)
        if customer_ids is None:
            result = conn.execution_options(yield_per=5000).execute(base.order_by(ltv.c.customer_id))
            for row in result:
                yield row.customer_id, _row_fields(row, currency)
            return
        ids = list(dict.fromkeys(customer_ids))
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            stmt = base.where(ltv.c.customer_id.in_(chunk)).order_by(ltv.c.customer_id)
            for row in conn.execute(stmt):
                yield row.customer_id, _row_fields(row, currency)
