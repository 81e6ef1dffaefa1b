"""Several stores from one stores file: a second store's generated DAG runs against its own
warehouse and vendor account, beside the default store, in one shared ledger."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from tests.dags.test_dag_suite import busiest_hour, load_dag

pytestmark = pytest.mark.airflow

OUTLET = {"api_token": "outlet-api-token-0003", "integration_token": "outlet-integration-0003"}


def set_conn(monkeypatch, conn_id: str, value: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))


def test_a_second_stores_dag_syncs_its_own_warehouse_to_its_own_account(airflow_db, store_env, monkeypatch,
                                                                         tmp_path):
    from storesync.core.config import fingerprint
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    emulator = store_env["emulator"]
    emulator.configure(sendlane_accounts={"outlet": OUTLET})
    outlet_store = tmp_path / "outlet_store.db"
    generate_demo_store(f"sqlite:///{outlet_store}",
                        DemoStoreSpec(orders=200, seed=11, end=datetime(2026, 11, 20), days=3, bad_share=0.0))
    ledger = tmp_path / "shared_ledger.db"
    stores = tmp_path / "stores.toml"
    stores.write_text('[stores.default]\n\n[stores.outlet]\nwarehouse_conn_id = "outlet_warehouse"\n'
                      'sendlane_conn_id = "sendlane_outlet"\n')
    monkeypatch.setenv("STORESYNC_STORES", str(stores))
    set_conn(monkeypatch, "storesync_ledger", {"conn_type": "sqlite", "host": str(ledger)})
    set_conn(monkeypatch, "outlet_warehouse", {"conn_type": "sqlite", "host": str(outlet_store)})
    set_conn(monkeypatch, "sendlane_outlet", {
        "conn_type": "sendlane", "host": emulator.sendlane_url, "password": OUTLET["api_token"],
        "extra": {"integration_token": OUTLET["integration_token"], "budget_per_minute": 6000}})

    outlet_env = {"STORESYNC_WAREHOUSE_URL": f"sqlite:///{outlet_store}"}
    hour_end = busiest_hour(outlet_env, "SELECT changed_at AS updated_at FROM order_status_history")
    run = load_dag("storesync_outlet_order_events", "storesync_order_events").test(logical_date=hour_end)
    assert run.state == "success"

    start, end = (hour_end - timedelta(hours=1)).replace(tzinfo=None), hour_end.replace(tzinfo=None)
    with create_engine(f"sqlite:///{outlet_store}").connect() as conn:
        placed = {str(o) for o in conn.execute(text(  # an order is placed by its first status change
            "SELECT order_id FROM order_status_history GROUP BY order_id "
            "HAVING MIN(changed_at) >= :s AND MIN(changed_at) < :e"), {"s": start, "e": end}).scalars()}
    sent = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                                  endpoint="/tracking/order-placed"))
    assert placed and set(sent) == placed and set(sent.values()) == {1}  # the outlet's own orders, once
    posts = [r for r in emulator.requests() if r["method"] == "POST"]
    assert {(r["vendor"], r["account"]) for r in posts} == {("sendlane", "outlet")}  # no Sailthru, no other account
    with create_engine(f"sqlite:///{ledger}").connect() as conn:
        keys = set(conn.execute(text("SELECT DISTINCT account || ' ' || sync_name FROM storesync_deliveries"))
                   .scalars())
        marks = set(conn.execute(text("SELECT sync_name FROM storesync_watermarks")).scalars())
    assert keys == {f"{fingerprint(OUTLET['api_token'])} outlet.order_events"}
    assert marks == {"outlet.order_events"}  # the default store's watermark untouched
