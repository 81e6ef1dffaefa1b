"""A run before a vendor's credentials are set fails before anything is read or planned (rows planned
then sat under account key ``unconfigured`` for good), saying where each credential goes; and a ledger
that already holds such rows recovers without SQL (``storesync ledger move-account --merge-unsent``)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from acme_store import AcmeStore, write_models
from sqlalchemy import create_engine, func, inspect, select

from storesync.cli import main
from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.errors import ConfigurationError
from storesync.core.windows import Window
from storesync.delivery.ledger import Ledger, LedgerConflict, PlannedDelivery, deliveries, record_log

DAY = datetime(2026, 11, 10)


@pytest.fixture
def acme(tmp_path):
    """A store of its own schema with an order in the day, and its models."""
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    store.customer(1, DAY)
    store.product(1, DAY)
    store.order(1, 1, DAY + timedelta(hours=3))
    yield store, write_models(tmp_path / "models")
    store.dispose()


def _deliveries(ledger_url: str) -> int:
    engine = create_engine(ledger_url)
    try:
        if not inspect(engine).has_table(deliveries.name):
            return 0
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(deliveries)).scalar_one()
    finally:
        engine.dispose()


def test_a_sync_without_tokens_stops_before_planning_and_says_where_they_go(tmp_path, acme, capsys,
                                                                           monkeypatch):
    store, models = acme
    for name in ("SENDLANE_API_TOKEN", "SENDLANE_INTEGRATION_TOKEN", "SAILTHRU_API_KEY", "SAILTHRU_SECRET"):
        monkeypatch.delenv(f"STORESYNC_{name}", raising=False)
    config = tmp_path / "storesync.toml"
    config.write_text(f'models_dir = "{models}"\n[sendlane]\nbase_url = "http://127.0.0.1:9/sendlane"\n'
                      '[sailthru]\nbase_url = "http://127.0.0.1:9/sailthru"\napi_key = "k"\n')
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    code = main(["--config", str(config), "sync", "--warehouse-url", store.url, "--ledger-url", ledger_url,
                 "--start", "2026-11-10", "--end", "2026-11-11"])
    err = capsys.readouterr().err
    assert code == 2, err
    for where in ("STORESYNC_SENDLANE_API_TOKEN", "STORESYNC_SENDLANE_INTEGRATION_TOKEN", "[sendlane]",
                  "STORESYNC_SAILTHRU_SECRET", "api_token", "Nothing was extracted or planned"):
        assert where in err
    assert "STORESYNC_SAILTHRU_API_KEY" not in err, "the key that is set is not asked for"
    assert _deliveries(ledger_url) == 0

    # A dry run keeps nothing: it may run before the credentials are set (here on the store's own models).
    settings = Settings(warehouse_url=store.url, ledger_url=ledger_url, models_dir=models)
    from storesync.pipeline.jobs import run_nightly

    summary = run_nightly(settings, Window(DAY, DAY + timedelta(days=1)), run_id="dry", dry_run=True)
    assert summary["rows"]["orders"]["rows_in"] == 1 and _deliveries(ledger_url) == 0


def test_airflow_tasks_and_the_historical_sync_hit_the_same_check(tmp_path, acme):
    from storesync.pipeline.historical import HistoricalRequest, run_historical
    from storesync.provider import tasks
    from storesync.provider.failures import CONFIGURATION, explain

    store, models = acme
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = Settings(warehouse_url=store.url, ledger_url=ledger_url, models_dir=models,
                        sendlane=SendlaneSettings(api_token="t"),  # no integration token
                        sailthru=SailthruSettings(api_key="k", secret="s"))
    run = tasks.SyncRun(settings=settings, window=Window(DAY, DAY + timedelta(days=1)), dag_id="d",
                        run_id="r", ledger_run_id="d/r/orders")
    with pytest.raises(ConfigurationError, match="integration_token") as caught:
        tasks.plan("orders", run, sync_name="order_events", vendors=["sendlane", "sailthru"])
    failure = explain(caught.value, vendor=None)
    assert failure.kind == CONFIGURATION and "extra integration_token" in str(failure)
    request = HistoricalRequest(entities=("orders",), start=date(2026, 11, 10), end=date(2026, 11, 10),
                                vendors=("sendlane",), dry_run=False)
    with pytest.raises(ConfigurationError, match="STORESYNC_SENDLANE_INTEGRATION_TOKEN"):
        run_historical(settings, request, "orders", run_id_prefix="h")
    assert _deliveries(ledger_url) == 0


# ---------------------------------------------------------------------------- recovering stranded rows
def _planned(ledger: Ledger, account: str, entities, run_id: str) -> None:
    ledger.plan([PlannedDelivery(vendor="sendlane", account=account, event_type="order_placed", entity_id=e,
                                 version="1", endpoint="/x", payload={"id": e}) for e in entities],
                sync_name="nightly", run_id=run_id)
    ledger.promote(run_id)


def test_rows_planned_under_unconfigured_merge_into_the_real_key(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    _planned(ledger, "unconfigured", ["1", "2", "3"], "before-tokens")   # the run before the tokens
    _planned(ledger, "acct", ["1", "2"], "after-tokens")                  # planned again under the real key
    args = ["ledger", "move-account", "--ledger-url", url, "--vendor", "sendlane", "--from", "unconfigured",
            "--to", "acct"]
    assert main(args) == 1
    assert "--merge-unsent" in capsys.readouterr().err

    assert main([*args, "--merge-unsent"]) == 0
    captured = capsys.readouterr()
    assert '"dropped_unsent": 2' in captured.out and '"storesync_deliveries": 1' in captured.out
    assert "dropped 2 sendlane deliveries" in captured.err
    assert ledger.open_by_account("sendlane") == {"acct": 3}
    with ledger.engine.connect() as conn:
        lines = conn.execute(select(record_log.c.entity_id, record_log.c.status, record_log.c.error)).all()
    assert sorted((e, s) for e, s, _ in lines) == [("1", "dropped"), ("2", "dropped")]
    assert all("unconfigured" in error for _, _, error in lines)


def test_a_twin_that_may_have_left_still_refuses_the_merge(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    _planned(ledger, "unconfigured", ["1", "2"], "before")
    _planned(ledger, "acct", ["1", "2"], "after")
    [claimed] = ledger.claim("sendlane", "unconfigured", 1, owner="elsewhere:1:x")
    ledger.release([claimed])  # claimed once (it may have been sent), then put back: not droppable
    with pytest.raises(LedgerConflict, match="1 of them may have left"):
        ledger.move_account("sendlane", "unconfigured", "acct", merge_unsent=True)
    assert ledger.open_by_account("sendlane") == {"unconfigured": 2, "acct": 2}
