"""The ledger's schema check on open: a ledger already at this code's schema costs one SELECT per
task (no DDL, no catalog queries); an older or changed one is still brought up to date."""

from __future__ import annotations

from sqlalchemy import create_engine, event, inspect, text

from storesync.delivery import ledger as ledger_module
from storesync.delivery.ledger import Ledger, deliveries


def _statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: seen.append(" ".join(statement.split())))
    return seen


def test_opening_a_current_ledger_runs_one_select_and_no_ddl(db_url):
    Ledger(db_url)  # a new ledger: tables, indexes and the fingerprint
    engine = create_engine(db_url)
    seen = _statements(engine)
    Ledger(engine)
    assert len(seen) == 1 and seen[0].upper().startswith("SELECT"), seen
    assert "storesync_ledger_schema" in seen[0]
    engine.dispose()


def test_a_ledger_at_another_schema_is_migrated_and_then_recorded(db_url):
    Ledger(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:  # as if written by an older storesync: an index missing
        conn.execute(text("DROP INDEX ix_deliveries_open_window"))
        conn.execute(text("UPDATE storesync_ledger_schema SET fingerprint = 'older'"))
    Ledger(engine)
    assert "ix_deliveries_open_window" in {i["name"] for i in inspect(engine).get_indexes(deliveries.name)}
    with engine.connect() as conn:
        recorded = conn.execute(text("SELECT fingerprint FROM storesync_ledger_schema")).scalars().all()
    assert recorded == [ledger_module.schema_fingerprint()]
    engine.dispose()


def test_a_ledger_without_the_marker_gets_the_full_check(db_url):
    """Ledgers made before the marker (or by the tests' schema helper) are checked in full once."""
    engine = create_engine(db_url)
    ledger_module.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_deliveries_open_window"))
    Ledger(engine)
    assert "ix_deliveries_open_window" in {i["name"] for i in inspect(engine).get_indexes(deliveries.name)}
    engine.dispose()


def test_the_fingerprint_follows_the_code_schema(monkeypatch):
    before = ledger_module.schema_fingerprint()
    monkeypatch.setattr(ledger_module, "_ADDED_COLUMNS",
                        {**ledger_module._ADDED_COLUMNS, "storesync_deliveries": {"new_column": "TEXT"}})
    ledger_module.schema_fingerprint.cache_clear()
    try:
        assert ledger_module.schema_fingerprint() != before
    finally:
        monkeypatch.undo()
        ledger_module.schema_fingerprint.cache_clear()
    assert ledger_module.schema_fingerprint() == before
