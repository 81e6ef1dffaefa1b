"""
### Abandoned checkouts → Sendlane and Sailthru (hourly)

Checkouts started or changed in the run's data interval, through the quality gate:

- an **open** checkout becomes Sendlane *checkout started* (the whole cart) and a Sailthru
  *incomplete purchase* with the reminder template and time from settings
  (`sailthru.reminder_template`, `sailthru.reminder_time`): Sailthru keeps one cart per person
  and sends the reminder unless the cart is cleared first;
- a **completed** checkout (its order was placed) clears the cart: a Sailthru incomplete purchase
  with no items, which cancels the pending reminder. Sendlane ends its abandoned-checkout flow
  itself when the order-placed event arrives (the order-events DAG).

A cart's updates reach each vendor in order (one ordering key per person/cart in the ledger),
and an unchanged cart is a no-op.

**Param `reminder_max_age_hours`** (default 24; 0 = no limit): reminders go only for intervals
that ended at most that long ago. A scheduled run is always fresh; a backfill or a long catch-up
of old intervals sends the clearing calls but no reminders for carts left days ago, which is
the one place where a backfill deliberately sends less than the scheduled run would have.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from storesync.provider.notifiers import alert_callbacks

VENDORS = ["sendlane", "sailthru"]
SYNC = "checkouts"


@dag(
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["storesync", "checkouts", "sendlane", "sailthru"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={"reminder_max_age_hours": Param(24, type="number", minimum=0,
                                            description="No reminders for intervals older than this (0: no limit)")},
    doc_md=__doc__,
    on_failure_callback=alert_callbacks(),
)
def storesync_checkouts():
    @task
    def plan_checkouts(**context) -> dict:
        from storesync.provider import tasks

        return tasks.plan_checkouts(context, sync_name=SYNC, vendors=VENDORS,
                                    reminder_max_age_hours=context["params"].get("reminder_max_age_hours", 24))

    @task(max_active_tis_per_dagrun=2)
    def deliver(vendor: str, **context) -> dict:
        from storesync.provider import tasks

        return tasks.deliver(vendor, context, sync_name=SYNC)

    @task(outlets=[Asset("storesync://ledger/checkouts")])
    def finish(**context) -> dict:
        from storesync.provider import tasks

        return tasks.finish(context, sync_name=SYNC)

    plan_checkouts() >> deliver.expand(vendor=VENDORS) >> finish()


storesync_checkouts()
