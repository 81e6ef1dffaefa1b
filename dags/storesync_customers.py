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

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable

from storesync.provider.dag_parts import default_args, sync_chain
from storesync.provider.operators.sendlane import SendlaneUnsubscribesOperator
from storesync.provider.stores import load_stores


def build(store):
    with DAG(
        dag_id=store.dag_id("customers"),
        description="Customers of the last hour, with consent and LTV -> Sendlane contacts/events, Sailthru profiles",
        schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "customers", "consent", *store.vendors, *store.tags],
        default_args=default_args(),
        doc_md=__doc__,
    ) as dag:
        plan, _ = sync_chain(store, sync="customers", entity="customers", plan_task_id="plan_customers",
                             plan_inlets=[Asset(f"storesync://warehouse/{store.name}/customer_ltv"
                                                if not store.is_default else "storesync://warehouse/customer_ltv")])
        if store.sendlane_conn_id:
            # Without the readback a sync could re-subscribe someone: it must succeed first.
            SendlaneUnsubscribesOperator(task_id="read_unsubscribes", sendlane_conn_id=store.sendlane_conn_id,
                                         **store.conn_kwargs) >> plan
    return dag


for _store in load_stores(Path(__file__).parent):
    build(_store)
