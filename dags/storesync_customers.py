"""
### Customers and consent → Sendlane and Sailthru (hourly)

1. **Read back the vendor's unsubscribes first**: every Sendlane unsubscribed contact
   (`GET /contacts/unsubscribed`) goes into `storesync_vendor_unsubscribes` in the ledger
   database. The run stops if this fails: without it, a sync could re-subscribe someone.
2. **Plan** the customers created or changed in the run's data interval, through the quality
   gate: Sendlane customer added, Sailthru user profiles (keyed by `customer_id` as `extid`) and,
   when a Sendlane list is configured (`sendlane.list_id` or the connection's extra `list_id`),
   the list contact. Consent is mapped safely: an email Sendlane lists as unsubscribed is always
   sent as not consenting, and Sailthru never receives `optout_email: "none"`, so an opt-out made
   at a vendor is never reversed. LTV figures of the newest computed day (`storesync_ltv`) go on
   the profile: Sailthru user `vars`, Sendlane contact custom fields.
3. **Deliver** to each vendor (one mapped task per vendor), then **finish**: the watermark moves
   once every delivery of the interval reached a final state, and the
   `storesync://ledger/customers` asset is updated.

Catch-up and backfills extract by the data interval only; profiles carry the customer's current
state and the current LTV, so a backfilled hour sends what a rerun now would, and the ledger's
content-hash versions make unchanged profiles no-ops.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task

from storesync.provider.notifiers import alert_callbacks

VENDORS = ["sendlane", "sailthru"]
SYNC = "customers"


@dag(
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["storesync", "customers", "consent", "sendlane", "sailthru"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=2)},
    doc_md=__doc__,
    on_failure_callback=alert_callbacks(),
)
def storesync_customers():
    @task
    def read_unsubscribes(**context) -> dict:
        from storesync.provider import tasks

        return tasks.read_vendor_unsubscribes(context, vendors=VENDORS)

    @task(inlets=[Asset("storesync://warehouse/customer_ltv")])
    def plan_customers(**context) -> dict:
        from storesync.provider import tasks

        return tasks.plan_customers(context, sync_name=SYNC, vendors=VENDORS)

    @task(max_active_tis_per_dagrun=2)
    def deliver(vendor: str, **context) -> dict:
        from storesync.provider import tasks

        return tasks.deliver(vendor, context, sync_name=SYNC)

    @task(outlets=[Asset("storesync://ledger/customers")])
    def finish(**context) -> dict:
        from storesync.provider import tasks

        return tasks.finish(context, sync_name=SYNC)

    read_unsubscribes() >> plan_customers() >> deliver.expand(vendor=VENDORS) >> finish()


storesync_customers()
