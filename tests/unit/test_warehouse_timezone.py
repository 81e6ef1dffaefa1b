"""Warehouse sessions run in UTC on PostgreSQL, whatever the server's or the database's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storesync.core.config import DEFAULT_MODELS_DIR
from storesync.core.windows import Window
from storesync.warehouse.models import Warehouse, normalise

ZONE = "America/New_York"  # UTC-5 in November
WINDOW = Window(datetime(2026, 11, 19), datetime(2026, 11, 20))
# Customer 1 changed at 02:00 UTC on the 19th (inside the window), customer 2 at 02:00 UTC on the
# 20th (after it). Read in New York time, the window would start at 05:00 UTC: 1 would be missed
# and 2 taken in.
UPDATED = {1: datetime(2026, 11, 19, 2, 0, tzinfo=UTC), 2: datetime(2026, 11, 20, 2, 0, tzinfo=UTC)}


@pytest.fixture
def warehouse_url(pg_url):
    name = make_url(pg_url).database
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO '{ZONE}'"))
    engine.dispose()
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE customers (customer_id integer PRIMARY KEY, email text, first_name text, last_name text, "
            "phone text, company text, address_1 text, city text, state text, state_code text, country text, "
            "country_code text, postal_code text, accepts_marketing boolean NOT NULL, "
            "created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"))
        for customer_id, moment in UPDATED.items():
            conn.execute(text("INSERT INTO customers (customer_id, email, accepts_marketing, created_at, updated_at) "
                              "VALUES (:id, :email, true, :at, :at)"),
                         {"id": customer_id, "email": f"c{customer_id}@example.com", "at": moment})
    engine.dispose()
    return pg_url


@pytest.mark.postgres
def test_the_database_is_not_in_utc(warehouse_url):
    """The premise: a plain connection to this database runs in New York time."""
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW timezone")).scalar() == ZONE
        assert conn.execute(text("SELECT updated_at FROM customers WHERE customer_id = 1")).scalar().utcoffset() \
            == timedelta(hours=-5)
    engine.dispose()


@pytest.mark.postgres
def test_warehouse_sessions_run_in_utc(warehouse_url):
    wh = Warehouse(warehouse_url, DEFAULT_MODELS_DIR)
    for _ in range(2):  # a fresh connection, then one back from the pool (after its rollback)
        with wh.engine.connect() as conn:
            assert conn.execute(text("SHOW timezone")).scalar() == "UTC"
            assert conn.execute(text("SELECT updated_at FROM customers WHERE customer_id = 1")).scalar() == \
                UPDATED[1]
            assert conn.execute(text("SELECT CAST(updated_at AS date) FROM customers WHERE customer_id = 2")) \
                .scalar().isoformat() == "2026-11-20"
            conn.rollback()
    wh.engine.dispose()


@pytest.mark.postgres
def test_a_window_of_timestamptz_rows_is_cut_in_utc(warehouse_url):
    wh = Warehouse(warehouse_url, DEFAULT_MODELS_DIR)
    (frame,) = list(wh.stream("customers", WINDOW, 100))
    assert frame["customer_id"].tolist() == [1]
    # Back as the naive UTC datetimes every model frame carries.
    assert frame["updated_at"].tolist() == [UPDATED[1].replace(tzinfo=None)]
    wh.engine.dispose()


def test_normalise_gives_aware_datetimes_as_naive_utc():
    import pandas as pd

    frame = normalise(pd.DataFrame({"changed_at": [datetime(2026, 11, 18, 21, 0, tzinfo=timezone(timedelta(hours=-5))),
                                                   "2026-11-19T04:30:00+02:00", datetime(2026, 11, 19, 2, 0), None]}))
    assert frame["changed_at"].tolist() == [datetime(2026, 11, 19, 2, 0), datetime(2026, 11, 19, 2, 30),
                                            datetime(2026, 11, 19, 2, 0), None]
