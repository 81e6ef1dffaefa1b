"""`storesync sync` without `--end` on any schema (issue 17.9): "now" is the store's latest activity,
found through its order_changes model, not the demo's status-history table."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from acme_store import AcmeStore, write_models

from storesync.cli import main
from storesync.warehouse.activity import latest_activity
from storesync.warehouse.models import Warehouse

PLACED = datetime(2026, 11, 10, 14, 25)


@pytest.fixture
def acme(tmp_path):
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    models = write_models(tmp_path / "models")
    store.customer(1, PLACED - timedelta(days=30))
    store.product(1, PLACED - timedelta(days=30))
    store.order(1, 1, PLACED - timedelta(days=3))
    store.order(2, 1, PLACED, state="fulfilled", touched=PLACED + timedelta(days=1, minutes=7))
    yield store, models
    store.dispose()


def reads(warehouse: Warehouse) -> list:
    """Count the model reads (windows) a call makes."""
    seen = []
    stream = warehouse.stream

    def counting(model, window, chunk_size):
        seen.append(window)
        return stream(model, window, chunk_size)

    warehouse.stream = counting
    return seen


def test_latest_activity_is_the_hour_after_the_last_change_found_in_few_reads(acme):
    store, models = acme
    warehouse = Warehouse(store.url, models)
    seen = reads(warehouse)
    latest = PLACED + timedelta(days=1, minutes=7)  # the fulfilment, ISO text in a table of Acme's own
    assert latest_activity(warehouse, now=datetime(2026, 12, 7, 15, 20)) == datetime(2026, 11, 11, 15)
    assert len(seen) < 25, "a walk back and a bisection, not an hour-by-hour scan"
    # A live store: its last hour answers at once.
    assert latest_activity(warehouse, now=latest + timedelta(minutes=1)) == datetime(2026, 11, 11, 15)
    # Nothing at or before "now": no activity (never a change from the future).
    assert latest_activity(warehouse, now=datetime(2026, 10, 1)) is None


def test_sync_without_end_runs_on_a_schema_that_is_not_the_demos(acme, tmp_path, capsys):
    store, models = acme
    config = tmp_path / "storesync.toml"
    config.write_text(f'warehouse_url = "{store.url}"\nledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
                      f'models_dir = "{models}"\n[quarantine_thresholds]\n"*" = 1.0\n')
    assert main(["--config", str(config), "sync", "--dry-run", "--json", "--hours", "48"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    window = summary.get("window") or {}
    assert window == {"start": "2026-11-09T15:00:00", "end": "2026-11-11T15:00:00"} or (
        "[2026-11-09T15:00:00 .. 2026-11-11T15:00:00)" in out), "the window ends the hour after the last change"
    assert summary["planned"]["sendlane:order_placed"] == 1 and summary["planned"]["sendlane:order_fulfilled"] == 1


def test_sync_without_end_on_an_empty_store_says_what_to_do(tmp_path, capsys):
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    config = tmp_path / "storesync.toml"
    config.write_text(f'warehouse_url = "{store.url}"\nledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
                      f'models_dir = "{write_models(tmp_path / "models")}"\n')
    assert main(["--config", str(config), "sync", "--dry-run"]) == 1
    assert "--end" in capsys.readouterr().err
    store.dispose()
