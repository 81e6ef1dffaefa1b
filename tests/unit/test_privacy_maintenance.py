"""The maintenance DAG and its operators: the DAG parses with its two tasks in order, the
erasure operator erases the erasure_requests model's people once (a second run finds nobody new),
and the retention operator scrubs by [retention] days."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, select, text

from storesync.core.config import DEFAULT_MODELS_DIR, SailthruSettings, SendlaneSettings, Settings
from storesync.delivery.ledger import Ledger, PlannedDelivery, deliveries, erasures
from storesync.privacy.operators import StoresyncErasureOperator, StoresyncRetentionOperator
from storesync.provider.tasks import SyncRun
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


def test_maintenance_dag_erases_then_scrubs():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / "storesync_maintenance.py"))
    assert bag.import_errors == {}
    dag = bag.dags["storesync_maintenance"]
    assert [t.task_id for t in dag.topological_sort()] == ["erase_requested", "retention"]
    assert all(t.retries >= 1 for t in dag.tasks) and "privacy" in dag.tags


def _run(settings: Settings) -> SyncRun:
    return SyncRun(settings=settings, window=None, dag_id="storesync_maintenance", run_id="manual",
                   ledger_run_id="storesync_maintenance/manual")


def test_erasure_operator_erases_the_models_people_once(tmp_path, emulator):
    warehouse = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(warehouse, DemoStoreSpec(orders=40, seed=3, end=datetime(2026, 11, 20), days=3))
    with create_engine(warehouse).begin() as conn:
        cid, email = conn.execute(text("SELECT customer_id, email FROM customers WHERE email LIKE '%@%' "
                                       "ORDER BY customer_id LIMIT 1")).one()
        conn.execute(text("CREATE TABLE gdpr_requests (customer_id INTEGER, asked_at TIMESTAMP)"))
        conn.execute(text("INSERT INTO gdpr_requests VALUES (:c, '2026-11-19 10:00:00')"), {"c": cid})
    models = tmp_path / "sql"
    shutil.copytree(DEFAULT_MODELS_DIR, models)
    (models / "erasure_requests.sql").write_text(
        "SELECT NULL AS email, customer_id, asked_at AS requested_at FROM gdpr_requests")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(ledger_url)
    ledger.plan([PlannedDelivery(vendor="sendlane", account="a", event_type="customer_added", entity_id=str(cid),
                                 version="1", endpoint="/tracking/customer-added",
                                 payload={"customer_id": cid, "email": email})], sync_name="customers", run_id="r")
    settings = Settings(
        warehouse_url=warehouse, ledger_url=ledger_url, models_dir=models, data_dir=tmp_path,
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret))
    operator = StoresyncErasureOperator(task_id="erase_requested")

    first = operator.run_job(_run(settings), {})
    again = operator.run_job(_run(settings), {})

    # Neither vendor had them (nothing was sent): "not found" is a completed deletion.
    assert first["ok"] and first["people"] == 1 and first["vendors"]["sailthru"] == {
        "deleted": 0, "not found": 1, "not confirmed": 0, "failed": 0}
    assert first["scrubbed"]["storesync_deliveries"] == 1
    assert again["people"] == 0
    with ledger.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.payload)).scalar() == '{"erased": true}'
        audit = conn.execute(select(erasures)).mappings().all()
    assert {a["source"] for a in audit} == {"model"} and all(a["erased_at"] for a in audit)
    # When they asked (the model's requested_at), for both their customer id and their email.
    assert {a["requested_at"] for a in audit} == {datetime(2026, 11, 19, 10)} and len(audit) == 2
    assert email.lower() not in json.dumps([dict(a) for a in audit], default=str).lower()


def test_retention_operator_uses_the_settings_days_unless_told(tmp_path):
    settings = Settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", data_dir=tmp_path)
    Ledger(settings.ledger_url)
    report = StoresyncRetentionOperator(task_id="retention").run_job(_run(settings), {})
    cutoff = datetime.fromisoformat(report["cutoff"])
    assert abs((datetime.utcnow() - timedelta(days=30)) - cutoff) < timedelta(minutes=5)
    report = StoresyncRetentionOperator(task_id="retention", days="7").run_job(_run(settings), {})
    assert abs((datetime.utcnow() - timedelta(days=7)) - datetime.fromisoformat(report["cutoff"])) < timedelta(minutes=5)
