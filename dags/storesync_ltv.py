"""
### Customer lifetime value, daily, and the profiles that carry it

1. **compute_ltv**: `run_ltv(warehouse, as_of=<the interval's date>)`, inside the warehouse in
   SQL: order count, gross/net revenue, average order value, first/last order, tenure, then the
   BG/NBD + Gamma-Gamma predictions (expected purchases, probability alive, predicted CLV) into
   `storesync_customer_ltv` (a view: a day writes only the customers whose figures moved), with
   as-of order statuses, so any day can be rerun or backfilled and gives the same numbers. A store without repeat
   buyers yet gets the historic figures only (logged, not failed). When the day before was
   computed, only the customers with news since are touched (see `compute_historic_ltv`);
   trigger with `full_recompute` to recompute everyone (e.g. after correcting old orders).
2. **push_profiles**: for the newest LTV day only, every customer's profile with its LTV fields
   (`ltv_order_count`, `ltv_net_revenue`, `ltv_predicted_clv`, `ltv_p_alive`) is planned:
   Sailthru user `vars` and, with a Sendlane list configured, Sendlane contact custom fields.
   Content-hash versions send only the profiles whose figures changed. A backfilled (older) day
   recomputes its numbers but pushes nothing, so newer figures are never overwritten.
3. **deliver** per vendor and **finish** (watermark `ltv_profiles`; `compute_ltv` advances `ltv`).

Assets: reads `storesync://ledger/order_events` (lineage), updates
`storesync://warehouse/customer_ltv`, which the customers DAG reads. The schedule stays on time
(`@daily`, UTC) rather than on the asset, so each run's `as_of` is its own day, exactly, under
catch-up and backfills.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from storesync.provider.notifiers import alert_callbacks

VENDORS = ["sendlane", "sailthru"]
SYNC = "ltv_profiles"
LTV_ASSET = Asset("storesync://warehouse/customer_ltv")


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["storesync", "ltv", "customers", "sendlane", "sailthru"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={"full_recompute": Param(False, type="boolean",
                                    description="Recompute every customer from all orders, not from the day before")},
    doc_md=__doc__,
    on_failure_callback=alert_callbacks(),
)
def storesync_ltv():
    @task(inlets=[Asset("storesync://ledger/order_events")], outlets=[LTV_ASSET])
    def compute_ltv(**context) -> dict:
        from storesync.provider import tasks

        return tasks.compute_ltv(context)

    @task
    def push_profiles(**context) -> dict:
        from storesync.provider import tasks

        return tasks.push_ltv_profiles(context, sync_name=SYNC, vendors=VENDORS)

    @task(max_active_tis_per_dagrun=2)
    def deliver(vendor: str, **context) -> dict:
        from storesync.provider import tasks

        return tasks.deliver(vendor, context, sync_name=SYNC)

    @task(outlets=[Asset("storesync://ledger/ltv_profiles")])
    def finish(**context) -> dict:
        from storesync.provider import tasks

        return tasks.finish_sync(context, sync_name=SYNC, full_catalog=True)

    compute_ltv() >> push_profiles() >> deliver.expand(vendor=VENDORS) >> finish()


storesync_ltv()
