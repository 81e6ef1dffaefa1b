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

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from storesync.core.errors import ConfigurationError
from storesync.core.windows import Window
from storesync.warehouse import contract

# The syncs' models (the contract's "sync" group, optional ones included) and their chunk binds.
MODEL_NAMES = contract.models_in("sync")
ID_PARAMS = {name: c.id_param for name, c in contract.CONTRACTS.items() if c.id_param}


def _columns_of(type_: str) -> frozenset:
    return frozenset(col.name for c in contract.CONTRACTS.values() for col in c.columns if col.type == type_)


# The output contract's types. Drivers disagree (SQLite hands back text dates and float money,
# PostgreSQL datetimes and Decimals), so every frame is normalised to one set of Python types.
# A frame of a known model is normalised by that model's contract; these unions serve the rest.
MONEY_COLUMNS = _columns_of(contract.MONEY)
DATETIME_COLUMNS = _columns_of(contract.DATETIME)
BOOL_COLUMNS = _columns_of(contract.BOOL)


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


def _id_from_float(value):
    """An integer id column holding a NULL reaches the frame as floats (431.0, NaN): the ids are
    integers again (a vendor refuses 431.0 as a variant id), NaN is None."""
    if value is None or value != value:
        return None
    return int(value) if float(value).is_integer() else value


_CONVERTERS = {contract.MONEY: _to_decimal, contract.DATETIME: _to_datetime, contract.BOOL: _to_bool}


def normalise(frame: pd.DataFrame, model: str | None = None) -> pd.DataFrame:
    """Give a model's frame the contract's Python types, whatever the driver returned.

    With ``model``, its contract says each column's type; without, the column names do."""
    types = contract.contract_for(model).types() if model else {}
    for column in frame.columns:
        if model:
            convert = _CONVERTERS.get(types.get(column))
            if types.get(column) == contract.ID and frame[column].dtype.kind == "f":
                convert = _id_from_float  # only float columns: ids of other dtypes stay as read
        elif column in MONEY_COLUMNS:
            convert = _to_decimal
        elif column in DATETIME_COLUMNS:
            convert = _to_datetime
        elif column in BOOL_COLUMNS:
            convert = _to_bool
        else:
            continue
        if convert is None:
            continue
        try:
            values = [convert(v) for v in frame[column].tolist()]
        except (ValueError, TypeError, ArithmeticError) as exc:
            # The value itself stays out of the message: it may be personal data.
            raise contract.ModelContractError(
                f"model {model or '?'}: column {column} holds a value that is not "
                f"{types.get(column) or 'of its type'} ({type(exc).__name__})") from None
        frame[column] = pd.Series(values, index=frame.index, dtype=object)
    return frame


WAREHOUSE_TIMEZONE = "UTC"


def warehouse_engine(url: str, **kwargs) -> Engine:
    """An engine for the warehouse: statement parameters hidden from error messages (they would
    carry customer data to logs) and, on PostgreSQL, every session in UTC."""
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("duckdb"):
        # No pool: a pooled DuckDB connection outlives the run and holds the file's lock, so that
        # another process (the next Airflow task) cannot open it.
        from sqlalchemy.pool import NullPool

        kwargs.setdefault("poolclass", NullPool)
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


# ---------------------------------------------------------------------------- the SQL text
# Comments, string literals, quoted identifiers and dollar-quoted bodies: a ``:word`` inside one
# is text, not a bind (``text()`` would make it one).
_NOT_CODE = re.compile(r"""
    --[^\n]*
  | /\*.*?(?:\*/|\Z)
  | '(?:[^']|'')*(?:'|\Z)
  | "(?:[^"]|"")*(?:"|\Z)
  | \$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z)
""", re.VERBOSE | re.DOTALL)
_COLON_WORD = re.compile(r"(?<![\\:]):(?=\w)")
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?![:\w])")


def escape_literals(sql: str) -> str:
    """``sql`` with every ``:`` in a comment, string literal or quoted name escaped for ``text()``,
    so that only the binds in the code remain binds (``'12:30'`` and ``-- :note`` stay text)."""
    return _NOT_CODE.sub(lambda m: _COLON_WORD.sub(r"\\:", m.group(0)), sql)


def binds_in(sql: str) -> set[str]:
    """The bind names ``text()`` will see in ``sql`` (comments and literals left out)."""
    return set(_BIND.findall(_NOT_CODE.sub(" ", sql)))


def window_params(window: Window, dialect: str) -> dict:
    """The window's binds for a model on ``dialect``.

    ``:window_start``/``:window_end`` are datetimes, except on SQLite, which has no datetime type:
    there they are the text SQLAlchemy's ``DateTime`` stores, ``'YYYY-MM-DD HH:MM:SS'`` (with
    ``.ffffff`` when the bound has microseconds), so they compare right with such columns and with
    SQLite's own ``datetime()``. ``:window_start_iso``/``:window_end_iso`` are ISO 8601 text with a
    ``T`` (``'YYYY-MM-DDTHH:MM:SS'``) on every dialect: compare those with text columns holding ISO
    timestamps (``' '`` sorts before ``'T'``: mixing the two forms silently loses rows)."""
    params = window.params()
    if dialect == "sqlite":
        params = {k: v.isoformat(" ") for k, v in params.items()}
    params["window_start_iso"] = window.start.isoformat("T")
    params["window_end_iso"] = window.end.isoformat("T")
    return params


class Warehouse:
    """The store's warehouse, read through its models.

    Given a URL, it makes its engine with ``warehouse_engine`` (UTC sessions on PostgreSQL); an
    engine passed in is used as it is. Every result is held to the models contract
    (``storesync.warehouse.contract``): a required column missing fails naming the model, the
    column and the file; a missing optional column reads as null. An optional model whose file is
    absent reads as no rows."""

    def __init__(self, url_or_engine: str | Engine, models_dir: str | Path, *, require_models: bool = True) -> None:
        self.engine = warehouse_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.models_dir = Path(models_dir)
        missing = [n for n in MODEL_NAMES
                   if not contract.contract_for(n).optional and not self.path(n).is_file()]
        if missing and require_models:
            raise ConfigurationError(f"models missing in {self.models_dir}: "
                                     + ", ".join(f"{n}.sql" for n in missing))
        self._statements: dict = {}  # model -> (text() statement or None, takes its chunk bind)

    def path(self, model: str) -> Path:
        return self.models_dir / f"{model}.sql"

    def has(self, model: str) -> bool:
        return self.path(model).is_file()

    def statement(self, model: str):
        """The model's ``text()`` statement (None for an optional model without a file)."""
        return self._loaded(model)[0]

    def filters_ids(self, model: str) -> bool:
        """Whether an id model's SQL takes its chunk bind (an optional one may not)."""
        return self._loaded(model)[1]

    def _loaded(self, model: str) -> tuple:
        if model not in self._statements:
            self._statements[model] = self._load(model)
        return self._statements[model]

    def _load(self, model: str) -> tuple:
        spec = contract.contract_for(model)
        path = self.path(model)
        if not path.is_file():
            if spec.optional:
                return None, False
            raise ConfigurationError(f"model {model} missing: {path}")
        sql = path.read_text()
        statement = text(escape_literals(sql))
        filtered = bool(spec.id_param) and spec.id_param in binds_in(sql)
        if filtered:
            statement = statement.bindparams(bindparam(spec.id_param, expanding=True))
        elif spec.id_param and not spec.optional:
            raise ConfigurationError(f"model {model} ({path}) must filter on :{spec.id_param} (a chunk of ids)")
        return statement, filtered

    def conform(self, model: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Hold a model's frame to its contract: required columns present, optional ones added."""
        spec = contract.contract_for(model)
        missing = [c for c in spec.required_columns if c not in frame.columns]
        if missing:
            raise contract.ModelContractError(
                f"model {model} ({self.path(model)}) does not return the required column(s) "
                f"{', '.join(missing)}; it returns: {', '.join(map(str, frame.columns)) or 'nothing'}")
        for name in spec.optional_columns:
            if name not in frame.columns:
                frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        return frame

    def _empty(self, model: str) -> pd.DataFrame:
        columns = [c.name for c in contract.contract_for(model).columns]
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})

    def _result_frame(self, model: str, rows, columns) -> pd.DataFrame:
        """Result rows as a conformed, normalised DataFrame. Rows go in as plain tuples: pandas
        probes each SQLAlchemy ``Row`` for attributes (a failed key lookup apiece), 3x slower."""
        frame = pd.DataFrame.from_records([tuple(row) for row in rows], columns=columns)
        frame = self.conform(model, frame)
        try:
            return normalise(frame, model)
        except contract.ModelContractError as exc:
            raise contract.ModelContractError(f"{exc} in {self.path(model)}") from None

    @contextmanager
    def _running(self, model: str):
        """A database error while a model runs names the model and its file (as a note: the
        error itself stays what it is, so callers still tell a lost connection from bad SQL)."""
        try:
            yield
        except DBAPIError as exc:
            exc.add_note(f"while running model {model} ({self.path(model)})")
            raise

    def stream(self, model: str, window: Window, chunk_size: int) -> Iterator[pd.DataFrame]:
        """A window model's rows as DataFrames of at most ``chunk_size`` rows."""
        statement = self.statement(model)
        if statement is None:
            return
        with self._running(model), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(
                statement, window_params(window, self.engine.dialect.name)
            )
            columns = list(result.keys())
            empty = True
            for partition in result.partitions(chunk_size):
                empty = False
                yield self._result_frame(model, partition, columns)
            if empty:  # still held to the contract: a model lacking a column fails on a quiet day too
                self.conform(model, pd.DataFrame(columns=columns))

    def for_ids(self, model: str, ids: Sequence, **params) -> pd.DataFrame:
        """An id model's rows for one chunk of ids."""
        statement = self.statement(model)
        if statement is None:
            return self._empty(model)
        id_param = ID_PARAMS[model]
        filtered = self.filters_ids(model)
        if "window_end" in params:  # order_history: the same two forms as a window's end
            end = params["window_end"]
            params["window_end_iso"] = end.isoformat("T")
            if self.engine.dialect.name == "sqlite":
                params["window_end"] = end.isoformat(" ")
        if filtered:
            params[id_param] = padded_ids(ids)
        with self._running(model), self.engine.connect() as conn:
            result = conn.execute(statement, params)
            frame = self._result_frame(model, result.fetchall(), list(result.keys()))
        if not filtered:  # an optional model that does not filter: keep the chunk's rows only
            frame = frame[frame[id_param[:-1]].isin(list(ids))].reset_index(drop=True)
        return frame

    def stream_order_changes(self, window: Window, chunk_size: int) -> Iterator[pd.DataFrame]:
        """Order changes in chunks that never split one order's changes across two chunks.

        A frame's last order is held back only when another frame follows (its changes may go on
        there): the last frame goes whole, so a window smaller than a chunk is one chunk, one
        gate batch (each costs ~0.5 s of GX whatever its size), not two."""
        pending = None
        for frame in self.stream("order_changes", window, chunk_size):
            if pending is not None:
                tail = pending["order_id"] == pending["order_id"].iloc[-1]
                if not tail.all():
                    yield pending[~tail].reset_index(drop=True)
                frame = pd.concat([pending[tail], frame], ignore_index=True)
            pending = frame
        if pending is not None and len(pending):
            yield pending.reset_index(drop=True)
