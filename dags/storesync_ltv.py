"""
### Customer lifetime value, daily, and the profiles that carry it

1. **compute_ltv**: the LTV job (`storesync ltv --as-of <the interval's date>` does the same),
   from the LTV models in `models_dir` and the `[ltv]` settings, on gated orders only (open
   quarantine records, duplicates, negative totals, unknown statuses and currencies left out), in
   the `[ltv]` reporting currency, inside the warehouse in SQL: order count, gross/net revenue, average order value, first/last order, tenure, then the
   BG/NBD + Gamma-Gamma predictions (expected purchases, probability alive, predicted CLV) into
   `storesync_customer_ltv` (a view: a day writes only the customers whose figures moved), with
   as-of order statuses, so any day can be rerun or backfilled and gives the same numbers. A store without repeat
   buyers yet gets the historic figures only (logged, not failed). When the day before was
   computed, only the customers with news since are touched (see `compute_historic_ltv`);
   trigger with `full_recompute` to recompute everyone (e.g. after correcting old orders).
2. **push_profiles**: for the newest LTV day only, every customer's profile with its LTV fields
   (`ltv_order_count`, `ltv_net_revenue`, `ltv_predicted_clv`, `ltv_p_alive`, `ltv_currency`) is planned:
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
from pathlib import Path

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from storesync.provider.dag_parts import default_args, ledger_asset, sync_chain
from storesync.provider.operators.sync import StoresyncLtvOperator
from storesync.provider.stores import load_stores


def build(store):
    ltv_asset = Asset("storesync://warehouse/customer_ltv" if store.is_default
                      else f"storesync://warehouse/{store.name}/customer_ltv")
    with DAG(
        dag_id=store.dag_id("ltv"),
        description="Daily: customer LTV computed in the warehouse, and the profiles whose figures moved -> vendors",
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "ltv", "customers", *store.vendors, *store.tags],
        default_args=default_args(retry_delay=timedelta(minutes=5)),
        params={"full_recompute": Param(False, type="boolean",
                                        description="Recompute every customer from all orders, not from the day before")},
        doc_md=__doc__,
    ) as dag:
        compute = StoresyncLtvOperator(task_id="compute_ltv", full_recompute="{{ params.full_recompute }}",
                                       ltv_sync_name=store.sync_name("ltv"),
                                       inlets=[ledger_asset(store, "order_events")], outlets=[ltv_asset],
                                       **store.conn_kwargs)
        push, _ = sync_chain(store, sync="ltv_profiles", entity="ltv_profiles", plan_task_id="push_profiles",
                             full_catalog=True)
        compute >> push
    return dag


for _store in load_stores(Path(__file__).parent):
    build(_store)
