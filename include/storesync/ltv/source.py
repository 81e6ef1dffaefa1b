"""What LTV reads, from the user's SQL models and the ``[ltv]`` settings: an ``OrderSource``.

Models (files in ``models_dir``, plain SELECTs with no bind parameters):

* ``ltv_orders.sql`` (``ltv.orders_model``): one row per order: ``order_id``, ``customer_id``,
  ``status`` (its current status), ``currency``, ``total``, ``created_at``, optionally
  ``updated_at`` (needed by the incremental daily job: it must move whenever the order or its
  status does).
* ``ltv_order_status_changes.sql`` (``ltv.status_history_model``, "" without one): one row per
  status change: ``order_id``, ``status``, ``changed_at``, optionally ``history_id`` (the
  tie-break between changes at the same instant).
* ``fx_rates.sql`` (``ltv.fx_rates_model``, "" for a single-currency store): ``currency``,
  ``day``, ``rate`` = units of the reporting currency one unit of ``currency`` bought that day.
  An order is converted at the rate of the latest ``day`` on or before its own day.

Timestamps may be real datetime columns or ISO 8601 text (``2024-03-10T12:00:00``, with ``Z``
or an offset): text is read as a timestamp, on SQLite through ``datetime()`` (UTC), elsewhere by
a cast. What is gated (``OrderSource.orders`` is this, not the raw model): an order counts only
when its currency has a rate for its day (the reporting currency always does), its total is not
negative, and it is not in the run's left-out set (open in the quarantine, or a duplicated
``order_id``). Unknown statuses count nowhere (see ``LtvSettings``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    and_,
    cast,
    column,
    func,
    literal,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from storesync.core.errors import ConfigurationError
from storesync.core.ltv_settings import LtvSettings
from storesync.ltv.historic import OrderSource, epoch_day
from storesync.warehouse.contract import contract_for

__all__ = ["LtvModels", "WarehouseTimestamp", "load_models", "model_source"]

# The models' columns, as the models contract (storesync.warehouse.contract) publishes them.
ORDER_COLUMNS, ORDER_OPTIONAL = (contract_for("ltv_orders").required_columns,
                                 contract_for("ltv_orders").optional_columns)
HISTORY_COLUMNS, HISTORY_OPTIONAL = (contract_for("ltv_order_status_changes").required_columns,
                                     contract_for("ltv_order_status_changes").optional_columns)
FX_COLUMNS = contract_for("fx_rates").required_columns
# A bind parameter as SQLAlchemy's text() finds one: LTV models take none, so every such colon
# (in a string literal '10:30', a comment) is escaped rather than turned into a parameter.
_BIND = re.compile(r"(?<![:\w\\]):(?=\w)")
_FAR_PAST, _FAR_FUTURE = -10**6, 10**7  # day numbers: the reporting currency's rate 1 spans all


class WarehouseTimestamp(TypeDecorator):
    """A model's timestamp column. On SQLite, where timestamps are text, bound instants are
    written ``YYYY-MM-DD HH:MM:SS`` (with ``.ffffff`` only when not whole seconds): that text
    sorts right against SQLAlchemy's own ``... .ffffff`` text and against ``datetime()``'s,
    which is what ISO text columns are read through."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(String() if dialect.name == "sqlite" else DateTime())

    def process_bind_param(self, value, dialect):
        if dialect.name == "sqlite" and isinstance(value, datetime):
            return value.isoformat(sep=" ", timespec="microseconds" if value.microsecond else "seconds")
        return value

    def process_result_value(self, value, dialect):
        if isinstance(value, str):
            return datetime.fromisoformat(value)
        return value


@dataclass(frozen=True)
class LtvModels:
    """The LTV models' SQL as read from ``models_dir`` (history and fx None when not configured)."""

    orders: str
    status_history: str | None
    fx_rates: str | None
    settings: LtvSettings

    def fingerprint(self) -> str:
        """What the figures mean: the models' SQL and the counting settings. A change computes
        the next day in full (a day is never carried forward under another definition)."""
        s = self.settings
        parts = (self.orders, self.status_history, self.fx_rates, s.currency, s.valid_statuses,
                 s.reversed_statuses, s.excluded_statuses, s.initial_status)
        return "m:" + hashlib.sha256(repr(parts).encode()).hexdigest()[:14]


def _read(models_dir: Path, name: str, setting: str) -> str:
    path = Path(models_dir) / f"{name}.sql"
    if not path.is_file():
        hint = {"status_history_model": ' (a store without a status history: status_history_model = "")',
                "fx_rates_model": ' (a single-currency store: fx_rates_model = "" and [ltv] currency = '
                                  'its currency, e.g. "EUR")'}.get(setting, "")
        raise ConfigurationError(f"LTV model {path} not found: write it, or set ltv.{setting} in "
                                 f"storesync.toml{hint}")
    sql = path.read_text().strip().rstrip(";").strip()
    if not sql:
        raise ConfigurationError(f"LTV model {path} is empty")
    return _BIND.sub(r"\\:", sql)


def load_models(models_dir: str | Path, settings: LtvSettings) -> LtvModels:
    """Read the configured LTV models (ConfigurationError naming the file when one is missing)."""
    return LtvModels(
        orders=_read(models_dir, settings.orders_model, "orders_model"),
        status_history=(_read(models_dir, settings.status_history_model, "status_history_model")
                        if settings.status_history_model else None),
        fx_rates=_read(models_dir, settings.fx_rates_model, "fx_rates_model") if settings.fx_rates_model else None,
        settings=settings,
    )


def _probe(conn: Connection, sql: str, name: str, required, optional) -> tuple[list[str], object]:
    """The model's column names and its first row (None when empty); ConfigurationError when it
    fails to run or lacks a required column."""
    try:
        result = conn.execute(text(f"SELECT * FROM ({sql}) AS ltv_probe LIMIT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error: say which model, not the data
        raise ConfigurationError(f"LTV model {name} does not run on the warehouse: "
                                 f"{type(exc).__name__}: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") from None
    names = [str(k).lower() for k in result.keys()]
    row = result.first()
    missing = [c for c in required if c not in names]
    if missing:
        raise ConfigurationError(f"LTV model {name} lacks column(s) {', '.join(missing)} "
                                 f"(it returns {', '.join(names)})")
    return [c for c in (*required, *optional) if c in names], (None if row is None else dict(zip(names, row)))


def _id_type(value):
    return String(250) if isinstance(value, str) else BigInteger()


def _needs_parsing(value, dialect: str) -> bool:
    """Whether a timestamp column's sample is text that does not compare as the binds do."""
    if not isinstance(value, str):
        return False
    if dialect != "sqlite":
        return True
    return "T" in value or value.endswith("Z") or bool(re.search(r"[+-]\d\d:?\d\d$", value))


def _timestamp(expr, sample, dialect: str):
    if _needs_parsing(sample, dialect):
        if dialect == "sqlite":
            expr = func.datetime(expr)  # ISO text with T, Z or an offset -> UTC 'YYYY-MM-DD HH:MM:SS'
        else:  # through timestamptz, so an offset is honoured; text without one is UTC (the session's)
            expr = func.timezone("UTC", cast(expr, DateTime(timezone=True)))
    return type_coerce(expr, WarehouseTimestamp())


def _model(sql: str, columns: Iterable[str], types: dict, name: str):
    return text(sql).columns(*[column(c, types.get(c)) for c in columns]).subquery(name)


def _temporary(conn: Connection, name: str, *columns: Column) -> Table:
    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    table = Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])
    table.create(conn)
    return table


def _as_day(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def fx_ranges(rows, reporting: str) -> list[dict]:
    """The fx model's rows as ranges of day numbers: a rate holds from its day to the next
    rate's day of the same currency (the last one, on). Bad rows are a ConfigurationError."""
    from storesync.ltv.historic import _day_number

    by_currency: dict[str, dict[int, Decimal]] = {}
    for currency, day, rate in rows:
        try:
            code = str(currency).strip().upper()
            number = _day_number(_as_day(day))
            value = Decimal(str(rate))
        except (ValueError, InvalidOperation, TypeError):
            raise ConfigurationError(f"fx rates model: a row is not (currency, day, rate): "
                                     f"({currency!r}, {day!r}, {rate!r})") from None
        if not re.fullmatch(r"[A-Z]{3}", code) or not value.is_finite() or value <= 0:
            raise ConfigurationError(f"fx rates model: rate {rate!r} for {currency!r} on {day!r}: "
                                     "give a 3-letter currency and a positive rate")
        if code != reporting:  # the reporting currency's rate is 1, always
            by_currency.setdefault(code, {})[number] = value
    ranges = [{"currency": reporting, "from_day": _FAR_PAST, "to_day": _FAR_FUTURE, "rate": Decimal(1)}]
    for code, rates in sorted(by_currency.items()):
        days = sorted(rates)
        for i, day in enumerate(days):
            ranges.append({"currency": code, "from_day": day,
                           "to_day": days[i + 1] if i + 1 < len(days) else _FAR_FUTURE, "rate": rates[day]})
    return ranges


@dataclass
class BuiltSource:
    """A model source for one run, on one connection (its temporary tables live there)."""

    source: OrderSource
    left_out: Table  # order_id, customer_id, reason: filled by the caller before the queries run
    model: object  # the raw orders model (a subquery), for the left-out checks
    history: object | None
    fx_currencies: int  # currencies with a rate, the reporting one included
    updated_at: object | None  # the model's updated_at as a timestamp (None: the model has none)
    created_at: object  # the model's created_at as a timestamp
    fx: Table  # currency, from_day, to_day (day numbers, to exclusive), rate


def model_source(conn: Connection, models: LtvModels) -> BuiltSource:
    """Build the gated, converted ``OrderSource`` from the models, on ``conn`` (temporary
    tables ``ltv_tmp_fx`` and ``ltv_tmp_left_out`` are created there: run every LTV query of
    the run on the same connection)."""
    s = models.settings
    dialect = conn.dialect.name
    if dialect == "duckdb":  # what text without an offset means (PostgreSQL's warehouse sessions are UTC)
        conn.execute(text("SET TimeZone = 'UTC'"))
    names, sample = _probe(conn, models.orders, s.orders_model, ORDER_COLUMNS, ORDER_OPTIONAL)
    sample = sample or {}
    order_id_type = _id_type(sample.get("order_id"))
    types = {"order_id": order_id_type, "customer_id": _id_type(sample.get("customer_id")),
             "status": String(), "currency": String(), "total": Numeric(18, 2)}
    model = _model(models.orders, names, types, "ltv_orders_model")

    fx = _temporary(conn, "ltv_tmp_fx", Column("currency", String(3), primary_key=True),
                    Column("from_day", Integer, primary_key=True), Column("to_day", Integer, nullable=False),
                    Column("rate", Numeric(24, 10), nullable=False))
    fx_rows = []
    if models.fx_rates is not None:
        _probe(conn, models.fx_rates, s.fx_rates_model, FX_COLUMNS, ())
        fx_rows = conn.execute(text(f"SELECT currency, day, rate FROM ({models.fx_rates}) AS ltv_fx")).all()
    ranges = fx_ranges(fx_rows, s.currency)
    conn.execute(fx.insert(), ranges)
    left_out = _temporary(conn, "ltv_tmp_left_out", Column("order_id", order_id_type, primary_key=True, autoincrement=False),
                          Column("customer_id", types["customer_id"]), Column("reason", String(32)))

    created = _timestamp(model.c.created_at, sample.get("created_at"), dialect)
    columns = [model.c.order_id.label("order_id"), model.c.customer_id.label("customer_id"),
               model.c.status.label("status"), created.label("created_at")]
    updated = None
    if "updated_at" in names:
        updated = _timestamp(model.c.updated_at, sample.get("updated_at"), dialect)
        columns.append(updated.label("updated_at"))
    conditions = [model.c.total >= 0, model.c.order_id.not_in(select(left_out.c.order_id))]
    if len(ranges) > 1:
        day = epoch_day(created)
        from_ = model.join(fx, and_(fx.c.currency == model.c.currency, day >= fx.c.from_day, day < fx.c.to_day))
        columns.append(type_coerce(func.round(model.c.total * fx.c.rate, 2), Numeric(18, 2)).label("total"))
    else:  # nothing to convert: the reporting currency's orders only
        from_ = model
        conditions.append(model.c.currency == literal(s.currency, String()))
        columns.append(model.c.total.label("total"))
    orders = select(*columns).select_from(from_).where(*conditions).subquery("ltv_orders")

    history = None
    if models.status_history is not None:
        h_names, h_sample = _probe(conn, models.status_history, s.status_history_model,
                                   HISTORY_COLUMNS, HISTORY_OPTIONAL)
        h_sample = h_sample or {}
        raw = _model(models.status_history, h_names,
                     {"order_id": order_id_type, "status": String(), "history_id": BigInteger()},
                     "ltv_status_changes_model")
        h_columns = [raw.c.order_id.label("order_id"), raw.c.status.label("status"),
                     _timestamp(raw.c.changed_at, h_sample.get("changed_at"), dialect).label("changed_at")]
        if "history_id" in h_names:
            h_columns.append(raw.c.history_id.label("history_id"))
        history = select(*h_columns).subquery("ltv_status_changes")
    source = OrderSource(
        orders=orders, status_history=history, excluded_statuses=s.excluded_statuses,
        reversed_statuses=s.reversed_statuses, valid_statuses=s.valid_statuses,
        initial_status=s.initial_status, currency=s.currency, fingerprint=models.fingerprint(),
    )
    return BuiltSource(source=source, left_out=left_out, model=model, history=history,
                       fx_currencies=len({r["currency"] for r in ranges}), updated_at=updated,
                       created_at=created, fx=fx)
