"""The quarantine store on SQLite and PostgreSQL: record, list open rows, resolve when fixed, count."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from decimal import Decimal as D

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, select

NOW = dt.datetime(2025, 6, 1, 12, 0)


def order(i, **kw):
    row = dict(
        order_id=i, customer_id=1000 + i, email=f"buyer{i}@example.com", status="completed", currency="USD",
        subtotal=D("20.00"), total_tax=D("1.60"), total_discounts=D("2.00"), discount_code=None,
        total=D("19.60"), payment_method="Visa", sailthru_bid=None, created_at=dt.datetime(2025, 5, 1, 8, 0),
        updated_at=dt.datetime(2025, 5, 2, 9, 30), lines_subtotal=D("20.00"), line_count=2,
    )
    row.update(kw)
    return row


@pytest.fixture
def engine(db_url):
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine):
    from storesync.quality import QuarantineStore

    ticks = itertools.count()
    return QuarantineStore(engine, clock=lambda: NOW + dt.timedelta(minutes=next(ticks)))


def validate(rows, run_id, batch_id="b0", entity="orders"):
    from storesync.quality import validate_batch

    return validate_batch(entity, pd.DataFrame(rows), run_id=run_id, batch_id=batch_id, now=NOW)


def test_table_is_created_portably(engine, store):
    from storesync.quality import QuarantineStore
    from storesync.quality.store import TABLE_NAME

    assert not inspect(engine).has_table(TABLE_NAME)
    store.ensure_table()
    QuarantineStore(engine).ensure_table()  # a second store, same table: no error
    columns = {c["name"] for c in inspect(engine).get_columns(TABLE_NAME)}
    expected = {
        "run_id", "batch_id", "entity", "entity_id", "reasons", "row", "quarantined_at", "resolved_at",
    }
    assert expected <= columns


def test_record_open_rows_and_counts(store):
    outcome = validate(
        [order(1), order(2, email="not-an-email"), order(3, total=D("19.605")),
         order(4, status="lost", total=D("1.00")), order(5, order_id=None)],
        run_id="run-1",
    )
    assert store.record(outcome) == {"recorded": 4, "resolved": 0}

    open_rows = store.open_rows("orders")
    assert [r["entity_id"] for r in open_rows] == [2, 3, 4, None]  # ids come back as the row held them
    three = open_rows[1]
    assert three["run_id"] == "run-1" and three["batch_id"] == "b0" and three["entity"] == "orders"
    assert three["reasons"] == ["total_fits_cents: total 19.605 has more than 2 decimal places"]
    # The row is stored exactly: Decimals as strings, datetimes ISO 8601.
    assert three["row"]["total"] == "19.605" and three["row"]["subtotal"] == "20.00"
    assert three["row"]["created_at"] == "2025-05-01T08:00:00"
    assert three["row"]["email"] == "buyer3@example.com"
    assert three["quarantined_at"] == NOW and three["resolved_at"] is None
    assert store.open_rows("customers") == []

    assert store.counts_by_reason("run-1") == {
        "email_well_formed": 1, "total_fits_cents": 1, "status_known": 1, "order_total_matches": 1,
        "order_id_present": 1,
    }
    assert store.counts_by_reason("run-1", entity="customers") == {}
    assert store.counts_by_reason("run-2") == {}


def test_a_row_fixed_in_the_warehouse_passes_on_a_later_run(store):
    first = validate([order(1), order(2, email="not-an-email"), order(3, total=D("25.00"))], run_id="run-1")
    store.record(first)
    assert {r["entity_id"] for r in store.open_rows()} == {2, 3}

    # Run 2: order 2 was fixed in the warehouse, order 3 still adds up wrong.
    second = validate([order(2), order(3, total=D("25.00"))], run_id="run-2")
    assert second.passed["order_id"].tolist() == [2]
    assert store.record(second) == {"recorded": 1, "resolved": 1}

    history = store.history("orders", 2)
    assert len(history) == 1
    assert history[0]["resolved_run_id"] == "run-2"
    assert history[0]["resolved_at"] > history[0]["quarantined_at"]

    # Order 3 is open once (its latest record), with both records in its history.
    open_rows = store.open_rows("orders")
    assert [(r["entity_id"], r["run_id"]) for r in open_rows] == [(3, "run-2")]
    assert [r["run_id"] for r in store.open_rows("orders", latest_only=False)] == ["run-1", "run-2"]
    assert store.counts_by_reason("run-1") == {"email_well_formed": 1, "order_total_matches": 1}
    assert store.counts_by_reason("run-2") == {"order_total_matches": 1}

    # Run 3: fixed too; both of its open records close.
    third = validate([order(3)], run_id="run-3")
    assert store.record(third)["resolved"] == 2
    assert store.open_rows() == []
    assert {r["resolved_run_id"] for r in store.history("orders", 3)} == {"run-3"}


def test_resolve_passed_directly_and_in_chunks(store):
    ids = list(range(1, 1301))
    outcome = validate([order(i, email="bad") for i in ids], run_id="run-1")
    assert store.record(outcome)["recorded"] == 1300
    # As pipeline code passes them: straight from the passed frame, numpy ints (or strings).
    assert store.resolve_passed("orders", np.array(ids[:1200], dtype=np.int64), "run-2") == 1200
    assert store.resolve_passed("orders", [str(i) for i in ids[1200:]] + ["9999"], "run-2") == 100
    assert store.resolve_passed("orders", ids, "run-3") == 0
    assert store.resolve_passed("customers", ids, "run-3") == 0
    assert store.open_rows() == []


def test_rows_without_an_id_stay_open(store):
    store.record(validate([order(1, order_id=None)], run_id="run-1"))
    store.record(validate([order(1)], run_id="run-2"))
    (open_row,) = store.open_rows("orders")
    assert open_row["entity_id"] is None and open_row["reasons"] == ["order_id_present: order_id is missing"]


def test_record_rows_built_elsewhere(store, engine):
    from storesync.quality import QuarantinedRow
    from storesync.quality.store import quarantine

    # As the pipeline holds back an order whose line failed: a row straight from a DataFrame.
    frame = pd.DataFrame([order(7)])
    frame["created_at"] = pd.to_datetime(frame["created_at"])
    row = frame.to_dict("records")[0]
    held = QuarantinedRow("orders", np.int64(7), ["order_line_quarantined: a line of this order failed"], row)
    assert store.record_rows([held], run_id="run-1", batch_id="orders-0") == 1
    assert store.record_rows([], run_id="run-1", batch_id="orders-0") == 0

    (stored,) = store.open_rows("orders")
    assert stored["entity_id"] == 7 and stored["row"]["created_at"] == "2025-05-01T08:00:00"
    assert store.counts_by_reason("run-1") == {"order_line_quarantined": 1}
    with engine.connect() as conn:
        raw = conn.execute(select(quarantine.c.reasons, quarantine.c.row)).one()
    assert json.loads(raw.reasons) == ["order_line_quarantined: a line of this order failed"]
    assert json.loads(raw.row)["total"] == "19.60"


def test_entities_are_kept_apart(store):
    from storesync.quality import validate_batch

    customers = validate_batch(
        "customers",
        pd.DataFrame([dict(
            customer_id=2, email="x", first_name=None, last_name=None, phone=None, company=None,
            address_1=None, city=None, state=None, state_code=None, country=None, country_code=None,
            postal_code=None,
            accepts_marketing=True, created_at=dt.datetime(2025, 1, 1), updated_at=dt.datetime(2025, 1, 1),
        )]),
        run_id="run-1", batch_id="c0", now=NOW,
    )
    store.record(customers)
    store.record(validate([order(2, email="y")], run_id="run-1"))
    assert store.resolve_passed("orders", [2], "run-2") == 1
    assert [(r["entity"], r["entity_id"]) for r in store.open_rows()] == [("customers", 2)]
    assert store.counts_by_reason("run-1") == {"email_well_formed": 2}


def test_open_ids_are_the_keys_of_open_records(store):
    from storesync.quality.store import entity_key

    store.record(validate([order(1, email="bad"), order(2, email="bad"), order(3, order_id=None)], run_id="run-1"))
    assert store.open_ids("orders") == {"1", "2"}  # no key for a row without an id
    store.record(validate([order(1)], run_id="run-2"), resolve=False)
    assert store.open_ids("orders") == {"1", "2"}  # passed, but not resolved yet
    store.resolve_passed("orders", [1], "run-2")
    assert store.open_ids("orders") == {"2"} and store.open_ids("customers") == set()
    assert {entity_key(v) for v in (2, 2.0, np.int64(2), "2")} == {"2"}


OPEN_INDEX = "ix_storesync_quarantine_open"


def test_an_older_table_gets_the_open_rows_index(engine):
    """A table created before the partial index existed gets it from ensure_table (idempotently),
    records intact; a fresh table has it from the start."""
    from storesync.quality import QuarantineStore
    from storesync.quality.store import TABLE_NAME, quarantine

    with engine.begin() as conn:  # the table as an older storesync created it
        quarantine.create(conn)
        conn.exec_driver_sql(f"DROP INDEX {OPEN_INDEX}")
    assert OPEN_INDEX not in {i["name"] for i in inspect(engine).get_indexes(TABLE_NAME)}
    old = QuarantineStore(engine)
    old.record(validate([order(1, email="bad")], run_id="run-1"))

    QuarantineStore(engine).ensure_table()
    QuarantineStore(engine).ensure_table()  # again: nothing to do, no error
    (index,) = [i for i in inspect(engine).get_indexes(TABLE_NAME) if i["name"] == OPEN_INDEX]
    assert index["column_names"] == ["entity", "resolved_at", "entity_id"]
    assert QuarantineStore(engine).open_ids("orders") == {"1"}


def test_open_records_are_read_through_the_partial_index(tmp_path):
    """open_ids, open_rows and resolve_passed read only the open records (EXPLAIN QUERY PLAN on
    SQLite), not the entity's whole quarantine history through (entity, entity_id)."""
    from sqlalchemy import event

    from storesync.quality import QuarantineStore

    # A query plan is per database: SQLite's (no statistics, so the index choice is the schema's).
    engine = create_engine(f"sqlite:///{tmp_path / 'quarantine.db'}")
    ticks = itertools.count()
    store = QuarantineStore(engine, clock=lambda: NOW + dt.timedelta(minutes=next(ticks)))
    store.record(validate([order(i, email="bad") for i in range(1, 6)], run_id="run-1"))
    store.resolve_passed("orders", [1, 2, 3], "run-2")
    plans: list[tuple[str, list[str]]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def explain(conn, cursor, statement, parameters, context, executemany):
        if "storesync_quarantine" in statement and statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            details = cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            plans.append((statement, [row[3] for row in details]))

    assert store.open_ids("orders") == {"4", "5"}
    assert [r["entity_id"] for r in store.open_rows("orders")] == [4, 5]
    assert store.resolve_passed("orders", [4], "run-3") == 1
    event.remove(engine, "before_cursor_execute", explain)

    assert len(plans) == 4  # open_ids, open_rows, resolve_passed's read and its update
    for statement, details in plans:
        searches = [d for d in details if d.startswith(("SEARCH", "SCAN"))]
        assert searches and all(OPEN_INDEX in d for d in searches), (statement, details)
