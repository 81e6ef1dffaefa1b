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

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from storesync.provider.dag_parts import default_args, sync_chain
from storesync.provider.stores import load_stores


def build(store):
    with DAG(
        dag_id=store.dag_id("checkouts"),
        description="Checkouts of the last hour -> cart reminders (Sailthru), checkout started (Sendlane), cleared carts",
        schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "checkouts", *store.vendors, *store.tags],
        default_args=default_args(),
        params={"reminder_max_age_hours": Param(24, type="number", minimum=0,
                                                description="No reminders for intervals older than this (0: no limit)")},
        doc_md=__doc__,
    ) as dag:
        sync_chain(store, sync="checkouts", entity="checkouts", plan_task_id="plan_checkouts",
                   options={"reminder_max_age_hours": "{{ params.reminder_max_age_hours }}"})
    return dag


for _store in load_stores(Path(__file__).parent):
    build(_store)
