"""What LTV writes, and the view it is read through.

``storesync_customer_ltv`` (a VIEW) shows one row per (as_of, customer_id) for every computed
day: the historic numbers, the customer's RFM summary in whole days (what the models are fitted
on) and the predictions. Behind it:

* ``storesync_customer_ltv_versions``: a customer's historic figures from ``valid_from`` to the
  day before ``valid_to`` (``OPEN_END`` while current). A day writes versions only for the
  customers whose figures moved: most customers' figures do not change from one day to the
  next (tenure and T, which grow by a day, are derived in the view from the first order's and
  first valid purchase's day numbers), so a daily run writes thousands of rows, not one per
  customer.
* ``storesync_ltv_runs``: one row per computed day; the view shows those days only.
* ``storesync_ltv_predictions``: one row per (as_of, customer_id) predicted.
* ``storesync_ltv_models``: one row per as_of: the fitted parameters (JSON) and the settings
  the predictions were made with.

All are created when missing; ``customer_id`` takes the type of the source's ``customer_id``
column (an existing table keeps the type it was created with). A ``storesync_customer_ltv``
TABLE left by an earlier release (one row per customer and day) is renamed
``storesync_customer_ltv_daily_legacy`` (with its runs table) and the next run computes in full.
"""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import NullType, TypeEngine

from storesync.core.errors import ConfigurationError

log = logging.getLogger(__name__)

LTV_TABLE = "storesync_customer_ltv"  # the view
VERSIONS_TABLE = "storesync_customer_ltv_versions"
PREDICTIONS_TABLE = "storesync_ltv_predictions"
MODELS_TABLE = "storesync_ltv_models"
RUNS_TABLE = "storesync_ltv_runs"
LEFT_OUT_TABLE = "storesync_ltv_left_out"
LEGACY_SUFFIX = "_daily_legacy"
OPEN_END = date(9999, 12, 31)  # valid_to of a customer's current version

# Sums of NUMERIC(12,2) order totals need more than 12 digits.
LTV_MONEY = Numeric(14, 2, asdecimal=True)

HISTORIC_COLUMNS = (
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
    "rfm_monetary",
)
PREDICTED_COLUMNS = ("expected_purchases", "p_alive", "expected_aov", "predicted_clv", "horizon_days")
# What a version stores: the HISTORIC_COLUMNS less the two that grow by a day (derived in the
# view), plus the day numbers (days since 1970-01-01) they are derived from.
VERSION_COLUMNS = (
    "order_count",
    "gross_revenue",
    "net_revenue",
    "avg_order_value",
    "first_order_at",
    "last_order_at",
    "first_order_day",  # tenure_days = as_of's day number - first_order_day
    "rfm_frequency",
    "rfm_recency_days",
    "first_valid_day",  # rfm_t_days = as_of's day number - first_valid_day
    "rfm_monetary",
)
# Every figure column's type, wherever it is stored or shown. Historic figures as of the end of
# as_of (see storesync.ltv for the definitions); the RFM summary over valid purchase days, in
# days (NULL: no valid purchase yet); predictions over horizon_days (NULL until predict_ltv ran).
COLUMN_TYPES = {
    "order_count": Integer, "gross_revenue": LTV_MONEY, "net_revenue": LTV_MONEY, "avg_order_value": LTV_MONEY,
    "first_order_at": DateTime, "last_order_at": DateTime, "tenure_days": Integer, "first_order_day": Integer,
    "rfm_frequency": Integer, "rfm_recency_days": Integer, "rfm_t_days": Integer, "first_valid_day": Integer,
    "rfm_monetary": Double,
    "expected_purchases": Double, "p_alive": Double, "expected_aov": LTV_MONEY, "predicted_clv": LTV_MONEY,
    "horizon_days": Integer,
}


def _columns(names) -> list[Column]:
    return [Column(name, COLUMN_TYPES[name]) for name in names]


def build_versions_table(metadata: MetaData, customer_id_type: TypeEngine | None = None) -> Table:
    cid_type = customer_id_type if customer_id_type is not None else BigInteger()
    return Table(
        VERSIONS_TABLE,
        metadata,
        Column("customer_id", cid_type, nullable=False, autoincrement=False),
        Column("valid_from", Date, nullable=False),
        Column("valid_to", Date, nullable=False),  # exclusive; OPEN_END while current
        *_columns(VERSION_COLUMNS),
        PrimaryKeyConstraint("customer_id", "valid_from", name="pk_storesync_customer_ltv_versions"),
        Index("ix_storesync_customer_ltv_versions_valid_to", "valid_to", "valid_from"),
    )


def build_predictions_table(metadata: MetaData, customer_id_type: TypeEngine | None = None) -> Table:
    cid_type = customer_id_type if customer_id_type is not None else BigInteger()
    return Table(
        PREDICTIONS_TABLE,
        metadata,
        Column("as_of", Date, nullable=False),
        Column("customer_id", cid_type, nullable=False, autoincrement=False),
        *_columns(PREDICTED_COLUMNS),
        PrimaryKeyConstraint("as_of", "customer_id", name="pk_storesync_ltv_predictions"),
    )


def build_ltv_table(metadata: MetaData, customer_id_type: TypeEngine | None = None) -> Table:
    """The view's columns, as a ``Table`` to select from (never created as a table)."""
    cid_type = customer_id_type if customer_id_type is not None else BigInteger()
    return Table(
        LTV_TABLE,
        metadata,
        Column("customer_id", cid_type, nullable=False, autoincrement=False),
        Column("as_of", Date, nullable=False),
        *_columns(HISTORIC_COLUMNS),
        *_columns(PREDICTED_COLUMNS),
    )


def view_select(versions: Table, predictions: Table, runs: Table):
    """The view's SELECT: each computed day (runs) with the version of each customer valid on it."""
    from storesync.ltv.historic import epoch_day  # historic imports this module

    day = epoch_day(runs.c.as_of)
    names = {"tenure_days": day - versions.c.first_order_day, "rfm_t_days": day - versions.c.first_valid_day}
    columns = [versions.c.customer_id, runs.c.as_of]
    columns += [names[name].label(name) if name in names else versions.c[name] for name in HISTORIC_COLUMNS]
    columns += [predictions.c[name] for name in PREDICTED_COLUMNS]
    return select(*columns).select_from(
        runs.join(versions, (versions.c.valid_from <= runs.c.as_of) & (versions.c.valid_to > runs.c.as_of))
        .outerjoin(predictions, (predictions.c.as_of == runs.c.as_of)
                   & (predictions.c.customer_id == versions.c.customer_id))
    )


def build_models_table(metadata: MetaData) -> Table:
    return Table(
        MODELS_TABLE,
        metadata,
        Column("as_of", Date, primary_key=True),
        Column("fitted_at", DateTime, nullable=False),
        Column("n_customers", Integer, nullable=False),
        Column("n_repeat_customers", Integer, nullable=False),
        Column("time_unit_days", Double, nullable=False),
        Column("horizon_days", Integer, nullable=False),
        Column("discount_rate", Double, nullable=False),
        Column("discount_period_days", Double, nullable=False),
        Column("params", JSON, nullable=False),
    )


def build_runs_table(metadata: MetaData) -> Table:
    """One row per as_of whose historic rows were written: when, how, and under which definition.
    The next day's run starts from these rows only when the definition is the same."""
    return Table(
        RUNS_TABLE,
        metadata,
        Column("as_of", Date, primary_key=True),
        Column("computed_at", DateTime, nullable=False),  # naive UTC, when the run started
        Column("method", String(16), nullable=False),  # full | incremental
        Column("definition", String(64), nullable=False),  # fingerprint of the OrderSource
        Column("rows_written", Integer, nullable=False),  # customers the day has rows for
        Column("versions_written", Integer),  # customers whose figures moved that day
        Column("customers_recomputed", Integer, nullable=False),
        Column("from_as_of", Date),  # incremental: the day it started from
        Column("currency", String(3)),  # what the day's money is in (NULL: not said, before [ltv])
    )


def build_left_out_table(metadata: MetaData) -> Table:
    """The orders each computed day left out (open in the quarantine, or a duplicated order_id),
    with their customer: the next run recomputes the customers whose orders entered or left the
    set, and a fixed order's earlier days. Ids as text (a store's ids may be either)."""
    return Table(
        LEFT_OUT_TABLE,
        metadata,
        Column("as_of", Date, nullable=False),
        Column("order_id", String(250), nullable=False),
        Column("customer_id", String(250)),
        Column("reason", String(32), nullable=False),  # quarantined | duplicate
        PrimaryKeyConstraint("as_of", "order_id", name="pk_storesync_ltv_left_out"),
    )


def ensure_left_out_table(conn: Connection) -> Table:
    table = build_left_out_table(MetaData())
    table.create(conn, checkfirst=True)
    return table


def ensure_runs_table(conn: Connection) -> Table:
    runs = build_runs_table(MetaData())
    runs.create(conn, checkfirst=True)
    return runs


def _usable_id_type(type_: TypeEngine | None) -> TypeEngine | None:
    if type_ is None or isinstance(type_, NullType):
        return None
    return type_


def ensure_ltv_tables(conn: Connection, customer_id_type: TypeEngine | None = None) -> tuple[Table, Table]:
    """Create what is missing (tables and the view); return (ltv view, models) bound to the
    existing definitions."""
    _move_legacy_tables(conn)
    existing = _reflected_customer_id_type(conn)
    cid_type = existing or _usable_id_type(customer_id_type)
    metadata = MetaData()
    versions = build_versions_table(metadata, cid_type)
    predictions = build_predictions_table(metadata, cid_type)
    runs = build_runs_table(metadata)
    models = build_models_table(metadata)
    metadata.create_all(conn, checkfirst=True)
    if "currency" not in _column_types(conn, RUNS_TABLE):  # an earlier release's
        conn.execute(text(f"ALTER TABLE {RUNS_TABLE} ADD COLUMN currency VARCHAR(3)"))
    if LTV_TABLE not in inspect(conn).get_view_names():
        body = view_select(versions, predictions, runs).compile(conn, compile_kwargs={"literal_binds": True})
        conn.execute(text(f"CREATE VIEW {LTV_TABLE} AS {body}"))
    return build_ltv_table(MetaData(), cid_type), models


def ltv_tables(conn: Connection) -> tuple[Table, Table]:
    """The existing view and models table (raises ConfigurationError when LTV was never computed)."""
    existing = _reflected_customer_id_type(conn)
    if existing is None or LTV_TABLE not in inspect(conn).get_view_names():
        raise ConfigurationError(f"view {LTV_TABLE} does not exist: run `storesync ltv` (or the storesync_ltv DAG) first")
    metadata = MetaData()
    ltv = build_ltv_table(metadata, existing)
    models = build_models_table(metadata)
    if not inspect(conn).has_table(MODELS_TABLE):
        models.create(conn, checkfirst=True)
    return ltv, models


def ltv_storage(conn: Connection) -> tuple[Table, Table, Table]:
    """(versions, predictions, runs) as they exist (``ensure_ltv_tables`` first)."""
    cid_type = _reflected_customer_id_type(conn)
    metadata = MetaData()
    return (build_versions_table(metadata, cid_type), build_predictions_table(metadata, cid_type),
            build_runs_table(metadata))


def drop_ltv_tables(conn: Connection) -> None:
    """Drop the view and every LTV table (benchmarks and tests start from nothing)."""
    insp = inspect(conn)
    if LTV_TABLE in insp.get_view_names():
        conn.execute(text(f"DROP VIEW {LTV_TABLE}"))
    if LTV_TABLE in insp.get_table_names():  # an earlier release's table
        conn.execute(text(f"DROP TABLE {LTV_TABLE}"))
    for name in (VERSIONS_TABLE, PREDICTIONS_TABLE, MODELS_TABLE, RUNS_TABLE, LEFT_OUT_TABLE):
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def _move_legacy_tables(conn: Connection) -> None:
    """An earlier release's one-row-per-customer-and-day TABLE (and the runs that point at it)
    is renamed out of the view's way, kept for reading; its days are computed again."""
    insp = inspect(conn)
    if LTV_TABLE not in insp.get_table_names():
        return
    for name in (LTV_TABLE, RUNS_TABLE):
        if name in insp.get_table_names():
            conn.execute(text(f"ALTER TABLE {name} RENAME TO {name}{LEGACY_SUFFIX}"))
    log.warning("LTV: the per-day table %s of an earlier release was renamed %s%s; the next run computes "
                "every customer in full", LTV_TABLE, LTV_TABLE, LEGACY_SUFFIX)


def _reflected_customer_id_type(conn: Connection) -> TypeEngine | None:
    insp = inspect(conn)
    if not insp.has_table(VERSIONS_TABLE):
        return None
    found = _column_types(conn, VERSIONS_TABLE).get("customer_id")
    if found is not None:
        return found
    raise ConfigurationError(f"table {VERSIONS_TABLE} exists but has no customer_id column")


def _column_types(conn: Connection, table: str) -> dict[str, TypeEngine]:
    """A table's columns and their types. DuckDB from information_schema: duckdb-engine's
    reflection queries PostgreSQL catalogs DuckDB lacks (pg_collation)."""
    if conn.dialect.name != "duckdb":
        return {c["name"]: c["type"] for c in inspect(conn).get_columns(table)}
    rows = conn.execute(text("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = :t AND table_schema = current_schema()"), {"t": table}).all()
    return {name: (String() if any(k in kind.upper() for k in ("CHAR", "TEXT", "STRING")) else BigInteger())
            for name, kind in rows}
