"""
### Storefront events → Sendlane *added to cart* and *product viewed* (hourly)

The run's data interval of the `site_events` model: the tracker's tables in the warehouse
(Segment's `tracks`, a Snowplow `events` table), one row per event with its id, name, visitor,
email, product and cart. Each event passes the quality gate (`site_events` suite: id present and
unique, a time not in the future, a product, a cart for an add) and becomes one Sendlane request:

- `product_viewed`: a known contact viewed a product (`/tracking/product-viewed`);
- `added_to_cart`: the product added, in its cart (`/tracking/added-to-cart`, keyed by `cart_id`).

The event's own id is the delivery's identity, so a retry, a rerun or a backfill of the interval
sends nothing twice; a person's events reach Sendlane in the order they happened. Events with no
email (a visitor not logged in) and events of other names are counted and not sent. A store
without a tracker leaves `site_events.sql` out of its models: the DAG then plans nothing.
Sendlane only: Sailthru takes no such events here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable

from storesync.provider.dag_parts import default_args, ledger_asset
from storesync.provider.operators.sendlane import SendlaneDeliverOperator
from storesync.provider.operators.sync import StoresyncFinishOperator, StoresyncPlanOperator
from storesync.provider.stores import load_stores


def build(store):
    sync_name = store.sync_name("site_events")
    with DAG(
        dag_id=store.dag_id("site_events"),
        description="Storefront events of the last hour -> Sendlane added to cart and product viewed",
        schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "site_events", "sendlane", *store.tags],
        default_args=default_args(),
        doc_md=__doc__,
    ) as dag:
        plan = StoresyncPlanOperator(task_id="plan_site_events", entity="site_events", sync_name=sync_name,
                                     sendlane_conn_id=store.sendlane_conn_id, sailthru_conn_id=None,
                                     **store.conn_kwargs)
        deliver = SendlaneDeliverOperator(task_id="deliver_sendlane", sync_name=sync_name,
                                          sendlane_conn_id=store.sendlane_conn_id, **store.conn_kwargs)
        finish = StoresyncFinishOperator(task_id="finish", sync_name=sync_name,
                                         outlets=[ledger_asset(store, "site_events")], **store.conn_kwargs)
        plan >> deliver >> finish
    return dag


for _store in load_stores(Path(__file__).parent):
    if _store.sendlane_conn_id:  # a store without Sendlane has no such DAG
        build(_store)
