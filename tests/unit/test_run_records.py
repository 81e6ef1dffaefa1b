"""Every run record is finished: a dry run, and a run whose delivery raised, no longer stay
``running`` with no ``finished_at``; the UI's last runs show what happened."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from acme_store import AcmeStore, write_models
from sqlalchemy import select

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.delivery.ledger import Ledger, sync_runs
from storesync.pipeline.jobs import DELIVERY_FAILED, run_nightly
from storesync.ui.queries import LedgerReader

DAY = datetime(2026, 11, 10)
WINDOW = Window(DAY, DAY + timedelta(days=1))


@pytest.fixture
def settings(tmp_path):
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    store.customer(1, DAY)
    store.product(1, DAY)
    store.order(1, 1, DAY + timedelta(hours=3))
    yield Settings(warehouse_url=store.url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
                   models_dir=write_models(tmp_path / "models"),
                   sendlane=SendlaneSettings(api_token="t", integration_token="t"),
                   sailthru=SailthruSettings(api_key="k", secret="s"))
    store.dispose()


def _record(settings, run_id):
    ledger = Ledger(settings.ledger_url)
    with ledger.engine.connect() as conn:
        return conn.execute(select(sync_runs).where(sync_runs.c.run_id == run_id)).one()


def test_a_dry_run_is_finished_and_shown_as_one(settings):
    run_nightly(settings, WINDOW, run_id="dry", dry_run=True)
    record = _record(settings, "dry")
    assert (record.status, record.dry_run) == ("success", True) and record.finished_at is not None
    [shown] = LedgerReader(Ledger(settings.ledger_url).engine).last_runs()
    assert (shown["status"], shown["dry_run"]) == ("success", True) and shown["duration_s"] is not None


def test_a_run_whose_delivery_raises_is_marked_and_its_window_still_counts_as_read(settings):
    def broken_client(vendor_settings):
        raise RuntimeError("the vendor client could not be built")

    with pytest.raises(RuntimeError, match="could not be built"):
        run_nightly(settings, WINDOW, run_id="night", vendors=("sendlane",),
                    client_factories={"sendlane": broken_client})
    record = _record(settings, "night")
    assert record.status == DELIVERY_FAILED and record.finished_at is not None
    assert "delivery to sendlane failed: the vendor client could not be built" in record.error
    ledger = Ledger(settings.ledger_url)
    assert ledger.open_by_account("sendlane"), "its planned deliveries wait in the ledger"
    [shown] = LedgerReader(ledger.engine).last_runs()
    assert shown["status"] == DELIVERY_FAILED and "could not be built" in shown["error"]


def test_an_airflow_deliver_task_that_fails_for_a_person_finishes_the_record(settings, emulator):
    from dataclasses import replace

    from storesync.delivery.ledger import PlannedDelivery
    from storesync.provider import tasks

    settings = replace(settings, sendlane=SendlaneSettings(
        base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
        integration_token=emulator.sendlane_integration_token))
    run = tasks.SyncRun(settings=settings, window=WINDOW, dag_id="d", run_id="r",
                        ledger_run_id="d/r/order_events")
    tasks.plan("orders", run, sync_name="order_events", vendors=["sendlane"])
    ledger = Ledger(settings.ledger_url)
    # A row this sync planned under an earlier account key: the deliver task stops for a person.
    ledger.plan([PlannedDelivery(vendor="sendlane", account="old-key", event_type="order_placed",
                                 entity_id="9", version="1", endpoint="/x", payload={})],
                sync_name="order_events", run_id="old")
    ledger.promote("old")
    with pytest.raises(tasks.OtherAccountsOpen):
        tasks.deliver("sendlane", run, sync_name="order_events")
    record = _record(settings, "d/r/order_events")
    assert record.status == DELIVERY_FAILED and record.finished_at is not None and "old-key" in record.error
