"""Fast bulk loading for the demo store and benchmarks: COPY on PostgreSQL, executemany on SQLite.

Two ways in:

``write(table, rows)``
    rows are tuples in the table's column order (Python values: datetimes, Decimals, bools...).
``write_columns(table, columns)``
    one sequence per column, keyed by column name (every column of the table), typically numpy
    arrays: ``datetime64`` columns, float money in currency units, bools, ints, or object arrays
    / lists holding ``None`` for NULL. The values are converted column by column (vectorised),
    not value by value: this is what makes a 10M-order store quick to write.

Anything else than SQLite and psycopg 3 falls back to SQLAlchemy-less DB-API ``executemany``,
which is portable but slower. ``create_indexes`` builds secondary indexes after the load (much
faster than maintaining them row by row).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import numpy as np
from sqlalchemy import Table
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex

# SQLAlchemy's SQLite DateTime storage format: write the same text so comparisons stay lexical.
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
_DATETIME_CHARS = 26  # "YYYY-MM-DD HH:MM:SS.ffffff"
_COPY_BATCH_ROWS = 20_000


def _sqlite_value(value):
    if isinstance(value, datetime):
        return value.strftime(SQLITE_DATETIME)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bool):
        return int(value)
    return value


def format_datetimes(values: np.ndarray) -> list[str]:
    """``datetime64`` values as SQLAlchemy's SQLite text (``YYYY-MM-DD HH:MM:SS.ffffff``), which
    PostgreSQL's timestamp input reads too. NaT becomes None."""
    values = np.asarray(values).astype("datetime64[us]")
    text = np.datetime_as_string(values, unit="us").astype(f"U{_DATETIME_CHARS}")
    # Replace the ISO "T" by a space in place: each character is one UCS-4 code unit.
    text.view(np.uint32).reshape(-1, _DATETIME_CHARS)[:, 10] = ord(" ")
    out = text.tolist()
    nat = np.isnat(values)
    if nat.any():
        for i in np.flatnonzero(nat).tolist():
            out[i] = None
    return out


_SQLITE_CONVERTED = (datetime, Decimal, bool)


def _column_values(values, dialect: str) -> list:
    """One column as a list of driver-ready Python values."""
    if dialect == "duckdb":
        return _duckdb_column(values)
    if not isinstance(values, np.ndarray) or values.dtype.kind == "O":
        values = values.tolist() if isinstance(values, np.ndarray) else list(values)
        # Text and numbers go as they are; convert only a column that holds something else.
        if dialect == "sqlite" and any(issubclass(t, _SQLITE_CONVERTED) for t in set(map(type, values))):
            return [_sqlite_value(v) for v in values]
        return values
    kind = values.dtype.kind
    if kind == "M":
        return format_datetimes(values)
    if kind == "b":
        return values.astype(np.int64).tolist() if dialect == "sqlite" else values.tolist()
    if kind == "f":
        # Money in currency units: cents / 100 is the double nearest the decimal amount, so
        # SQLite gets the same float as float(Decimal) would give, and repr() the exact text.
        return values.tolist()
    return values.tolist()


def _duckdb_column(values):
    """One column for DuckDB, which reads a pandas frame whole: numpy arrays stay arrays
    (``datetime64`` becomes TIMESTAMP, float money is cast to the column's DECIMAL by the INSERT)."""
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":
        return values.astype("datetime64[us]") if values.dtype.kind == "M" else values
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if any(isinstance(v, Decimal) for v in values):
        return [None if v is None else float(v) for v in values]
    return values


class BulkWriter:
    """Writes tables in bulk through one raw connection, committing after each chunk."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._conn = None

    def __enter__(self) -> "BulkWriter":
        self._conn = self.engine.raw_connection()
        if self.dialect == "sqlite":
            cur = self._conn.cursor()
            # A freshly generated store: durability during the load buys nothing.
            cur.execute("PRAGMA synchronous=OFF")
            cur.execute("PRAGMA journal_mode=MEMORY")
            # Appends need little cache (64 MiB); index builds get more, see create_indexes.
            cur.execute(f"PRAGMA cache_size=-{64 * 1024}")
            cur.execute("PRAGMA threads=2")  # a helper thread for SQLite's sorter
            cur.close()
        elif self.dialect == "postgresql":
            cur = self._conn.cursor()
            cur.execute("SET synchronous_commit TO OFF")  # this session only: a load, not a ledger
            cur.close()
            self._conn.commit()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._conn.commit()
            else:
                self._conn.rollback()
        finally:
            self._conn.close()

    def write(self, table: Table, rows: list[tuple]) -> None:
        if not rows:
            return
        columns = [c.name for c in table.columns]
        if self.dialect == "sqlite":
            rows = [tuple(_sqlite_value(v) for v in row) for row in rows]
        self._write_rows(table, columns, rows)

    def write_columns(self, table: Table, columns: Mapping[str, Sequence]) -> int:
        """Write one chunk given column by column; returns the number of rows written."""
        names = [c.name for c in table.columns]
        missing = [n for n in names if n not in columns]
        extra = [n for n in columns if n not in names]
        if missing or extra:
            raise ValueError(f"{table.name}: columns missing {missing}, unknown {extra}")
        lists = [_column_values(columns[n], self.dialect) for n in names]
        lengths = {len(values) for values in lists}
        if len(lengths) > 1:
            raise ValueError(f"{table.name}: columns of different lengths {sorted(lengths)}")
        if not lists or not len(lists[0]):
            return 0
        if self.dialect == "duckdb":
            return self._write_frame(table, names, lists)
        rows = list(zip(*lists))
        del lists
        self._write_rows(table, names, rows)
        return len(rows)

    def _write_frame(self, table: Table, names: list[str], lists: list) -> int:
        """DuckDB: the chunk as one pandas frame, inserted by a single statement (columnar, no
        per-row round trips; executemany would take minutes for a demo store)."""
        import pandas as pd

        frame = pd.DataFrame({n: pd.Series(v, dtype=None if isinstance(v, np.ndarray) else object)
                              for n, v in zip(names, lists)})
        duck = self._conn.driver_connection
        duck.register("_storesync_chunk", frame)
        try:
            duck.execute(f"INSERT INTO {table.name} ({', '.join(names)}) "
                         f"SELECT {', '.join(names)} FROM _storesync_chunk")
        finally:
            duck.unregister("_storesync_chunk")
        self._conn.commit()
        return len(frame)

    def _write_rows(self, table: Table, columns: list[str], rows: Iterable[tuple]) -> None:
        if self.dialect == "duckdb":
            rows = list(rows)
            if rows:
                self._write_frame(table, columns, [_duckdb_column(list(c)) for c in zip(*rows)])
            return
        cur = self._conn.cursor()
        try:
            if self.dialect == "sqlite":
                placeholders = ", ".join("?" for _ in columns)
                cur.executemany(
                    f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})", rows)
            elif self.dialect == "postgresql" and self.engine.driver == "psycopg":
                with cur.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                placeholders = ", ".join(f"%({c})s" for c in columns)
                cur.executemany(
                    f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})",
                    [dict(zip(columns, row)) for row in rows],
                )
        finally:
            cur.close()
        self._conn.commit()

    def create_indexes(self, tables: Iterable[Table]) -> None:
        """Build the tables' secondary indexes (after the load), then refresh planner statistics
        on PostgreSQL, as a warehouse's loader would."""
        tables = list(tables)
        cur = self._conn.cursor()
        try:
            if self.dialect == "sqlite":
                # Sorting the keys in memory (up to 512 MiB) instead of in temporary files.
                cur.execute(f"PRAGMA cache_size=-{512 * 1024}")
            for table in tables:
                for index in sorted(table.indexes, key=lambda i: i.name or ""):
                    cur.execute(str(CreateIndex(index).compile(dialect=self.engine.dialect)))
            self._conn.commit()
            if self.dialect == "postgresql":
                # VACUUM as well: it sets the visibility map, without which PostgreSQL cannot answer
                # from an index alone (the LTV query's covering index); VACUUM needs autocommit.
                driver = self._conn.driver_connection
                driver.autocommit = True
                try:
                    for table in tables:
                        cur.execute(f"VACUUM (ANALYZE) {table.name}")
                finally:
                    driver.autocommit = False
        finally:
            cur.close()
