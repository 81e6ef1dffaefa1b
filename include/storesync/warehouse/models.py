"""The warehouse models: one SQL file per entity, run with the window or a chunk of ids.

Models are plain SQL a user adapts to their schema (see ``include/sql/README.md``). This module
only loads and runs them: results stream from a server-side cursor, so memory stays flat
whatever the window holds.

Everything is UTC: windows are naive UTC, and on PostgreSQL every warehouse session runs with
``TimeZone = UTC`` (``warehouse_engine``), whatever the server's or the database's setting, so a
window bound compared with a ``timestamptz`` column means the same instant, and SQL date
functions cut days at UTC midnight. ``timestamptz`` values come back as naive UTC datetimes,
like every other datetime in a model's frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path

import pandas as pd
from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import Engine

from storesync.core.errors import ConfigurationError
from storesync.core.windows import Window

MODEL_NAMES = (
    "order_changes", "orders", "order_lines", "customers", "products", "product_variants",
    "checkouts", "checkout_lines", "order_history",
)
# Models that take a chunk of ids rather than the window.
ID_PARAMS = {
    "orders": "order_ids",
    "order_lines": "order_ids",
    "product_variants": "product_ids",
    "checkout_lines": "checkout_ids",
    "order_history": "order_ids",
}

# The output contract's types. Drivers disagree (SQLite hands back text dates and float money,
# PostgreSQL datetimes and Decimals), so every frame is normalised to one set of Python types.
MONEY_COLUMNS = frozenset({
    "subtotal", "total_tax", "total_discounts", "total", "lines_subtotal", "unit_price", "line_total",
    "price", "compare_at_price",
})
DATETIME_COLUMNS = frozenset({"created_at", "updated_at", "changed_at"})
BOOL_COLUMNS = frozenset({"accepts_marketing"})


def _to_decimal(value):
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return None if value != value else Decimal(repr(value))  # repr: the shortest exact text
    return Decimal(str(value))


def _to_datetime(value):
    if value is None:
        return value
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    if value.tzinfo is not None:  # timestamptz (or text with an offset): the same instant, naive UTC
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _to_bool(value):
    return None if value is None else bool(value)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Give a model's frame the contract's Python types, whatever the driver returned."""
    for column in frame.columns:
        if column in MONEY_COLUMNS:
            convert = _to_decimal
        elif column in DATETIME_COLUMNS:
            convert = _to_datetime
        elif column in BOOL_COLUMNS:
            convert = _to_bool
        else:
            continue
        frame[column] = pd.Series([convert(v) for v in frame[column].tolist()], index=frame.index,
                                  dtype=object)
    return frame


WAREHOUSE_TIMEZONE = "UTC"


def warehouse_engine(url: str, **kwargs) -> Engine:
    """An engine for the warehouse: statement parameters hidden from error messages (they would
    carry customer data to logs) and, on PostgreSQL, every session in UTC."""
    kwargs.setdefault("hide_parameters", True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "postgresql":
        in_utc(engine)
    return engine


def in_utc(engine: Engine) -> Engine:
    """Run each new connection of a PostgreSQL ``engine`` with ``TimeZone = UTC``.

    Set on connect, with any driver, and committed: a ``SET`` inside a transaction that is rolled
    back (as the pool does when it takes a connection back) would be undone. A libpq
    ``options=-c timezone=UTC`` connect argument would replace any ``options`` in the URL."""

    @event.listens_for(engine, "connect")
    def _set_utc(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET TIME ZONE '{WAREHOUSE_TIMEZONE}'")
        finally:
            cursor.close()
        dbapi_connection.commit()

    return engine


def padded_ids(ids: Sequence) -> list:
    """``ids`` padded to the next power of two (at least 64) by repeating the last one.

    The id list is expanded into an ``IN (?, ?, ...)`` of that many parameters, so every
    distinct length is a distinct statement, and the driver keeps each one prepared (sqlite3
    caches 128 per connection, a statement of 20k parameters weighing megabytes): a long
    pass over chunks of varying lengths grew by ~1 MB a chunk. A repeated id changes nothing
    an IN matches; a handful of lengths stay prepared."""
    ids = list(ids)
    if not ids:
        return ids
    size = max(64, 1 << (len(ids) - 1).bit_length())
    return ids + [ids[-1]] * (size - len(ids))


def _frame(rows: Sequence, columns: list) -> pd.DataFrame:
    """Result rows as a normalised DataFrame. Rows go in as plain tuples: pandas probes each
    SQLAlchemy ``Row`` for attributes (a failed key lookup apiece), three times slower."""
    return normalise(pd.DataFrame.from_records([tuple(row) for row in rows], columns=columns))


class Warehouse:
    """The store's warehouse, read through its models.

    Given a URL, it makes its engine with ``warehouse_engine`` (UTC sessions on PostgreSQL); an
    engine passed in is used as it is."""

    def __init__(self, url_or_engine: str | Engine, models_dir: str | Path) -> None:
        self.engine = warehouse_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.models_dir = Path(models_dir)
        missing = [n for n in MODEL_NAMES if not (self.models_dir / f"{n}.sql").is_file()]
        if missing:
            raise ConfigurationError(f"models missing in {self.models_dir}: {', '.join(missing)}")

    @cached_property
    def _statements(self) -> dict:
        statements = {}
        for name in MODEL_NAMES:
            statement = text((self.models_dir / f"{name}.sql").read_text())
            if name in ID_PARAMS:
                statement = statement.bindparams(bindparam(ID_PARAMS[name], expanding=True))
            statements[name] = statement
        return statements

    def stream(self, model: str, window: Window, chunk_size: int) -> Iterator[pd.DataFrame]:
        """A window model's rows as DataFrames of at most ``chunk_size`` rows."""
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(
                self._statements[model], window.params()
            )
            columns = list(result.keys())
            for partition in result.partitions(chunk_size):
                yield _frame(partition, columns)

    def for_ids(self, model: str, ids: Sequence, **params) -> pd.DataFrame:
        """An id model's rows for one chunk of ids."""
        with self.engine.connect() as conn:
            result = conn.execute(self._statements[model], {ID_PARAMS[model]: padded_ids(ids), **params})
            return _frame(result.fetchall(), list(result.keys()))

    def stream_order_changes(self, window: Window, chunk_size: int) -> Iterator[pd.DataFrame]:
        """Order changes in chunks that never split one order's changes across two chunks."""
        carry = None
        for frame in self.stream("order_changes", window, chunk_size):
            if carry is not None:
                frame = pd.concat([carry, frame], ignore_index=True)
            last_order = frame["order_id"].iloc[-1]
            tail = frame["order_id"] == last_order
            if tail.all():
                carry = frame
                continue
            carry = frame[tail]
            yield frame[~tail].reset_index(drop=True)
        if carry is not None and len(carry):
            yield carry.reset_index(drop=True)
