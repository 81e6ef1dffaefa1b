"""The two tables LTV writes: ``storesync_customer_ltv`` and ``storesync_ltv_models``.

``storesync_customer_ltv`` holds one row per (as_of, customer_id): the historic numbers, the
customer's RFM summary in whole days (what the models are fitted on) and the predictions.
``storesync_ltv_models`` holds one row per as_of: the fitted parameters (JSON) and the settings
the predictions were made with. Both are created when missing; ``customer_id`` takes the type
of the source's ``customer_id`` column (an existing table keeps the type it was created with).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    String,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    inspect,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import NullType, TypeEngine

from storesync.core.errors import ConfigurationError

LTV_TABLE = "storesync_customer_ltv"
MODELS_TABLE = "storesync_ltv_models"
RUNS_TABLE = "storesync_ltv_runs"

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


def build_ltv_table(metadata: MetaData, customer_id_type: TypeEngine | None = None) -> Table:
    cid_type = customer_id_type if customer_id_type is not None else BigInteger()
    return Table(
        LTV_TABLE,
        metadata,
        Column("customer_id", cid_type, nullable=False, autoincrement=False),
        Column("as_of", Date, nullable=False),
        # historic, as of the end of as_of (see storesync.ltv for the definitions)
        Column("order_count", Integer),
        Column("gross_revenue", LTV_MONEY),
        Column("net_revenue", LTV_MONEY),
        Column("avg_order_value", LTV_MONEY),
        Column("first_order_at", DateTime),
        Column("last_order_at", DateTime),
        Column("tenure_days", Integer),
        # RFM summary over valid purchase days, in days (NULL: no valid purchase yet)
        Column("rfm_frequency", Integer),
        Column("rfm_recency_days", Integer),
        Column("rfm_t_days", Integer),
        Column("rfm_monetary", Float),
        # predicted over horizon_days (NULL until predict_ltv ran for as_of)
        Column("expected_purchases", Float),
        Column("p_alive", Float),
        Column("expected_aov", LTV_MONEY),
        Column("predicted_clv", LTV_MONEY),
        Column("horizon_days", Integer),
        PrimaryKeyConstraint("as_of", "customer_id", name="pk_storesync_customer_ltv"),
    )


def build_models_table(metadata: MetaData) -> Table:
    return Table(
        MODELS_TABLE,
        metadata,
        Column("as_of", Date, primary_key=True),
        Column("fitted_at", DateTime, nullable=False),
        Column("n_customers", Integer, nullable=False),
        Column("n_repeat_customers", Integer, nullable=False),
        Column("time_unit_days", Float, nullable=False),
        Column("horizon_days", Integer, nullable=False),
        Column("discount_rate", Float, nullable=False),
        Column("discount_period_days", Float, nullable=False),
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
        Column("rows_written", Integer, nullable=False),
        Column("customers_recomputed", Integer, nullable=False),
        Column("from_as_of", Date),  # incremental: the day it started from
    )


def ensure_runs_table(conn: Connection) -> Table:
    runs = build_runs_table(MetaData())
    runs.create(conn, checkfirst=True)
    return runs


def _usable_id_type(type_: TypeEngine | None) -> TypeEngine | None:
    if type_ is None or isinstance(type_, NullType):
        return None
    return type_


def ensure_ltv_tables(conn: Connection, customer_id_type: TypeEngine | None = None) -> tuple[Table, Table]:
    """Create both tables when missing; return (ltv, models) bound to the existing definitions."""
    existing = _reflected_customer_id_type(conn)
    metadata = MetaData()
    ltv = build_ltv_table(metadata, existing or _usable_id_type(customer_id_type))
    models = build_models_table(metadata)
    metadata.create_all(conn, checkfirst=True)
    return ltv, models


def ltv_tables(conn: Connection) -> tuple[Table, Table]:
    """The existing tables (raises ConfigurationError when the LTV table was never created)."""
    existing = _reflected_customer_id_type(conn)
    if existing is None:
        raise ConfigurationError(f"table {LTV_TABLE} does not exist: run compute_historic_ltv first")
    metadata = MetaData()
    ltv = build_ltv_table(metadata, existing)
    models = build_models_table(metadata)
    if not inspect(conn).has_table(MODELS_TABLE):
        models.create(conn, checkfirst=True)
    return ltv, models


def _reflected_customer_id_type(conn: Connection) -> TypeEngine | None:
    insp = inspect(conn)
    if not insp.has_table(LTV_TABLE):
        return None
    for column in insp.get_columns(LTV_TABLE):
        if column["name"] == "customer_id":
            return column["type"]
    raise ConfigurationError(f"table {LTV_TABLE} exists but has no customer_id column")
