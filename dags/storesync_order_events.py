"""
### Order events → Sendlane and Sailthru (hourly)

Orders whose status changed in the run's data interval pass the quality gate, become
placed / fulfilled / cancelled / refunded events, and are delivered once to each vendor:
Sendlane order events, Sailthru purchases and returns. Backfills and catch-up are exact: a run
extracts exactly its interval, and the delivery ledger makes a rerun send nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable

from storesync.provider.dag_parts import default_args, sync_chain
from storesync.provider.stores import load_stores


def build(store):
    with DAG(
        dag_id=store.dag_id("order_events"),
        description="Order status changes of the last hour -> Sendlane order events and Sailthru purchases/returns",
        # A data-interval timetable: Airflow 3's "@hourly" gives runs an empty interval by default.
        schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "orders", *store.vendors, *store.tags],
        default_args=default_args(),
        doc_md=__doc__,
    ) as dag:
        sync_chain(store, sync="order_events", entity="orders", plan_task_id="plan_order_events")
    return dag


for _store in load_stores(Path(__file__).parent):
    build(_store)
