"""Window binds (issue 17.5): `:window_start`/`:window_end` compare right with datetime columns and
`:window_start_iso`/`:window_end_iso` with ISO-text columns, on every dialect; an hourly window
keeps exactly its half-open hour."""

from __future__ import annotations

import shutil
from datetime import datetime

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Text, create_engine

from storesync.core.config import DEFAULT_MODELS_DIR
from storesync.core.windows import Window
from storesync.warehouse.models import Warehouse

HOUR = Window(datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 11))
MOMENTS = {
    1: datetime(2026, 11, 19, 10, 30),          # the day before
    2: datetime(2026, 11, 20, 9, 59, 59),
    3: datetime(2026, 11, 20, 10, 0),           # the window's first instant: in
    4: datetime(2026, 11, 20, 10, 30),
    5: datetime(2026, 11, 20, 10, 59, 59, 999000),
    6: datetime(2026, 11, 20, 11, 0),           # the window's end: out
    7: datetime(2026, 11, 21, 10, 30),
}
IN_WINDOW = [3, 4, 5]

SELECT = ("SELECT id AS customer_id, 'c' || CAST(id AS TEXT) || '@example.com' AS email, {col} AS created_at, "
          "{col} AS updated_at FROM stamps WHERE {where} ORDER BY id")


def _store(url: str, tmp_path):
    metadata = MetaData()
    stamps = Table("stamps", metadata, Column("id", Integer, primary_key=True, autoincrement=False), Column("ts", DateTime),
                   Column("ts_iso", Text), Column("ts_iso_z", Text))
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(stamps.insert(), [
            {"id": i, "ts": m, "ts_iso": m.isoformat("T"), "ts_iso_z": m.isoformat("T", "milliseconds") + "Z"}
            for i, m in MOMENTS.items()])
    engine.dispose()
    models = tmp_path / "models"
    if not models.exists():
        shutil.copytree(DEFAULT_MODELS_DIR, models)
    return models


def _ids(url, models, col, where) -> list:
    (models / "customers.sql").write_text(SELECT.format(col=col, where=where))
    frames = list(Warehouse(url, models).stream("customers", HOUR, 100))
    return [i for f in frames for i in f["customer_id"].tolist()]


def test_datetime_and_iso_text_columns_keep_exactly_the_window(warehouse_db_url, tmp_path):
    models = _store(warehouse_db_url, tmp_path)
    assert _ids(warehouse_db_url, models, "ts", "ts >= :window_start AND ts < :window_end") == IN_WINDOW
    assert _ids(warehouse_db_url, models, "ts_iso",
                "ts_iso >= :window_start_iso AND ts_iso < :window_end_iso") == IN_WINDOW
    assert _ids(warehouse_db_url, models, "ts_iso_z",
                "ts_iso_z >= :window_start_iso AND ts_iso_z < :window_end_iso") == IN_WINDOW


def test_on_sqlite_the_plain_binds_with_iso_text_lose_rows_and_datetime_reads_both(tmp_path):
    """The trap the README documents, and its other way out (SQLite's datetime())."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    models = _store(url, tmp_path)
    wrong = _ids(url, models, "ts_iso", "ts_iso >= :window_start AND ts_iso < :window_end")
    assert wrong != IN_WINDOW and set(wrong) < set(IN_WINDOW) | {6}
    assert _ids(url, models, "ts_iso",
                "datetime(ts_iso) >= datetime(:window_start) AND datetime(ts_iso) < datetime(:window_end)") \
        == [3, 4, 5]
    assert _ids(url, models, "ts", "datetime(ts) >= :window_start AND datetime(ts) < :window_end") == IN_WINDOW


@pytest.mark.parametrize("literal", ["'10:30 :window_start'", "'a:b'"])
def test_binds_inside_literals_and_comments_stay_text(tmp_path, literal):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    models = _store(url, tmp_path)
    (models / "customers.sql").write_text(
        "-- :not_a_bind, and /* :nor_this */ either\n"
        f"SELECT id AS customer_id, {literal} AS email, ts AS created_at, ts AS updated_at /* :x */\n"
        "  FROM stamps WHERE ts >= :window_start AND ts < :window_end ORDER BY id")
    [frame] = Warehouse(url, models).stream("customers", HOUR, 100)
    assert frame["email"].tolist() == [literal.strip("'")] * 3
