"""The warehouse models: one SQL file per entity, run with the window or a chunk of ids.

Models are plain SQL a user adapts to their schema (see ``include/sql/README.md``). This module
only loads and runs them: results stream from a server-side cursor, so memory stays flat
whatever the window holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path

import pandas as pd
from sqlalchemy import bindparam, create_engine, text
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
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


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


class Warehouse:
    """The store's warehouse, read through its models."""

    def __init__(self, url_or_engine: str | Engine, models_dir: str | Path) -> None:
        # hide_parameters: a failed statement's message must not carry customer data to logs
        self.engine = (create_engine(url_or_engine, hide_parameters=True) if isinstance(url_or_engine, str)
                       else url_or_engine)
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
                yield normalise(pd.DataFrame.from_records(partition, columns=columns))

    def for_ids(self, model: str, ids: Sequence, **params) -> pd.DataFrame:
        """An id model's rows for one chunk of ids."""
        with self.engine.connect() as conn:
            result = conn.execute(self._statements[model], {ID_PARAMS[model]: list(ids), **params})
            return normalise(pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys())))

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
