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
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from storesync.provider.dag_parts import default_args, ledger_asset, sync_chain
from storesync.provider.stores import load_stores


def build(store):
    products_asset = ledger_asset(store, "products")
    with DAG(
        dag_id=store.dag_id("products"),
        description="Nightly: the whole product catalog -> Sendlane products and Sailthru content (changes only)",
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "products", *store.vendors, *store.tags],
        default_args=default_args(retry_delay=timedelta(minutes=5)),
        params={"force_full": Param(False, type="boolean",
                                    description="Resend every product once for this run, changed or not")},
        doc_md=__doc__,
    ) as nightly:
        sync_chain(store, sync="products", entity="products", plan_task_id="plan_catalog", full_catalog=True,
                   options={"force_full": "{{ params.force_full }}"}, finish_outlets=[products_asset])

    with DAG(
        dag_id=store.dag_id("products_changed"),
        description="Hourly: products changed in the last hour -> Sendlane and Sailthru",
        schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "products", *store.vendors, *store.tags],
        default_args=default_args(retry_delay=timedelta(minutes=5)),
        doc_md=__doc__,
    ) as hourly:
        sync_chain(store, sync="products_changed", entity="products", plan_task_id="plan_changed",
                   finish_outlets=[products_asset])
    return nightly, hourly


for _store in load_stores(Path(__file__).parent):
    build(_store)
