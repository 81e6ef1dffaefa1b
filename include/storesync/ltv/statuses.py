"""As-of statuses for a small set of orders, set-based: what the daily job looks up.

The daily job needs an order's status as of a day's end for two small sets of orders: those with a
status change after the cutoff (their status then is their latest change before it), and the
older orders that moved since the day before (their class then and now). Asked per order, as a
correlated ``ORDER BY changed_at DESC LIMIT 1`` subquery, SQLite and PostgreSQL answer from the
history's ``order_id`` index, but DuckDB, which has no such index to walk, joins and sorts the
whole history for it (1M orders: 2-4 s a statement). Here the set's history rows are read once
(``order_id IN`` the set: an index range each on SQLite and PostgreSQL, one hashed scan on
DuckDB) and ranked with ``row_number()``: the same status on all three, from a few thousand rows.

Every builder returns a SELECT; the caller keeps the results in temporary tables
(``storesync.ltv.historic``), which the day's statements join to instead of looking up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, func, literal, select
from sqlalchemy.sql import FromClause, Select

__all__ = ["changed_since", "history_rows", "last_change", "latest_status", "statuses_as_of", "tiebreak"]


def tiebreak(history):
    """Of changes at the same instant, the later history row counts (history_id), else the
    greater status: as ``historic._latest_status_before`` orders them."""
    return history.c.history_id if "history_id" in history.c else history.c.status


def changed_since(history: FromClause, cutoff: datetime) -> Select:
    """The ids of the orders with a status change at or after ``cutoff`` (once a change: a
    DISTINCT here made SQLite walk the whole order_id index rather than the changed_at range)."""
    return select(history.c.order_id).where(
        history.c.changed_at >= literal(cutoff, history.c.changed_at.type))


def history_rows(history: FromClause, order_ids) -> Select:
    """The status changes of the orders ``order_ids`` (a SELECT of ids): order_id, status,
    changed_at and the tie-break, as ``tiebreak``."""
    return select(history.c.order_id, history.c.status, history.c.changed_at,
                  tiebreak(history).label("tiebreak")).where(history.c.order_id.in_(order_ids))


def latest_status(rows: FromClause, cutoff: datetime, name: str):
    """Per order of ``rows`` (``history_rows``' columns), the status after its last change
    before ``cutoff``: one row an order that has one (none for an order whose history starts
    later)."""
    ranked = select(
        rows.c.order_id, rows.c.status,
        func.row_number().over(partition_by=rows.c.order_id,
                               order_by=(rows.c.changed_at.desc(), rows.c.tiebreak.desc())).label("rank"),
    ).where(rows.c.changed_at < literal(cutoff, rows.c.changed_at.type)).subquery(f"{name}_ranked")
    return select(ranked.c.order_id, ranked.c.status).where(ranked.c.rank == 1).subquery(name)


def last_change(rows: FromClause, name: str):
    """Per order of ``rows``, the instant of its last status change (``last_at``)."""
    return select(rows.c.order_id, func.max(rows.c.changed_at).label("last_at")).group_by(
        rows.c.order_id).subquery(name)


def statuses_as_of(orders: FromClause, rows: FromClause, cutoff: datetime, initial_status: str) -> Select:
    """``orders`` (a table of order ids, an id maybe more than once) with each one's status as
    of ``cutoff``, once an order: its latest change before it, or ``initial_status`` when its
    history starts later."""
    orders = select(orders.c.order_id).distinct().subquery("ltv_changed_order_ids")
    latest = latest_status(rows, cutoff, "ltv_status_before_cutoff")
    status = func.coalesce(latest.c.status, literal(initial_status, String()))
    return select(orders.c.order_id, status.label("status")).select_from(
        orders.outerjoin(latest, latest.c.order_id == orders.c.order_id))
