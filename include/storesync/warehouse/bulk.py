"""Fast bulk loading for the demo store and benchmarks: COPY on PostgreSQL, executemany on SQLite.

Rows are tuples in the table's column order. Anything else falls back to SQLAlchemy's
``insert()`` executemany, which is portable but slower.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Table
from sqlalchemy.engine import Engine

# SQLAlchemy's SQLite DateTime storage format: write the same text so comparisons stay lexical.
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def _sqlite_value(value):
    if isinstance(value, datetime):
        return value.strftime(SQLITE_DATETIME)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bool):
        return int(value)
    return value


class BulkWriter:
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
            cur.close()
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
        cur = self._conn.cursor()
        try:
            if self.dialect == "sqlite":
                placeholders = ", ".join("?" for _ in columns)
                cur.executemany(
                    f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})",
                    [tuple(_sqlite_value(v) for v in row) for row in rows],
                )
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
