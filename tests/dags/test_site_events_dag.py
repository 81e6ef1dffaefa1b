"""The storefront-events DAG end to end with dag.test(): the demo store's Segment `tracks` table →
the gate → Sendlane (the emulator), each event once, a rerun sending nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.airflow

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def sendlane_only(monkeypatch, store_env):
    emulator = store_env["emulator"]
    monkeypatch.setenv("AIRFLOW_CONN_SENDLANE_DEFAULT", json.dumps({
        "conn_type": "sendlane", "host": emulator.sendlane_url, "password": emulator.sendlane_api_token,
        "extra": {"integration_token": emulator.sendlane_integration_token, "budget_per_minute": 6000}}))
    for name in ("AIRFLOW_CONN_STORESYNC_SLACK", "AIRFLOW_CONN_STORESYNC_SMTP"):
        monkeypatch.delenv(name, raising=False)
    return store_env


def test_site_events_dag_sends_each_event_once(airflow_db, sendlane_only):
    from airflow.dag_processing.dagbag import DagBag

    env, emulator = sendlane_only, sendlane_only["emulator"]
    engine = create_engine(env["STORESYNC_WAREHOUSE_URL"])
    with engine.connect() as conn:
        hour = conn.execute(text(
            "SELECT substr(timestamp, 1, 13) AS h FROM tracks WHERE context_traits_email IS NOT NULL "
            "GROUP BY h ORDER BY COUNT(*) DESC, h LIMIT 1")).scalar()
        hour_end = datetime.strptime(hour, "%Y-%m-%d %H") + timedelta(hours=1)
        expected = dict(conn.execute(text(
            "SELECT event, COUNT(*) FROM tracks WHERE context_traits_email IS NOT NULL "
            "AND timestamp >= :s AND timestamp < :e GROUP BY event"),
            {"s": hour_end - timedelta(hours=1), "e": hour_end}).all())
    engine.dispose()
    assert expected

    dag = DagBag(dag_folder=str(DAGS_DIR / "storesync_site_events.py")).get_dag("storesync_site_events")
    assert dag.test(logical_date=hour_end.replace(tzinfo=timezone.utc)).state == "success"
    viewed = emulator.requests(vendor="sendlane", endpoint="/tracking/product-viewed")
    added = emulator.requests(vendor="sendlane", endpoint="/tracking/added-to-cart")
    assert len(viewed) == expected.get("Product Viewed", 0) and len(added) == expected.get("Product Added", 0)
    assert not emulator.requests(vendor="sailthru")

    before = len(emulator.requests())
    assert dag.test(logical_date=hour_end.replace(tzinfo=timezone.utc)).state == "success"
    assert len(emulator.requests()) == before
