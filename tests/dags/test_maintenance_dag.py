"""The maintenance DAG end to end with ``dag.test()`` (issue 22): on a demo store synced into the
emulator, a customer listed by the ``erasure_requests`` model (a table of the store's requests) is
erased at both vendors and from the ledger by ``erase_requested``, then ``retention`` scrubs
every other delivery accepted more than 30 days ago. Nothing of the customer is left in the
emulator or in any storesync table; every other payload is scrubbed."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest
from personal_data import emulator_holds, traces
from sqlalchemy import create_engine, select, text
from test_dag_suite import load_dag, vendors  # noqa: F401 (a fixture)

from storesync.core.config import DEFAULT_MODELS_DIR, load_settings
from storesync.core.windows import Window
from storesync.delivery.ledger import ACCEPTED, deliveries, erasures
from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity
from storesync.privacy.erasure import ERASED_PAYLOAD
from storesync.privacy.retention import SCRUBBED_PAYLOAD

pytestmark = pytest.mark.airflow
UTC = timezone.utc


def _requested_person(env) -> dict:
    """The buyer of the window's first order (with a customer account), whose profile changed in
    the window too (so it is synced), asks to be erased."""
    engine = create_engine(env["STORESYNC_WAREHOUSE_URL"])
    with engine.begin() as conn:
        person = dict(conn.execute(text(
            "SELECT c.customer_id, c.email, c.first_name, c.last_name, c.address_1, c.phone"
            "  FROM orders o JOIN customers c ON c.customer_id = o.customer_id"
            " WHERE o.updated_at >= :s AND c.email LIKE '%@%' ORDER BY o.order_id LIMIT 1"),
            {"s": env["end"] - timedelta(hours=12)}).mappings().one())
        conn.execute(text("UPDATE customers SET updated_at = :t WHERE customer_id = :c"),
                     {"t": env["end"] - timedelta(hours=1), "c": person["customer_id"]})
        conn.execute(text("CREATE TABLE gdpr_requests (customer_id INTEGER, asked_at TIMESTAMP)"))
        conn.execute(text("INSERT INTO gdpr_requests VALUES (:c, :t)"),
                     {"c": person["customer_id"], "t": env["end"]})
    engine.dispose()
    return person


def test_maintenance_dag_erases_the_models_people_then_scrubs_what_is_past_retention(
        airflow_db, vendors, tmp_path, monkeypatch):  # noqa: F811 (the fixture)
    emulator = vendors["emulator"]
    models = tmp_path / "sql"
    shutil.copytree(DEFAULT_MODELS_DIR, models)
    (models / "erasure_requests.sql").write_text(
        "SELECT NULL AS email, customer_id, asked_at AS requested_at FROM gdpr_requests")
    monkeypatch.setenv("STORESYNC_MODELS_DIR", str(models))
    person = _requested_person(vendors)

    # Half a day of customers and orders synced (as their DAGs would), accepted 40 days ago.
    settings = load_settings()
    ctx = open_context(settings, run_id="synced", sync_name="nightly")
    window = Window(vendors["end"] - timedelta(hours=12), vendors["end"])
    for entity in ("customers", "orders"):
        plan_entity(ctx, entity, window)
    for vendor in ("sendlane", "sailthru"):
        deliver_vendor(ctx, vendor)
    ledger = create_engine(vendors["STORESYNC_LEDGER_URL"])
    with ledger.begin() as conn:
        assert set(conn.execute(select(deliveries.c.state)).scalars()) == {ACCEPTED}
        conn.execute(deliveries.update().values(accepted_at=datetime.utcnow() - timedelta(days=40)))
        total = conn.execute(select(deliveries.c.id)).all()
    assert traces([vendors["STORESYNC_LEDGER_URL"]], [person]), "their payloads were sent"
    assert {"users", "purchases", "records"} <= set(emulator_holds(emulator, person))

    run = load_dag("storesync_maintenance").test(logical_date=datetime(2026, 11, 21, 3, 30, tzinfo=UTC))

    assert run.state == "success"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {
        "erase_requested": "success", "retention": "success"}
    assert emulator_holds(emulator, person) == []
    assert traces([vendors["STORESYNC_LEDGER_URL"]], [person]) == []
    with ledger.connect() as conn:
        payloads = [p for p in conn.execute(select(deliveries.c.payload)).scalars()]
        audit = conn.execute(select(erasures)).mappings().all()
    erased = payloads.count(ERASED_PAYLOAD)
    assert erased >= 2 and erased + payloads.count(SCRUBBED_PAYLOAD) == len(payloads) == len(total)
    assert {a["source"] for a in audit} == {"model"} and all(a["erased_at"] for a in audit)
    assert all(json.loads(a["vendors"]) == {"sailthru": "deleted", "sendlane": "deleted"} for a in audit)
    ledger.dispose()
