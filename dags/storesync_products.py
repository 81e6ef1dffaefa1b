"""
### Product catalog → Sendlane and Sailthru (nightly full sync, and hourly changes)

Two DAGs share this file:

- **`storesync_products`** (`@daily`, UTC): the whole catalog, every product updated before the
  end of the run's interval, to Sendlane `product_added` and Sailthru content, as the Sendlane
  guide requires of a nightly sync. Content-hash versions make unchanged products no-ops, so a
  normal night sends only what changed since the last accepted version.
- **`storesync_products_changed`** (`@hourly`): products changed in the run's interval, so a
  price or picture change reaches abandoned-cart and browse emails within the hour instead of
  the next night. A separate DAG, not a task of the hourly order DAG: a catalog problem (a
  quality-gate failure, a vendor rejecting products) never holds up order events, and each can be
  paused or backfilled alone. Both use the same ledger identities: a product sent by one is a
  no-op for the other.

**Param `force_full`** (nightly DAG, default off) resends *every* product, changed or not, once
for that run (its retries included): use it after a vendor's catalog was wiped or restored, when
moving to a new vendor account with the same credentials fingerprint, or after a product was
changed and changed back (A → B → A: the ledger already holds version A as sent, so content-hash
diffing would not send A again).

Catch-up and backfills: a run extracts by its data interval only. The warehouse holds products'
current state, so a backfilled night sends what a rerun now would: only products whose current
version was never accepted, never an older catalog.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from storesync.provider.notifiers import alert_callbacks

VENDORS = ["sendlane", "sailthru"]
DEFAULT_ARGS = {"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=5)}
PRODUCTS_ASSET = Asset("storesync://ledger/products")


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["storesync", "products", "sendlane", "sailthru"],
    default_args=DEFAULT_ARGS,
    params={"force_full": Param(False, type="boolean",
                                description="Resend every product once for this run, changed or not")},
    doc_md=__doc__,
    on_failure_callback=alert_callbacks(),
)
def storesync_products():
    @task
    def plan_catalog(**context) -> dict:
        from storesync.provider import tasks

        return tasks.plan_products(context, sync_name="products", vendors=VENDORS, full_catalog=True,
                                   force_full=bool(context["params"].get("force_full")))

    @task(max_active_tis_per_dagrun=2)
    def deliver(vendor: str, **context) -> dict:
        from storesync.provider import tasks

        return tasks.deliver(vendor, context, sync_name="products")

    @task(outlets=[PRODUCTS_ASSET])
    def finish(**context) -> dict:
        from storesync.provider import tasks

        return tasks.finish_sync(context, sync_name="products", full_catalog=True)

    plan_catalog() >> deliver.expand(vendor=VENDORS) >> finish()


@dag(
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["storesync", "products", "sendlane", "sailthru"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    on_failure_callback=alert_callbacks(),
)
def storesync_products_changed():
    @task
    def plan_changed(**context) -> dict:
        from storesync.provider import tasks

        return tasks.plan_products(context, sync_name="products_changed", vendors=VENDORS)

    @task(max_active_tis_per_dagrun=2)
    def deliver(vendor: str, **context) -> dict:
        from storesync.provider import tasks

        return tasks.deliver(vendor, context, sync_name="products_changed")

    @task(outlets=[PRODUCTS_ASSET])
    def finish(**context) -> dict:
        from storesync.provider import tasks

        return tasks.finish(context, sync_name="products_changed")

    plan_changed() >> deliver.expand(vendor=VENDORS) >> finish()


storesync_products()
storesync_products_changed()
