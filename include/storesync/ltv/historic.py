"""Historic LTV and the RFM summary, computed inside the warehouse (SQLAlchemy Core pushdown).

``compute_historic_ltv`` runs ONE ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` statement: the
orders, their as-of statuses and the per-customer aggregates never leave the database. See the
package docstring (``storesync.ltv``) for the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    Integer,
    String,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import FromClause, Select
from sqlalchemy.sql.functions import FunctionElement

from storesync.core.errors import ConfigurationError
from storesync.ltv.tables import HISTORIC_COLUMNS, ensure_ltv_tables

__all__ = [
    "OrderSource",
    "RfmSummary",
    "as_of_cutoff",
    "compute_historic_ltv",
    "epoch_day",
    "historic_ltv_select",
    "rfm_summary",
    "upsert_insert",
]

_EPOCH = date(1970, 1, 1)
ORDER_COLUMNS = ("customer_id", "order_id", "status", "total", "created_at")
HISTORY_COLUMNS = ("order_id", "status", "changed_at")


# ----------------------------------------------------------------------------- the source spec
@dataclass(frozen=True)
class OrderSource:
    """Where orders (and their status history) come from, and what their statuses mean.

    ``orders``: a Core ``Table`` or selectable (``select(...).subquery()``) with the columns
    customer_id, order_id, status, total, created_at. ``status_history``: one with order_id,
    status, changed_at (and optionally history_id, the tie-break between equal changed_at), or
    ``None`` to use ``orders.status`` as is (then a backfill sees today's statuses: not
    reproducible). Label your own columns to these names to plug another schema in.
    """

    orders: FromClause
    status_history: FromClause | None = None
    excluded_statuses: tuple[str, ...] = ("failed",)
    reversed_statuses: tuple[str, ...] = ("cancelled", "refunded")
    initial_status: str = "pending"

    def __post_init__(self) -> None:
        missing = [c for c in ORDER_COLUMNS if c not in self.orders.c]
        if missing:
            raise ConfigurationError(f"LTV order source lacks column(s) {', '.join(missing)}")
        if self.status_history is not None:
            missing = [c for c in HISTORY_COLUMNS if c not in self.status_history.c]
            if missing:
                raise ConfigurationError(f"LTV status history lacks column(s) {', '.join(missing)}")
        object.__setattr__(self, "excluded_statuses", tuple(self.excluded_statuses))
        object.__setattr__(self, "reversed_statuses", tuple(self.reversed_statuses))

    @classmethod
    def demo(cls) -> OrderSource:
        """The demo store: ``orders`` with ``order_status_history``."""
        from storesync.warehouse.schema import order_status_history, orders

        return cls(orders=orders, status_history=order_status_history)


# ------------------------------------------------------------------------- portable day number
class epoch_day(FunctionElement):
    """Whole days from 1970-01-01 to the calendar date of a DATETIME (or DATE) expression."""

    type = Integer()
    inherit_cache = True
    name = "epoch_day"


@compiles(epoch_day, "sqlite")
def _epoch_day_sqlite(element, compiler, **kw):
    return f"CAST(julianday(date({compiler.process(element.clauses, **kw)})) - 2440587.5 AS INTEGER)"


@compiles(epoch_day)
def _epoch_day_default(element, compiler, **kw):  # PostgreSQL (and ANSI date arithmetic)
    return f"(CAST({compiler.process(element.clauses, **kw)} AS DATE) - DATE '1970-01-01')"


def _as_date(as_of) -> date:
    if isinstance(as_of, datetime):
        return as_of.date()
    if isinstance(as_of, date):
        return as_of
    if isinstance(as_of, str):
        return date.fromisoformat(as_of[:10])
    raise TypeError(f"as_of must be a date, got {type(as_of).__name__}")


def as_of_cutoff(as_of) -> datetime:
    """The exclusive upper bound of ``as_of``: midnight starting the next day (naive, warehouse time)."""
    return datetime.combine(_as_date(as_of) + timedelta(days=1), time.min)


def _day_number(d: date) -> int:
    return (d - _EPOCH).days


# ----------------------------------------------------------------------------------- the query
def _orders_as_of(source: OrderSource, cutoff: datetime):
    """Orders created before ``cutoff`` (with a customer_id), with their status as of ``cutoff``.

    Only orders with a status change at or after the cutoff consult the history: every other
    order's status has not moved since, so it is ``orders.status``. For a nightly run that is a
    handful of orders, found through the index on ``changed_at``; the big scan is one pass over
    ``orders`` with no per-order lookup, on SQLite as on PostgreSQL."""
    o = source.orders
    cutoff_param = literal(cutoff, o.c.created_at.type)
    from_ = o
    status = func.coalesce(o.c.status, literal(source.initial_status, String()))
    h = source.status_history
    if h is not None:
        h_cutoff = literal(cutoff, h.c.changed_at.type)
        later = h.alias("ltv_history_later")
        changed_since = select(later.c.order_id).where(later.c.changed_at >= h_cutoff)
        tiebreak = [h.c.history_id.desc()] if "history_id" in h.c else [h.c.status.desc()]
        status_before_cutoff = (
            select(h.c.status)
            .where(h.c.order_id == o.c.order_id, h.c.changed_at < h_cutoff)
            .order_by(h.c.changed_at.desc(), *tiebreak)
            .limit(1)
            .scalar_subquery()
        )
        # Changed since the cutoff: its latest change before the cutoff, or `initial_status` when
        # its history starts later (never today's status for a past day). Otherwise orders.status.
        # The IN list is built once, from the few ids changed since; the lookup runs only for them.
        status = case(
            (o.c.order_id.in_(changed_since),
             func.coalesce(status_before_cutoff, literal(source.initial_status, String()))),
            else_=status,
        )
    # coalesce(x, x) is x; as an expression it keeps SQLite from walking ``orders`` through the
    # customer_id index to save the GROUP BY a sort: one random page read per order, hours on
    # 10M orders, where a sequential scan and a sort take a minute.
    customer_id = func.coalesce(o.c.customer_id, o.c.customer_id)
    return (
        select(
            customer_id.label("customer_id"),
            o.c.total.label("total"),
            o.c.created_at.label("created_at"),
            epoch_day(o.c.created_at).label("day"),
            status.label("status"),
        )
        .select_from(from_)
        .where(o.c.created_at < cutoff_param, customer_id.is_not(None))
        .subquery("ltv_orders_as_of")
    )


def historic_ltv_select(as_of, source: OrderSource | None = None) -> Select:
    """The per-customer SELECT (customer_id, as_of and the HISTORIC_COLUMNS) for ``as_of``.

    One row per customer with at least one order created by the end of ``as_of`` (a customer
    whose orders all failed gets a row of zeros). Portable to SQLite and PostgreSQL.
    """
    source = source or OrderSource.demo()
    d = _as_date(as_of)
    as_of_day = literal(_day_number(d), Integer())
    oa = _orders_as_of(source, as_of_cutoff(d))
    zero = literal_column("0")
    not_gross = tuple(source.excluded_statuses)
    not_net = tuple(dict.fromkeys((*source.excluded_statuses, *source.reversed_statuses)))
    is_gross = ~oa.c.status.in_(not_gross) if not_gross else literal_column("1") == 1  # not failed
    is_valid = ~oa.c.status.in_(not_net) if not_net else literal_column("1") == 1  # not failed/reversed
    one = literal_column("1")
    one_point_zero = literal_column("1.0")  # forces non-integer division (SQLite) / stays NUMERIC (PG)

    days = (
        select(
            oa.c.customer_id,
            oa.c.day,
            func.sum(case((is_gross, one), else_=zero)).label("gross_count"),
            func.sum(case((is_gross, oa.c.total), else_=zero)).label("gross_sum"),
            func.sum(case((is_valid, one), else_=zero)).label("net_count"),
            func.sum(case((is_valid, oa.c.total), else_=zero)).label("net_sum"),
            func.min(case((is_gross, oa.c.created_at))).label("first_at"),
            func.max(case((is_gross, oa.c.created_at))).label("last_at"),
        )
        .group_by(oa.c.customer_id, oa.c.day)
        .subquery("ltv_customer_days")
    )
    valid_day = case((days.c.net_count > 0, days.c.day))
    gross_day = case((days.c.gross_count > 0, days.c.day))
    n_valid_days = func.count(valid_day)
    net_sum = func.sum(days.c.net_sum)
    net_count = func.sum(days.c.net_count)
    # Gamma-Gamma's monetary value is the mean over repeat days: every valid day but the first.
    # The first valid day's takings ride along min() in one integer key, day * 10^12 + cents
    # (offset so that a negative total stays in range), instead of a window over each customer's
    # days: one sort fewer over every customer-day of the store.
    offset = 5 * 10**11
    first_key = func.min(case((days.c.net_count > 0,
                               days.c.day * literal(10**12, BigInteger())
                               + cast(func.round(days.c.net_sum * 100), BigInteger()) + offset)))
    first_day_sum = ((first_key % literal(10**12, BigInteger())) - offset) * one_point_zero / 100
    repeat_sum = func.sum(case((days.c.net_count > 0, days.c.net_sum))) - first_day_sum
    monetary = case(
        (n_valid_days > 1, repeat_sum * one_point_zero / (n_valid_days - 1)),
        (n_valid_days == 1, zero),
    )
    return select(
        days.c.customer_id.label("customer_id"),
        literal(d, Date()).label("as_of"),
        net_count.label("order_count"),
        func.round(func.sum(days.c.gross_sum), 2).label("gross_revenue"),
        func.round(net_sum, 2).label("net_revenue"),
        func.round(net_sum * one_point_zero / func.nullif(net_count, 0), 2).label("avg_order_value"),
        func.min(days.c.first_at).label("first_order_at"),
        func.max(days.c.last_at).label("last_order_at"),
        (as_of_day - func.min(gross_day)).label("tenure_days"),
        (func.nullif(n_valid_days, 0) - 1).label("rfm_frequency"),
        (func.max(valid_day) - func.min(valid_day)).label("rfm_recency_days"),
        (as_of_day - func.min(valid_day)).label("rfm_t_days"),
        cast(monetary, Float()).label("rfm_monetary"),
    ).group_by(days.c.customer_id)


# ------------------------------------------------------------------------------------- writing
def upsert_insert(conn: Connection, table):
    """The dialect's INSERT that supports ON CONFLICT DO UPDATE (SQLite, PostgreSQL)."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ConfigurationError(f"LTV upserts support SQLite and PostgreSQL, not {name}")
    return insert(table)


def compute_historic_ltv(bind: Engine | Connection, as_of, source: OrderSource | None = None) -> int:
    """Upsert the historic LTV (and RFM summary) of every customer as of ``as_of`` into
    ``storesync_customer_ltv`` with one INSERT ... SELECT (created if missing). Idempotent:
    rerunning a date rewrites the same numbers; predictions already written stay untouched.
    Returns the number of rows written."""
    source = source or OrderSource.demo()
    body = historic_ltv_select(as_of, source)

    def run(conn: Connection) -> int:
        ltv, _ = ensure_ltv_tables(conn, source.orders.c.customer_id.type)
        names = ["customer_id", "as_of", *HISTORIC_COLUMNS]
        stmt = upsert_insert(conn, ltv).from_select(names, body)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ltv.c.as_of, ltv.c.customer_id],
            set_={name: stmt.excluded[name] for name in HISTORIC_COLUMNS},
        )
        return conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount

    return _in_transaction(bind, run)


def _in_transaction(bind: Engine | Connection, fn):
    if isinstance(bind, Connection):
        if bind.in_transaction():
            return fn(bind)
        with bind.begin():
            return fn(bind)
    with bind.begin() as conn:
        return fn(conn)


# ----------------------------------------------------------------------------- the RFM summary
@dataclass(frozen=True)
class RfmSummary:
    """Per-customer RFM summary (customers with at least one valid purchase), in ``time_unit_days``."""

    customer_id: np.ndarray
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary: np.ndarray
    time_unit_days: float

    def __len__(self) -> int:
        return int(self.customer_id.size)


def rfm_summary(
    bind: Engine | Connection,
    as_of,
    source: OrderSource | None = None,
    *,
    time_unit_days: float = 7.0,
    customer_ids: Sequence | None = None,
) -> RfmSummary:
    """Compute the RFM summary in SQL (straight from the source, not the LTV table) and fetch it:
    frequency = distinct valid purchase days - 1, recency = last - first valid purchase day,
    T = as_of - first valid purchase day (both / ``time_unit_days``), monetary = mean total per
    repeat purchase day (0 without repeats). Ordered by customer_id."""
    q = historic_ltv_select(as_of, source).subquery("ltv")
    stmt = (
        select(q.c.customer_id, q.c.rfm_frequency, q.c.rfm_recency_days, q.c.rfm_t_days, q.c.rfm_monetary)
        .where(q.c.rfm_frequency.is_not(None))
        .order_by(q.c.customer_id)
    )
    if customer_ids is not None:
        stmt = stmt.where(q.c.customer_id.in_(list(customer_ids)))

    def run(conn: Connection):
        return conn.execute(stmt).all()

    rows = _in_transaction(bind, run)
    unit = float(time_unit_days)
    cols = list(zip(*rows)) if rows else [(), (), (), (), ()]
    return RfmSummary(
        customer_id=np.asarray(cols[0]),
        frequency=np.asarray(cols[1], dtype=float),
        recency=np.asarray(cols[2], dtype=float) / unit,
        T=np.asarray(cols[3], dtype=float) / unit,
        monetary=np.asarray(cols[4], dtype=float),
        time_unit_days=unit,
    )

