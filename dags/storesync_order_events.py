"""
### Order events → Sendlane and Sailthru (hourly)

Orders whose status changed in the run's data interval pass the quality gate, become
placed / fulfilled / cancelled / refunded events, and are delivered once to each vendor:
Sendlane order events, Sailthru purchases and returns. Backfills and catch-up are exact: a run
extracts exactly its interval, and the delivery ledger makes a rerun send nothing twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task

from storesync.provider.notifiers import alert_callbacks

VENDORS = ["sendlane", "sailthru"]
SYNC = "order_events"


@dag(
    # A data-interval timetable: Airflow 3's "@hourly" gives runs an empty interval by default.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["storesync", "orders", "sendlane", "sailthru"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=2)},
    doc_md=__doc__,
    on_failure_callback=alert_callbacks(),
)
def storesync_order_events():
    @task
    def plan_order_events(**context) -> dict:
        from storesync.provider import tasks

        return tasks.plan("orders", context, sync_name=SYNC, vendors=VENDORS)

    @task(max_active_tis_per_dagrun=2)
    def deliver(vendor: str, **context) -> dict:
        from storesync.provider import tasks

        return tasks.deliver(vendor, context, sync_name=SYNC)

    @task(outlets=[Asset("storesync://ledger/order_events")])
    def finish(**context) -> dict:
        from storesync.provider import tasks

        return tasks.finish(context, sync_name=SYNC)

    planned = plan_order_events()
    delivered = deliver.expand(vendor=VENDORS)
    planned >> delivered >> finish()


storesync_order_events()
