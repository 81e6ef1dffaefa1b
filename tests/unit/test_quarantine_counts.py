"""Open quarantine is counted in rows, not records: every run that reads a still-bad row records it
again, so one orphan line planned by four runs is one open row (four records), in the view and in
the monitor's quarantine spikes."""

from __future__ import annotations

from datetime import datetime, timedelta

from acme_store import AcmeStore, write_models
from sqlalchemy import create_engine, func, select

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.pipeline.jobs import open_context, plan_entity
from storesync.quality.store import quarantine
from storesync.ui.queries import LedgerReader

WINDOW = Window(datetime(2026, 11, 10), datetime(2026, 11, 11))


def test_a_row_recorded_by_four_runs_is_one_open_row(tmp_path):
    from storesync.provider.tasks import quarantine_spikes

    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    settings = Settings(warehouse_url=store.url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
                        models_dir=write_models(tmp_path / "models"), quarantine_thresholds={"*": 1.0},
                        sendlane=SendlaneSettings(api_token="t", integration_token="t"),
                        sailthru=SailthruSettings(api_key="k", secret="s"))
    store.customer(1, WINDOW.start)
    store.product(1, WINDOW.start)
    store.order(1, 1, WINDOW.start + timedelta(hours=3))
    store.item(55, 9, WINDOW.start + timedelta(hours=5))  # order 9 does not exist: an orphan line
    store.item(56, 8, WINDOW.start + timedelta(hours=6))  # and another
    for n in range(4):  # the hourly run, its retry, a backfill...: each reads the window again
        ctx = open_context(settings, run_id=f"run-{n}", sync_name="order_events", now=WINDOW.end)
        assert plan_entity(ctx, "orders", WINDOW)["entities"]["order_lines"]["quarantined"] == 2
    store.dispose()

    engine = create_engine(settings.ledger_url)
    reader = LedgerReader(engine, clock=lambda: WINDOW.end)
    [lines] = [e for e in reader.quarantine()["entities"] if e["entity"] == "order_lines"]
    assert (lines["open"], lines["fixed"], lines["open_records"]) == (2, 0, 8)
    # The interval that holds the eight records (as the store stamped them) saw two rows quarantined.
    with engine.connect() as conn:
        first, last = conn.execute(select(func.min(quarantine.c.quarantined_at),
                                          func.max(quarantine.c.quarantined_at))).one()
    spikes = quarantine_spikes(engine, first, last + timedelta(seconds=1), min_rows=1)
    assert [(s["entity"], s["quarantined"]) for s in spikes] == [("order_lines", 2)]
    engine.dispose()
