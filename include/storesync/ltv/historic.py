"""Historic LTV and the RFM summary, computed inside the warehouse (SQLAlchemy Core pushdown).

``compute_historic_ltv`` runs ONE ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` statement: the
orders, their as-of statuses and the per-customer aggregates never leave the database. See the
package docstring (``storesync.ltv``) for the definitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Double,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    func,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import FromClause, Select
from sqlalchemy.sql.functions import FunctionElement

from storesync.core.errors import ConfigurationError
from storesync.ltv import statuses
from storesync.ltv.tables import (
    OPEN_END,
    VERSION_COLUMNS,
    ensure_ltv_tables,
    ltv_storage,
)

__all__ = [
    "OrderSource",
    "RfmSummary",
    "as_of_cutoff",
    "compute_historic_ltv",
    "epoch_day",
    "historic_ltv_select",
    "ltv_index_available",
    "recompute_customers",
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

    ``valid_statuses``: when given, only these statuses are valid and a status in no class
    (unknown) counts nowhere; None (the default) keeps every status that is neither excluded nor
    reversed valid. ``currency``: what every total is in (recorded with each computed day, and
    on the profiles). ``fingerprint``: the definition's identity when ``orders`` is built per run
    (``storesync.ltv.source``), instead of the SQL of ``orders``.
    """

    orders: FromClause
    status_history: FromClause | None = None
    excluded_statuses: tuple[str, ...] = ("failed",)
    reversed_statuses: tuple[str, ...] = ("cancelled", "refunded")
    initial_status: str = "pending"
    valid_statuses: tuple[str, ...] | None = None
    currency: str | None = None
    fingerprint: str | None = None

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
        if self.valid_statuses is not None:
            object.__setattr__(self, "valid_statuses", tuple(self.valid_statuses))

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


def _compiled_as(element_class, sqlite: str, default: str) -> None:
    """Register ``element_class``'s SQL: ``{x}`` in each template is its compiled argument;
    ``default`` serves PostgreSQL (and ANSI date arithmetic)."""

    @compiles(element_class, "sqlite")
    def _sqlite(element, compiler, **kw):
        return sqlite.format(x=compiler.process(element.clauses, **kw))

    @compiles(element_class)
    def _default(element, compiler, **kw):
        return default.format(x=compiler.process(element.clauses, **kw))


_compiled_as(epoch_day, "CAST(julianday(date({x})) - 2440587.5 AS INTEGER)",
             "(CAST({x} AS DATE) - DATE '1970-01-01')")


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
def _latest_status_before(history, order_id, cutoff: datetime):
    """The status of the order ``order_id`` after its last change before ``cutoff`` (a scalar
    subquery: NULL when its history starts later). Of changes at the same instant, the later
    history row counts (history_id), else the greater status."""
    tiebreak = [history.c.history_id.desc()] if "history_id" in history.c else [history.c.status.desc()]
    return (
        select(history.c.status)
        .where(history.c.order_id == order_id, history.c.changed_at < literal(cutoff, history.c.changed_at.type))
        .order_by(history.c.changed_at.desc(), *tiebreak)
        .limit(1)
        .scalar_subquery()
    )


def _orders_as_of(source: OrderSource, cutoff: datetime, only_customers=(), where=(), statuses=None):
    """Orders created before ``cutoff`` (with a customer_id), with the class of their status as
    of ``cutoff`` (``status_class``, see ``_status_class``).

    Only orders with a status change at or after the cutoff consult the history: every other
    order's status has not moved since, so it is ``orders.status``. For a nightly run that is a
    handful of orders, found through the index on ``changed_at``; the big scan is one pass over
    ``orders`` with no per-order lookup, on SQLite as on PostgreSQL. ``statuses``: a table of
    those orders (order_id, status as of ``cutoff``), already found (``_statuses_table``):
    joined to, not looked up per order."""
    o = source.orders
    cutoff_param = literal(cutoff, o.c.created_at.type)
    from_ = o
    status = func.coalesce(o.c.status, literal(source.initial_status, String()))
    h = source.status_history
    if h is not None and statuses is not None:
        from_ = o.outerjoin(statuses, statuses.c.order_id == o.c.order_id)
        status = case((statuses.c.order_id.is_not(None), statuses.c.status), else_=status)
    elif h is not None:
        later = h.alias("ltv_history_later")
        changed_since = select(later.c.order_id).where(later.c.changed_at >= literal(cutoff, later.c.changed_at.type))
        status_before_cutoff = _latest_status_before(h, o.c.order_id, cutoff)
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
    conditions = [o.c.created_at < cutoff_param, customer_id.is_not(None)]
    for customers in only_customers:  # a few customers: found through the customer_id index
        conditions.append(o.c.customer_id.in_(customers))
    conditions += list(where)
    rows = (
        select(
            customer_id.label("customer_id"),
            o.c.total.label("total"),
            o.c.created_at.label("created_at"),
            epoch_day(o.c.created_at).label("day"),
            # Only the class is read (the status tests): the status, a lookup for an order
            # changed since the cutoff, is evaluated once a row, as the simple CASE's subject.
            _status_class(status, source).label("status_class"),
        )
        .select_from(from_)
        .where(*conditions)
    )
    if h is None:
        return rows.subquery("ltv_orders_as_of")
    # Kept whole (OFFSET 0): flattened into the grouping above, each aggregate testing the
    # status repeated its history lookup, six a row. The first day of a 1M-order store
    # 4.3 -> 3.2 s on SQLite; 100k orders 2.1 -> 0.4 s on PostgreSQL (more orders changed
    # since the cutoff, as in a backfill, widen the gap).
    return rows.offset(0).subquery("ltv_orders_as_of")


def _orders_as_of_from_index(source: OrderSource, cutoff: datetime, only_customers):
    """``_orders_as_of`` for a few customers (``only_customers``, not empty), read from the
    covering index rather than the table: their orders as they are now, EXCEPT ALL the rows of
    their orders changed since the cutoff as they are now, UNION ALL those orders as of the cutoff.

    The index lacks order_id, which the lookup of an as-of status needs, so each of the
    customers' orders would be a table read: a handful of heavy buyers changed since the cutoff
    own hundreds of thousands of orders (10M orders: 386k random page reads, 1.3 s). What the
    aggregates see of an order is (customer_id, created_at, status, total), so taking one copy
    of a row away is the same as taking that order away, whichever of equal copies goes.
    PostgreSQL (EXCEPT ALL); not SQLite, whose index carries the rowid anyway."""
    o, h = source.orders, source.status_history
    initial = literal(source.initial_status, String())
    later = h.alias("ltv_history_later")
    changed = o.alias("ltv_changed_order")
    status_before_cutoff = _latest_status_before(h, changed.c.order_id, cutoff)
    # Found on their own, from the few changes since the cutoff: joined to the customers, the
    # planner fetched every order of theirs to find the changed ones (it expects ~90 orders to a
    # customer; these have thousands).
    changed_orders = select(
        changed.c.customer_id, changed.c.total, changed.c.created_at,
        func.coalesce(changed.c.status, initial).label("status_now"),
        func.coalesce(status_before_cutoff, initial).label("status_as_of"),
    ).where(changed.c.order_id.in_(select(later.c.order_id).where(
                later.c.changed_at >= literal(cutoff, later.c.changed_at.type))),
            changed.c.created_at < literal(cutoff, changed.c.created_at.type),
            changed.c.customer_id.is_not(None)).cte("ltv_changed_orders").prefix_with("MATERIALIZED")

    def rows(table, status):
        return select(table.c.customer_id.label("customer_id"), table.c.total.label("total"),
                      table.c.created_at.label("created_at"), status.label("status")).where(
            *[table.c.customer_id.in_(customers) for customers in only_customers])

    now = rows(o, func.coalesce(o.c.status, initial)).where(
        o.c.created_at < literal(cutoff, o.c.created_at.type)).except_all(
        rows(changed_orders, changed_orders.c.status_now)).subquery("ltv_orders_now")
    every = select(now).union_all(rows(changed_orders, changed_orders.c.status_as_of)).subquery("ltv_orders_every")
    return select(every.c.customer_id, every.c.total, every.c.created_at,
                  epoch_day(every.c.created_at).label("day"), every.c.status,
                  _status_class(every.c.status, source).label("status_class")).subquery("ltv_orders_as_of")


def _class_tests(status_class):
    """(gross, valid) from a status class (``_status_class``), computed once an order: gross =
    valid or reversed, valid = valid. The OR chains of ``_status_tests`` cost SQLite a third of
    the daily recompute (six tests a row, each up to six comparisons)."""
    return status_class >= literal_column("1"), status_class == literal_column("2")


def _status_tests(status, source: OrderSource):
    """(gross, valid) for a status expression: gross = not excluded (failed), valid = neither
    excluded nor reversed (cancelled, refunded). Written as ``<>`` chains: SQLite evaluates a
    ``NOT IN`` list through an ephemeral index, per row and per aggregate that tests it (the
    full query over 10M orders: a fifth of its time)."""
    if source.valid_statuses is not None:  # a closed list: unknown statuses count nowhere
        def one_of(statuses):
            return or_(*(status == literal(s, String()) for s in statuses))

        return one_of((*source.valid_statuses, *source.reversed_statuses)), one_of(source.valid_statuses)
    not_gross = tuple(source.excluded_statuses)
    not_net = tuple(dict.fromkeys((*source.excluded_statuses, *source.reversed_statuses)))

    def none_of(statuses):
        return and_(*(status != literal(s, String()) for s in statuses)) if statuses else literal_column("1") == 1

    return none_of(not_gross), none_of(not_net)


def historic_ltv_select(as_of, source: OrderSource | None = None, *, indexed: bool = False,
                        only_customers=None, changed_customers: Select | None = None,
                        except_all: bool = False, statuses=None) -> Select:
    """The per-customer SELECT (customer_id, as_of and the HISTORIC_COLUMNS) for ``as_of``.

    One row per customer with at least one order created by the end of ``as_of`` (a customer
    whose orders all failed gets a row of zeros). Portable to SQLite and PostgreSQL.

    ``indexed=True`` (see ``ltv_index_available``) when ``orders`` has an index leading with
    customer_id that covers created_at, status and total: every customer whose orders did not
    change since the cutoff is then summed in one pass over that index, in customer order (no
    sort, no table reads), and only the customers with an order changed since take the general
    query. Both give the same numbers. ``only_customers``: a SELECT of customer ids to restrict
    the rows to (the incremental run's changed customers). ``changed_customers`` (the indexed
    query): the customers with an order changed since the cutoff, when already found.
    ``except_all`` (the indexed query, on a dialect with EXCEPT ALL: PostgreSQL): those
    customers' orders are read from the index too (see ``_orders_as_of_from_index``).
    ``statuses``: the orders changed since the day's cutoff with their status as of it, when
    already in a table (``_statuses_table``).
    """
    source = source or OrderSource.demo()
    restrict = () if only_customers is None else (only_customers,)
    if indexed:
        return _indexed_select(_as_date(as_of), source, restrict, changed_customers, except_all, statuses)
    return _general_select(_as_date(as_of), source, restrict, statuses=statuses)


def _general_select(d: date, source: OrderSource, only_customers=(), *, from_index: bool = False,
                    statuses=None) -> Select:
    """Any orders source: as-of statuses per order, grouped by customer and day, then by customer.
    ``from_index``: the orders as ``_orders_as_of_from_index`` reads them; ``statuses``: see
    ``_orders_as_of``."""
    as_of_day = literal(_day_number(d), Integer())
    if from_index and source.status_history is not None and only_customers:
        oa = _orders_as_of_from_index(source, as_of_cutoff(d), only_customers)
    else:
        oa = _orders_as_of(source, as_of_cutoff(d), only_customers, statuses=statuses)
    zero = literal_column("0")
    is_gross, is_valid = _class_tests(oa.c.status_class)
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
        (n_valid_days > 1, _mean_of_cents(func.round(repeat_sum * 100), n_valid_days - 1)),
        (n_valid_days == 1, zero),
    )
    return select(
        days.c.customer_id.label("customer_id"),
        literal(d, Date()).label("as_of"),
        net_count.label("order_count"),
        func.round(func.sum(days.c.gross_sum), 2).label("gross_revenue"),
        func.round(net_sum, 2).label("net_revenue"),
        _mean_in_cents(net_sum, net_count).label("avg_order_value"),
        func.min(days.c.first_at).label("first_order_at"),
        func.max(days.c.last_at).label("last_order_at"),
        (as_of_day - func.min(gross_day)).label("tenure_days"),
        (func.nullif(n_valid_days, 0) - 1).label("rfm_frequency"),
        (func.max(valid_day) - func.min(valid_day)).label("rfm_recency_days"),
        (as_of_day - func.min(valid_day)).label("rfm_t_days"),
        cast(monetary, Double()).label("rfm_monetary"),
    ).group_by(days.c.customer_id)


LTV_INDEX_COLUMNS = ("customer_id", "created_at", "status", "total")


def ltv_index_available(bind: Engine | Connection, source: OrderSource | None = None) -> bool:
    """Whether ``source.orders`` is a table with an index leading with customer_id that covers
    created_at, status and total (PostgreSQL INCLUDE columns count): the indexed query's need."""
    source = source or OrderSource.demo()
    table = source.orders
    if bind.dialect.name == "duckdb":  # columnar: no covering index to read in customer order
        return False
    if not isinstance(table, Table) or any(table.c[c].name != c for c in LTV_INDEX_COLUMNS):
        return False
    indexes = inspect(bind).get_indexes(table.name, schema=table.schema)
    for index in indexes:
        columns = [c for c in index.get("column_names") or () if c]
        included = list(index.get("include_columns") or ())
        included += (index.get("dialect_options") or {}).get("postgresql_include") or ()
        if columns and columns[0] == "customer_id" and set(LTV_INDEX_COLUMNS) <= set(columns) | set(included):
            return True
    return False


class day_key(FunctionElement):
    """The calendar date of a DATETIME expression, as the dialect has it cheapest: compared and
    counted, never subtracted (``epoch_day`` for that)."""

    inherit_cache = True
    name = "day_key"


_compiled_as(day_key, "date({x})", "CAST({x} AS DATE)")


class next_day_start(FunctionElement):
    """Midnight starting the day after a DATETIME expression's date (comparable to the column)."""

    inherit_cache = True
    name = "next_day_start"


_compiled_as(next_day_start, "date({x}, '+1 day')", "(CAST({x} AS DATE) + 1)")


def _changed_since_cutoff(source: OrderSource, d: date) -> Select | None:
    """Customers with an order whose status changed at or after ``d``'s cutoff (None without a
    status history)."""
    h = source.status_history
    if h is None:
        return None
    changed_order = source.orders.alias("ltv_changed_order")
    change = h.alias("ltv_change")
    return (
        select(changed_order.c.customer_id)
        .join(change, change.c.order_id == changed_order.c.order_id)
        .where(change.c.changed_at >= literal(as_of_cutoff(d), change.c.changed_at.type),
               changed_order.c.customer_id.is_not(None))  # NOT IN a list holding NULL is never true
        .distinct()
    )


def _indexed_select(d: date, source: OrderSource, only_customers=(), changed: Select | None = None,
                    except_all: bool = False, statuses=None) -> Select:
    """The general query's numbers in one grouped pass over the covering index.

    Customers with an order whose status changed at or after the cutoff (a nightly run: the few
    changed today) are left to the general query, which looks their as-of statuses up; every
    other customer's orders are at ``orders.status``. Per row only the status tests and one date
    for the distinct valid days are evaluated (day numbers come from the min/max timestamps).
    The first valid day's takings, which Gamma-Gamma's monetary value leaves out, are summed
    back from the index for repeat customers only: from their first valid order to midnight.
    """
    o = source.orders
    h = source.status_history
    cutoff = as_of_cutoff(d)
    as_of_day = literal(_day_number(d), Integer())
    conditions = [o.c.created_at < literal(cutoff, o.c.created_at.type), o.c.customer_id.is_not(None)]
    conditions += [o.c.customer_id.in_(customers) for customers in only_customers]
    if changed is None:
        changed = _changed_since_cutoff(source, d)
    if changed is not None:
        conditions.append(o.c.customer_id.not_in(changed))

    def flags(table):
        return _status_tests(func.coalesce(table.c.status, literal(source.initial_status, String())), source)

    is_gross, is_valid = flags(o)
    zero, one = literal_column("0"), literal_column("1")
    one_point_zero = literal_column("1.0")
    per = (
        select(
            o.c.customer_id,
            func.sum(case((is_gross, o.c.total), else_=zero)).label("gross_sum"),
            func.sum(case((is_valid, one), else_=zero)).label("net_count"),
            func.sum(case((is_valid, o.c.total), else_=zero)).label("net_sum"),
            func.min(case((is_gross, o.c.created_at))).label("first_at"),
            func.max(case((is_gross, o.c.created_at))).label("last_at"),
            func.count(case((is_valid, day_key(o.c.created_at))).distinct()).label("valid_days"),
            func.min(case((is_valid, o.c.created_at))).label("first_valid_at"),
            func.max(case((is_valid, o.c.created_at))).label("last_valid_at"),
        )
        .where(*conditions)
        .group_by(o.c.customer_id)
        .subquery("ltv_customers")
    )
    first = o.alias("ltv_first_day")
    _, first_is_valid = flags(first)
    first_day_sum = (
        select(func.sum(first.c.total))
        .where(first.c.customer_id == per.c.customer_id,
               first.c.created_at >= per.c.first_valid_at,
               first.c.created_at < next_day_start(per.c.first_valid_at),
               first_is_valid)
        .scalar_subquery()
    )
    first_valid_day = epoch_day(per.c.first_valid_at)
    monetary = case(
        (per.c.valid_days > 1, _mean_of_cents(func.round((per.c.net_sum - first_day_sum) * 100), per.c.valid_days - 1)),
        (per.c.valid_days == 1, zero),
    )
    unchanged = select(
        per.c.customer_id.label("customer_id"),
        literal(d, Date()).label("as_of"),
        per.c.net_count.label("order_count"),
        func.round(per.c.gross_sum, 2).label("gross_revenue"),
        func.round(per.c.net_sum, 2).label("net_revenue"),
        _mean_in_cents(per.c.net_sum, per.c.net_count).label("avg_order_value"),
        per.c.first_at.label("first_order_at"),
        per.c.last_at.label("last_order_at"),
        (as_of_day - epoch_day(per.c.first_at)).label("tenure_days"),
        (func.nullif(per.c.valid_days, 0) - 1).label("rfm_frequency"),
        (epoch_day(per.c.last_valid_at) - first_valid_day).label("rfm_recency_days"),
        (as_of_day - first_valid_day).label("rfm_t_days"),
        cast(monetary, Double()).label("rfm_monetary"),
    )
    if changed is None:
        return unchanged
    return unchanged.union_all(_general_select(d, source, only_customers=(*only_customers, changed),
                                               from_index=except_all, statuses=statuses))


def _mean_of_cents(cents, count):
    """A mean in currency units from whole ``cents`` over ``count``: one division of an integral
    number, so the daily job and a full recompute give Gamma-Gamma's monetary value to the bit."""
    return cast(cents, Double()) / cast(count * 100, Double())


def _mean_in_cents(total, count):
    """total / count rounded to cents, half away from zero, from the whole cents of the total:
    the same on SQLite's floats (whatever order they were summed in) as on PostgreSQL's NUMERIC."""
    return func.round(func.round(total * 100) * literal_column("1.0") / func.nullif(count, 0)) / 100


# ------------------------------------------------------------------------------------- writing
def upsert_insert(conn: Connection, table):
    """The dialect's INSERT that supports ON CONFLICT DO UPDATE (SQLite, PostgreSQL)."""
    name = conn.dialect.name
    if name in ("postgresql", "duckdb"):  # duckdb-engine speaks PostgreSQL's dialect
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ConfigurationError(f"LTV upserts support SQLite, PostgreSQL and DuckDB, not {name}")
    return insert(table)


LATE_MARGIN = timedelta(hours=1)


def compute_historic_ltv(
    bind: Engine | Connection,
    as_of,
    source: OrderSource | None = None,
    *,
    incremental: bool = True,
    late_margin: timedelta = LATE_MARGIN,
    max_recompute_share: float = 0.25,
    also_recompute: Select | None = None,
) -> int:
    """Write the historic LTV (and RFM summary) of every customer as of ``as_of``, as the view
    ``storesync_customer_ltv`` shows it (created if missing). Idempotent: rerunning a date gives
    the same numbers; every other day's rows, and predictions, stay as they were. Returns the
    number of customers the day has rows for.

    Only customers whose figures moved are written (``storesync_customer_ltv_versions``): a
    version is closed on the day and a new one starts; a day computed before later days keeps
    those later days' figures (its version ends the next day, the old one resumes).

    Incremental (the daily run): when the day before was computed under the same definition
    (``storesync_ltv_runs``), it is the starting point. A customer whose only news is orders
    created on ``as_of`` gets the day before's figures plus those orders (sums, counts, one
    more purchase day); one with an older order updated since that run (less ``late_margin``,
    or since its cutoff if earlier) is recomputed from all its orders, unless that update is a
    status change dated after the day before that leaves the order in the same class (valid,
    reversed, excluded): a shipment. Everyone else keeps the day before's version, tenure and T
    one day longer. Needs ``updated_at`` on the orders source, moving whenever an order or its
    status does. Falls back to the full query without it, without the day before, or when more
    than ``max_recompute_share`` of the customers must be recomputed. ``incremental=False``
    forces the full query (after correcting old orders in place without touching updated_at,
    say); it still writes only the customers whose figures differ. ``also_recompute``: a
    SELECT of more customer ids an incremental run recomputes from all their orders (those
    whose orders entered or left the quality gate's left-out set since the day before).
    """
    source = source or OrderSource.demo()
    d = _as_date(as_of)
    started_at = datetime.now(timezone.utc).replace(tzinfo=None)

    def run(conn: Connection) -> int:
        indexed = ltv_index_available(conn, source)
        ensure_ltv_tables(conn, source.orders.c.customer_id.type)
        versions, _, runs = ltv_storage(conn)
        definition = _definition(source)
        o = source.orders
        day_columns = [Column("customer_id", o.c.customer_id.type), Column("gone", Integer()),
                       *[versions.c[name]._copy() for name in VERSION_COLUMNS]]
        method, staged, recomputed, from_day = "full", None, 0, None
        since = _incremental_since(conn, runs, d, definition, late_margin) if incremental else None
        from_previous = since is not None and "updated_at" in o.c
        jit_was = _jit_off(conn) if from_previous else None
        # Read by the incremental recompute and the full query alike: found once.
        changed_since, n_changed = _changed_customers_table(conn, source, d) if indexed else (None, 0)
        changed = None if changed_since is None else select(changed_since.c.customer_id)
        status_as_of = _statuses_table(conn, source, d)
        if from_previous:
            previous = d - timedelta(days=1)
            # Both sets are read by several statements: kept in temporary tables, found once.
            recompute = _customers_to_recompute(conn, source, d, since, also_recompute)
            n_recompute = conn.execute(select(func.count()).select_from(recompute)).scalar_one()
            n_previous = conn.execute(select(runs.c.rows_written).where(runs.c.as_of == previous)).scalar_one()
            if 0 < n_previous and n_recompute <= max_recompute_share * n_previous:
                buyers = _temporary(conn, "ltv_tmp_day_buyers",
                                    _day_buyers(_new_orders_as_of(source, d, since, status_as_of), source),
                                    [Column("customer_id", o.c.customer_id.type), Column("gross_sum", Numeric()),
                                     Column("net_count", Integer()), Column("net_sum", Numeric()),
                                     Column("first_at", o.c.created_at.type), Column("last_at", o.c.created_at.type)])
                recompute_ids = select(recompute.c.customer_id)
                staged = _temporary(conn, "ltv_tmp_day", _as_versions(
                    _merged_with_new_orders(versions, previous, d, buyers, recompute_ids), d), day_columns,
                    index_customer_id=True)
                conn.execute(staged.insert().from_select(["customer_id", "gone", *VERSION_COLUMNS], _as_versions(
                    historic_ltv_select(d, source, indexed=indexed, only_customers=recompute_ids,
                                        changed_customers=changed, except_all=_from_index(conn, n_changed),
                                        statuses=status_as_of), d)))
                # A rerun of the day: customers an earlier attempt wrote a version for, and
                # this one did not, are back to the day before's.
                _stage_carried(conn, staged, versions, d)
                method, recomputed, from_day = "incremental", n_recompute, previous
                buyers.drop(conn)
            recompute.drop(conn)
            if staged is None and jit_was is not None:  # too many to recompute: the full query, as configured
                _set_local(conn, "jit", jit_was)
                jit_was = None
        day_rows = historic_ltv_select(d, source, indexed=indexed, changed_customers=changed,
                                       except_all=_from_index(conn, n_changed), statuses=status_as_of)
        if staged is None and not conn.execute(select(exists().where(
                versions.c.valid_to > literal(d, Date())))).scalar_one():
            # Nothing on d or after it (the first run, or a day before any other): every figure
            # is new and current, written straight from the query, no staging, nothing to compare.
            later = conn.execute(select(exists().where(runs.c.as_of > literal(d, Date())))).scalar_one()
            written = conn.execute(versions.insert().from_select(
                ["customer_id", "valid_from", "valid_to", *VERSION_COLUMNS],
                _as_versions(day_rows, d, valid_to=d + timedelta(days=1) if later else OPEN_END))
                .execution_options(preserve_rowcount=True)).rowcount
            recomputed = written
        else:
            if staged is None:
                staged = _temporary(conn, "ltv_tmp_day", _as_versions(day_rows, d), day_columns,
                                    index_customer_id=True)
                _stage_gone(conn, staged, versions, d)
                recomputed = conn.execute(select(func.count()).select_from(staged)).scalar_one()
            written = _write_day(conn, versions, runs, staged, d)
            staged.drop(conn)
        for table in (changed_since, status_as_of):
            if table is not None:
                table.drop(conn)
        n_day = conn.execute(select(func.count()).select_from(versions).where(
            versions.c.valid_to > d, versions.c.valid_from <= d)).scalar_one()
        record = {"computed_at": started_at, "method": method, "definition": definition,
                  "rows_written": n_day, "customers_recomputed": recomputed, "from_as_of": from_day,
                  "versions_written": written, "currency": source.currency}
        stmt = upsert_insert(conn, runs).values(as_of=d, **record)
        conn.execute(stmt.on_conflict_do_update(index_elements=[runs.c.as_of], set_=record))
        if jit_was is not None:
            _set_local(conn, "jit", jit_was)
        return n_day

    return _in_transaction(bind, run)


def recompute_customers(bind: Engine | Connection, as_of, source: OrderSource, customers: Select) -> int:
    """Recompute an already computed day for a few customers (``customers``: a SELECT of ids)
    from all their orders, leaving everyone else's figures and every other day as they were:
    what the quality gate's fixes call for on the days that left an order out. Returns the
    number of customers whose figures moved."""
    d = _as_date(as_of)

    def run(conn: Connection) -> int:
        versions, _, runs = ltv_storage(conn)
        o = source.orders
        ids = _temporary(conn, "ltv_tmp_refix", customers, [Column("customer_id", o.c.customer_id.type)])
        staged = _temporary(conn, "ltv_tmp_day", _as_versions(historic_ltv_select(
            d, source, only_customers=select(ids.c.customer_id)), d),
            [Column("customer_id", o.c.customer_id.type), Column("gone", Integer()),
             *[versions.c[name]._copy() for name in VERSION_COLUMNS]], index_customer_id=True)
        conn.execute(staged.insert().from_select(["customer_id", "gone"], select(
            versions.c.customer_id, literal_column("1")).where(
            _valid_on(versions, d), versions.c.customer_id.in_(select(ids.c.customer_id)),
            ~_staged_has(staged, versions.c.customer_id))))
        written = _write_day(conn, versions, runs, staged, d)
        staged.drop(conn)
        ids.drop(conn)
        return written

    return _in_transaction(bind, run)


def _jit_off(conn: Connection) -> str | None:
    """PostgreSQL: no JIT compilation until ``_set_local(conn, "jit", <the value returned>)``
    (or the transaction's end). The incremental run's statements read few rows, but the
    planner's guesses of how many put them over ``jit_above_cost``: compiling them took longer
    than running them (10M orders: 0.5 s of the recompute's 1.7 s). None elsewhere."""
    if conn.dialect.name != "postgresql":
        return None
    was = conn.execute(text("SELECT current_setting('jit')")).scalar_one()
    _set_local(conn, "jit", "off")
    return was


def _set_local(conn: Connection, name: str, value: str) -> None:
    conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})


# Up to this many customers with an order changed since the cutoff, PostgreSQL reads their
# orders from the covering index (``_orders_as_of_from_index``); more, and the table scan it
# would do anyway is cheaper than setting millions of index rows against each other.
FROM_INDEX_MAX_CUSTOMERS = 10_000


def _from_index(conn: Connection, n_changed: int) -> bool:
    """Whether the ``n_changed`` customers changed since the cutoff are read from the index."""
    return conn.dialect.name == "postgresql" and 0 < n_changed <= FROM_INDEX_MAX_CUSTOMERS


def _changed_customers_table(conn: Connection, source: OrderSource, d: date):
    """The customers with an order changed since ``d``'s cutoff, in a temporary table, and how
    many: (None, 0) without a status history. Counted, not guessed: PostgreSQL's planner took
    an hour of 1,000 later changes for ~16k customers and scanned every order twice (10M
    orders: 4.4 -> 3.0 s), and found them again for each query that reads them (a full day
    after 228k changes: 3 s each time). Found from the changes alone, not restricted to the
    customers a daily run recomputes: that made SQLite walk their orders (9 s, not 0.05)."""
    changed = _changed_since_cutoff(source, d)
    if changed is None:
        return None, 0
    table = _temporary(conn, "ltv_tmp_changed_since", changed, [Column("customer_id", source.orders.c.customer_id.type)])
    return table, conn.execute(select(func.count()).select_from(table)).scalar_one()


def _as_versions(rows: Select, d: date, *, valid_to: date | None = None) -> Select:
    """``rows`` (customer_id and the HISTORIC_COLUMNS as of ``d``) as version columns: the
    day numbers tenure and T count from in place of those two. With ``valid_to``: the columns
    of a version valid from ``d`` (customer_id, valid_from, valid_to, VERSION_COLUMNS), to
    insert straight from the query; else a staged day's (customer_id, gone, VERSION_COLUMNS)."""
    q = rows.subquery("ltv_day_rows")
    day = literal(_day_number(d), Integer())
    derived = {"first_order_day": day - q.c.tenure_days, "first_valid_day": day - q.c.rfm_t_days}
    head = ([literal(d, Date()).label("valid_from"), literal(valid_to, Date()).label("valid_to")]
            if valid_to is not None else [literal_column("0").label("gone")])
    return select(q.c.customer_id, *head,
                  *[(derived[name] if name in derived else q.c[name]).label(name) for name in VERSION_COLUMNS])


def _valid_on(versions, d: date):
    return (versions.c.valid_from <= literal(d, Date())) & (versions.c.valid_to > literal(d, Date()))


def _staged_has(staged, customer_id):
    """EXISTS, not IN: PostgreSQL answers NOT IN over millions of staged rows (more than fit
    work_mem to hash) row by row, and it cannot know the column holds no NULL."""
    return exists().where(staged.c.customer_id == customer_id)


def _stage_carried(conn: Connection, staged, versions, d: date) -> None:
    """Stage the day before's figures (or none: gone) for the customers with a version starting
    on ``d`` that ``staged`` does not hold: an incremental day keeps everyone else as they were."""
    cur, prev = versions.alias("ltv_v_cur"), versions.alias("ltv_v_prev")
    previous = d - timedelta(days=1)
    rows = select(
        cur.c.customer_id, case((prev.c.customer_id.is_(None), literal_column("1")), else_=literal_column("0")),
        *[prev.c[name] for name in VERSION_COLUMNS],
    ).select_from(cur.outerjoin(prev, (prev.c.customer_id == cur.c.customer_id) & _valid_on(prev, previous))).where(
        cur.c.valid_from == literal(d, Date()), ~_staged_has(staged, cur.c.customer_id))
    conn.execute(staged.insert().from_select(["customer_id", "gone", *VERSION_COLUMNS], rows))


def _stage_gone(conn: Connection, staged, versions, d: date) -> None:
    """A full day: customers with figures on ``d`` that the query no longer finds have none."""
    rows = select(versions.c.customer_id, literal_column("1")).where(
        _valid_on(versions, d), ~_staged_has(staged, versions.c.customer_id))
    conn.execute(staged.insert().from_select(["customer_id", "gone"], rows))


def _write_day(conn: Connection, versions, runs, staged, d: date) -> int:
    """Make ``staged`` the figures of its customers on ``d``; every other day stays as it was.
    Returns the number of customers whose figures moved."""
    nxt = d + timedelta(days=1)
    later = conn.execute(select(exists().where(runs.c.as_of > literal(d, Date())))).scalar_one()
    cur, after = versions.alias("ltv_v_cur"), versions.alias("ltv_v_after")
    same = case(
        (cur.c.customer_id.is_(None), staged.c.gone == 1),
        else_=and_(staged.c.gone == 0, *[staged.c[name].is_not_distinct_from(cur.c[name]) for name in VERSION_COLUMNS]),
    )
    next_start = (select(func.min(after.c.valid_from))
                  .where(after.c.customer_id == staged.c.customer_id, after.c.valid_from > literal(d, Date()))
                  .scalar_subquery())
    changed = _temporary(conn, "ltv_tmp_changed", select(
        staged, cur.c.valid_from.label("cur_from"), cur.c.valid_to.label("cur_to"),
        case((cur.c.customer_id.is_(None), next_start)).label("next_start"),
    ).select_from(staged.outerjoin(cur, (cur.c.customer_id == staged.c.customer_id) & _valid_on(cur, d)))
        .where(~same),
        [*[c._copy() for c in staged.c], Column("cur_from", Date()), Column("cur_to", Date()),
         Column("next_start", Date())])
    n = conn.execute(select(func.count()).select_from(changed)).scalar_one()
    if n:
        v = versions
        if later:  # days after d were computed: the figures they were shown resume the next day
            conn.execute(v.insert().from_select(
                ["customer_id", "valid_from", "valid_to", *VERSION_COLUMNS],
                select(v.c.customer_id, literal(nxt, Date()), v.c.valid_to, *[v.c[name] for name in VERSION_COLUMNS])
                .select_from(v.join(changed, (changed.c.customer_id == v.c.customer_id)
                                    & (changed.c.cur_from == v.c.valid_from)))
                .where(changed.c.cur_to > literal(nxt, Date()))))
        replaced = select(changed.c.customer_id).where(changed.c.cur_from == literal(d, Date()))
        conn.execute(v.delete().where(v.c.valid_from == literal(d, Date()), v.c.customer_id.in_(replaced)))
        closed = select(changed.c.customer_id).where(changed.c.cur_from < literal(d, Date()))
        conn.execute(v.update().where(v.c.customer_id.in_(closed), v.c.valid_from < literal(d, Date()),
                                      v.c.valid_to > literal(d, Date())).values(valid_to=literal(d, Date())))
        valid_to = (literal(nxt, Date()) if later
                    else func.coalesce(changed.c.cur_to, changed.c.next_start, literal(OPEN_END, Date())))
        conn.execute(v.insert().from_select(
            ["customer_id", "valid_from", "valid_to", *VERSION_COLUMNS],
            select(changed.c.customer_id, literal(d, Date()), valid_to, *[changed.c[name] for name in VERSION_COLUMNS])
            .where(changed.c.gone == 0)))
        # A version equal to the one that ends on d (a rerun giving back the day before's
        # figures) continues that one instead of starting anew.
        ending = v.alias("ltv_v_ending")
        continued = _temporary(conn, "ltv_tmp_continued", select(changed.c.customer_id).select_from(
            changed.join(ending, (ending.c.customer_id == changed.c.customer_id)
                         & (ending.c.valid_to == literal(d, Date()))))
            .where(changed.c.gone == 0,
                   *[changed.c[name].is_not_distinct_from(ending.c[name]) for name in VERSION_COLUMNS]),
            [Column("customer_id", changed.c.customer_id.type)])
        started = v.alias("ltv_v_started")
        conn.execute(v.update().where(v.c.valid_to == literal(d, Date()),
                                      v.c.customer_id.in_(select(continued.c.customer_id)))
                     .values(valid_to=select(started.c.valid_to).where(
                         started.c.customer_id == v.c.customer_id,
                         started.c.valid_from == literal(d, Date())).scalar_subquery()))
        conn.execute(v.delete().where(v.c.valid_from == literal(d, Date()),
                                      v.c.customer_id.in_(select(continued.c.customer_id))))
        continued.drop(conn)
    changed.drop(conn)
    return n


def _temporary(conn: Connection, name: str, rows: Select, columns: list, *, index_customer_id: bool = False) -> Table:
    """A temporary table of ``rows`` (gone at the end of the session; dropped after use).
    ``index_customer_id``: for a table probed per customer (NOT EXISTS): SQLite builds no
    automatic index for a correlated subquery, and a full day probes ~2M staged rows 2M times."""
    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    table = Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])
    table.create(conn)
    conn.execute(table.insert().from_select([c.name for c in columns], rows))
    if index_customer_id:  # after the bulk insert: cheaper than keeping it up row by row
        conn.execute(text(f"CREATE INDEX ix_{name}_customer_id ON {name} (customer_id)"))
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {name}"))  # the planner sees a few rows, not its default guess
    return table


def _definition(source: OrderSource) -> str:
    """A fingerprint of what the numbers mean: rows of another definition are never carried."""
    if source.fingerprint is not None:
        return source.fingerprint
    parts = (str(source.orders), str(source.status_history), source.excluded_statuses,
             source.reversed_statuses, source.initial_status)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _incremental_since(conn: Connection, runs, d: date, definition: str, late_margin: timedelta):
    """When the day before ``d`` was computed under ``definition``: the instant from which an
    order's update can have changed a customer since (else None: compute in full)."""
    previous = conn.execute(
        select(runs.c.computed_at).where(runs.c.as_of == d - timedelta(days=1), runs.c.definition == definition)
    ).scalar_one_or_none()
    if previous is None:
        return None
    return min(as_of_cutoff(d - timedelta(days=1)), previous - late_margin)


def _status_class(status, source: OrderSource):
    """0 excluded (failed), 1 reversed (cancelled, refunded), 2 valid: what LTV counts an order as.
    A simple CASE, which evaluates ``status`` once: PostgreSQL inlines a status lookup into each
    arm of a searched CASE (two lookups an order where one does)."""
    if source.valid_statuses is not None:  # unknown statuses are excluded
        classes = {s: 1 for s in source.reversed_statuses} | {s: 2 for s in source.valid_statuses}
        return case({s: literal_column(str(c)) for s, c in classes.items()}, value=status, else_=literal_column("0"))
    classes = {s: 1 for s in source.reversed_statuses} | {s: 0 for s in source.excluded_statuses}
    if not classes:
        return literal_column("2")
    return case({s: literal_column(str(c)) for s, c in classes.items()}, value=status, else_=literal_column("2"))


def _customers_to_recompute(conn: Connection, source: OrderSource, d: date, since: datetime,
                            also: Select | None = None) -> Table:
    """A temporary table of the customers whose older orders (created before ``d``) may have
    moved since the day before: updated since ``since``, or with a status change dated in ``d``,
    except the orders whose change is explained by the history (a change dated after the day
    before) and keeps their class as of ``d`` what it was the day before. ``also``: a SELECT of
    more customer ids to recompute.

    On DuckDB set-based (``storesync.ltv.statuses``): the moved orders are found once, their
    history rows read once, and each one's status the day before and on ``d`` ranked from those
    rows; per order lookups cost DuckDB a join of the whole history each (1M orders: 4.4 s, now
    0.1 s). SQLite and PostgreSQL look each order up through the history's order_id index
    (``_customers_to_recompute_by_lookup``): set-based, PostgreSQL's planner chose to scan the
    orders and the whole history for the ~20k moved orders of a 1M-order store (3 s, not 0.7)."""
    o = source.orders
    start, end = as_of_cutoff(d - timedelta(days=1)), as_of_cutoff(d)
    h = source.status_history
    columns = [Column("customer_id", o.c.customer_id.type)]
    if h is None or not _set_based(conn):
        rows = _customers_to_recompute_by_lookup(source, d, since,
                                                 keep_subquery=conn.dialect.name == "sqlite")
        return _temporary(conn, "ltv_tmp_recompute", rows if also is None else rows.union(also), columns)
    updated = source.orders.alias("ltv_updated_order")
    candidates = select(updated.c.order_id).where(
        updated.c.updated_at >= literal(since, updated.c.updated_at.type))
    older = [o.c.created_at < literal(start, o.c.created_at.type), o.c.customer_id.is_not(None)]
    dated_in_day = h.alias("ltv_day_change")
    # Two index ranges (updated_at, changed_at) give the candidate orders: an OR of the two
    # conditions would scan every order.
    candidates = candidates.union(select(dated_in_day.c.order_id).where(
        dated_in_day.c.changed_at >= literal(start, dated_in_day.c.changed_at.type),
        dated_in_day.c.changed_at < literal(end, dated_in_day.c.changed_at.type)))
    initial = literal(source.initial_status, String())
    moved = _temporary(conn, "ltv_tmp_moved", select(
        o.c.order_id, o.c.customer_id, func.coalesce(o.c.status, initial).label("status"))
        .where(o.c.order_id.in_(candidates), *older),
        [Column("order_id", o.c.order_id.type), Column("customer_id", o.c.customer_id.type),
         Column("status", String())])
    history = _history_table(conn, "ltv_tmp_moved_history", h, select(moved.c.order_id))
    before = statuses.latest_status(history, start, "ltv_status_before")
    after = statuses.latest_status(history, end, "ltv_status_after")
    last = statuses.last_change(history, "ltv_last_change")
    # The status the day's full query gives the order: its history's as of the day's end when it
    # changed after it, else orders.status (which may disagree with the history: a status no
    # history row has). Read from the history alone, such an order kept the day before's class
    # here while the full query moved it.
    changed_after_day = last.c.last_at >= literal(end, last.c.last_at.type)
    status_after = case((changed_after_day, func.coalesce(after.c.status, initial)), else_=moved.c.status)
    same_class = (_status_class(func.coalesce(before.c.status, initial), source)
                  == _status_class(status_after, source))
    explained = and_(last.c.last_at.is_not(None), last.c.last_at >= literal(start, last.c.last_at.type),
                     same_class)
    rows = (select(moved.c.customer_id)
            .select_from(moved.outerjoin(before, before.c.order_id == moved.c.order_id)
                         .outerjoin(after, after.c.order_id == moved.c.order_id)
                         .outerjoin(last, last.c.order_id == moved.c.order_id))
            .where(~explained).distinct())
    table = _temporary(conn, "ltv_tmp_recompute", rows if also is None else rows.union(also), columns)
    history.drop(conn)
    moved.drop(conn)
    return table


def _customers_to_recompute_by_lookup(source: OrderSource, d: date, since: datetime, *,
                                      keep_subquery: bool = False) -> Select:
    """Customers whose older orders (created before ``d``) may have moved since the day before:
    updated since ``since``, or with a status change dated in ``d``, except the orders whose
    change is explained by the history (a change dated after the day before) and keeps their
    class as of ``d`` what it was the day before. Each moved order's statuses looked up in the
    history, per order (SQLite and PostgreSQL: through its order_id index)."""
    o = source.orders.alias("ltv_older_order")
    start, end = as_of_cutoff(d - timedelta(days=1)), as_of_cutoff(d)
    h = source.status_history
    updated = source.orders.alias("ltv_updated_order")
    candidates = select(updated.c.order_id).where(updated.c.updated_at >= literal(since, updated.c.updated_at.type))
    older = [o.c.created_at < literal(start, o.c.created_at.type), o.c.customer_id.is_not(None)]
    if h is None:
        return select(o.c.customer_id).where(o.c.order_id.in_(candidates), *older).distinct()
    dated_in_day = h.alias("ltv_day_change")
    # Two index ranges (updated_at, changed_at) give the candidate orders: an OR of the two
    # conditions would scan every order.
    candidates = candidates.union(select(dated_in_day.c.order_id).where(
        dated_in_day.c.changed_at >= literal(start, dated_in_day.c.changed_at.type),
        dated_in_day.c.changed_at < literal(end, dated_in_day.c.changed_at.type)))
    later = h.alias("ltv_later_change")
    has_later_change = (
        select(later.c.order_id)
        .where(later.c.order_id == o.c.order_id, later.c.changed_at >= literal(start, later.c.changed_at.type))
        .exists()
    )

    def status_at(cutoff: datetime, alias: str):
        latest = _latest_status_before(h.alias(alias), o.c.order_id, cutoff)
        return func.coalesce(latest, literal(source.initial_status, String()))

    # The status the day's full query gives the order: its history's as of the day's end when it
    # changed after it, else orders.status (which may disagree with the history: a status no
    # history row has). Read from the history alone, such an order kept the day before's class
    # here while the full query moved it.
    after_day = h.alias("ltv_change_after_day")
    changed_after_day = (select(after_day.c.order_id)
                         .where(after_day.c.order_id == o.c.order_id,
                                after_day.c.changed_at >= literal(end, after_day.c.changed_at.type))
                         .exists())
    status_after = case((changed_after_day, status_at(end, "ltv_status_after")),
                        else_=func.coalesce(o.c.status, literal(source.initial_status, String())))
    moved = (
        select(o.c.customer_id, has_later_change.label("has_later_change"),
               status_at(start, "ltv_status_before").label("status_before"),
               status_after.label("status_after"))
        .where(o.c.order_id.in_(candidates), *older)
    )
    if keep_subquery:
        # SQLite flattens the subquery and repeats each status lookup in every CASE arm (4 a
        # row, not 2); it keeps a LIMITed subquery under a DISTINCT whole. On PostgreSQL the
        # same fence tripled the time (10M orders: 9.7 s, against 3.6 s flattened).
        moved = moved.offset(0)
    moved = moved.subquery("ltv_moved_order")
    same_class = _status_class(moved.c.status_before, source) == _status_class(moved.c.status_after, source)
    return select(moved.c.customer_id).where(~((moved.c.has_later_change == literal(True)) & same_class)).distinct()


# Dialects on which the daily job finds as-of statuses set-based (``storesync.ltv.statuses``)
# rather than by a lookup per order: those without an index to look an order's history up by.
SET_BASED_DIALECTS = frozenset({"duckdb"})


def _set_based(conn: Connection) -> bool:
    return conn.dialect.name in SET_BASED_DIALECTS


def _history_table(conn: Connection, name: str, h, order_ids: Select) -> Table:
    """The status changes of ``order_ids`` (``statuses.history_rows``), in a temporary table."""
    return _temporary(conn, name, statuses.history_rows(h, order_ids), [
        Column("order_id", h.c.order_id.type), Column("status", String()),
        Column("changed_at", h.c.changed_at.type), Column("tiebreak", statuses.tiebreak(h).type)])


def _statuses_table(conn: Connection, source: OrderSource, d: date) -> Table | None:
    """The orders with a status change at or after ``d``'s cutoff, each with its status as of
    the cutoff (order_id, status), in a temporary table, on DuckDB (``SET_BASED_DIALECTS``);
    None without a status history or elsewhere. The day's statements join to it
    (``_orders_as_of``) instead of looking each one up."""
    h = source.status_history
    if h is None or not _set_based(conn):
        return None
    cutoff = as_of_cutoff(d)
    ids = _temporary(conn, "ltv_tmp_changed_orders", statuses.changed_since(h, cutoff),
                     [Column("order_id", h.c.order_id.type)])
    history = _history_table(conn, "ltv_tmp_changed_history", h, select(ids.c.order_id))
    table = _temporary(conn, "ltv_tmp_status_as_of",
                       statuses.statuses_as_of(ids, history, cutoff, source.initial_status),
                       [Column("order_id", h.c.order_id.type, primary_key=True, autoincrement=False),
                        Column("status", String())])
    history.drop(conn)
    ids.drop(conn)
    return table


def _new_orders_as_of(source: OrderSource, d: date, since: datetime, statuses=None):
    """The orders created in ``d`` with their status as of its end (found through updated_at:
    an order created in ``d`` was updated since then). ``statuses``: see ``_orders_as_of``."""
    o = source.orders
    start = as_of_cutoff(d - timedelta(days=1))
    return _orders_as_of(source, as_of_cutoff(d), where=(
        o.c.updated_at >= literal(min(since, start), o.c.updated_at.type),
        o.c.created_at >= literal(start, o.c.created_at.type)), statuses=statuses)


def _day_buyers(new_orders, source: OrderSource) -> Select:
    """Per customer, the takings of the orders created in the day (see ``_new_orders_as_of``)."""
    is_gross, is_valid = _class_tests(new_orders.c.status_class)
    zero, one = literal_column("0"), literal_column("1")
    return (
        select(
            new_orders.c.customer_id,
            func.sum(case((is_gross, new_orders.c.total), else_=zero)).label("gross_sum"),
            func.sum(case((is_valid, one), else_=zero)).label("net_count"),
            func.sum(case((is_valid, new_orders.c.total), else_=zero)).label("net_sum"),
            func.min(case((is_gross, new_orders.c.created_at))).label("first_at"),
            func.max(case((is_gross, new_orders.c.created_at))).label("last_at"),
        )
        .group_by(new_orders.c.customer_id)
    )


def _merged_with_new_orders(versions, previous: date, d: date, n, recompute) -> Select:
    """The day before's figures (its versions, if any) plus the customer's orders created in
    ``d`` (``n``, from ``_day_buyers``): sums and counts add up, the day is one more valid
    purchase day when any of them is valid, and the monetary value takes that day's takings as
    one more repeat day. Read from the versions, not the view: SQLite materialises a joined
    view on the right of a LEFT JOIN whole (every day of it)."""
    zero, one = literal_column("0"), literal_column("1")
    one_point_zero = literal_column("1.0")
    p = versions.alias("ltv_previous")
    as_of_day = literal(_day_number(d), Integer())
    bought = n.c.net_count > 0
    had = p.c.rfm_frequency.is_not(None)
    net_count = func.coalesce(p.c.order_count, zero) + n.c.net_count
    net_sum = func.coalesce(p.c.net_revenue, zero) + n.c.net_sum
    t_days = as_of_day - p.c.first_valid_day  # the day before's T, one day longer
    return select(
        n.c.customer_id.label("customer_id"),
        literal(d, Date()).label("as_of"),
        net_count.label("order_count"),
        func.round(func.coalesce(p.c.gross_revenue, zero) + n.c.gross_sum, 2).label("gross_revenue"),
        func.round(net_sum, 2).label("net_revenue"),
        _mean_in_cents(net_sum, net_count).label("avg_order_value"),
        func.coalesce(p.c.first_order_at, n.c.first_at).label("first_order_at"),
        func.coalesce(n.c.last_at, p.c.last_order_at).label("last_order_at"),
        case((p.c.first_order_at.is_not(None), as_of_day - p.c.first_order_day),
             (n.c.first_at.is_not(None), as_of_day - epoch_day(n.c.first_at))).label("tenure_days"),
        case((bought & had, p.c.rfm_frequency + one), (bought, zero),
             else_=p.c.rfm_frequency).label("rfm_frequency"),
        case((bought & had, t_days), (bought, zero),
             else_=p.c.rfm_recency_days).label("rfm_recency_days"),
        case((had, t_days), (bought, zero)).label("rfm_t_days"),
        # The day before's repeat takings, back to whole cents, plus the day's: the same division
        # of the same two numbers as the full query's, so the same bits (the models see equal
        # histograms whichever way a day was computed).
        cast(case((bought & had, _mean_of_cents(func.round(p.c.rfm_monetary * p.c.rfm_frequency * 100)
                                                + func.round(n.c.net_sum * 100), p.c.rfm_frequency + one)),
                  (bought, zero), else_=p.c.rfm_monetary), Double()).label("rfm_monetary"),
    ).select_from(
        n.outerjoin(p, (p.c.customer_id == n.c.customer_id) & _valid_on(p, previous))
    ).where(n.c.customer_id.not_in(recompute))


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
    def run(conn: Connection):
        q = historic_ltv_select(as_of, source, indexed=ltv_index_available(conn, source)).subquery("ltv")
        stmt = (
            select(q.c.customer_id, q.c.rfm_frequency, q.c.rfm_recency_days, q.c.rfm_t_days, q.c.rfm_monetary)
            .where(q.c.rfm_frequency.is_not(None))
            .order_by(q.c.customer_id)
        )
        if customer_ids is not None:
            stmt = stmt.where(q.c.customer_id.in_(list(customer_ids)))
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

