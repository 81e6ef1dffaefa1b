"""
### storesync monitor (every 30 minutes)

Reads the delivery ledger and alerts, through the storesync notifier (Slack webhook
`storesync_slack` and/or e-mail `storesync_smtp`; silent when neither connection exists):

- **new dead letters**: deliveries that became dead letters in the run's data interval, per
  vendor, with their top error classes (each reported once: by the run whose interval saw it);
  replay them with the `storesync_dead_letter_replay` DAG;
- **stalled syncs**: a sync whose watermark is older than `max_intervals` of its schedule
  (`order_events`, `customers`, `checkouts`, `products_changed` hourly; `products`, `ltv`,
  `ltv_profiles` daily): its runs fail, or leave deliveries open;
- **quarantine spikes**: an entity with at least `quarantine_min_rows` rows quarantined in the
  interval and more than `quarantine_factor` times its average over the previous 24 hours. (A run
  whose quarantine share passes its threshold fails and alerts by itself.)

Messages carry the DAG, run, counts and a link; never secrets or customer emails.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from storesync.provider.dag_parts import default_args
from storesync.provider.operators.sync import StoresyncMonitorOperator
from storesync.provider.stores import load_stores

# The schedules of the shipped syncs, in hours (the stalled-sync check), per store's sync names.
SYNC_HOURS = {"order_events": 1, "customers": 1, "checkouts": 1, "products_changed": 1,
              "products": 24, "ltv": 24, "ltv_profiles": 24}


def build(ledger_conn_id, stores, dag_id):
    """One monitor per ledger: it reads every store's deliveries there, so each alert goes once."""
    with DAG(
        dag_id=dag_id,
        description="Every 30 minutes: alerts on new dead letters, stalled syncs, stuck deliveries, quarantine spikes",
        schedule=CronDataIntervalTimetable("*/30 * * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "operations", "alerts"],
        default_args=default_args(retries=1),
        params={
            "max_intervals": Param(3, type="integer", minimum=1,
                                   description="A sync is stalled when its watermark is this many intervals old"),
            "quarantine_factor": Param(3.0, type="number", minimum=1),
            "quarantine_min_rows": Param(10, type="integer", minimum=1),
        },
        doc_md=__doc__,
    ) as dag:
        StoresyncMonitorOperator(
            task_id="check_ledger", ledger_conn_id=ledger_conn_id, warehouse_conn_id=stores[0].warehouse_conn_id,
            max_intervals="{{ params.max_intervals }}", quarantine_factor="{{ params.quarantine_factor }}",
            quarantine_min_rows="{{ params.quarantine_min_rows }}",
            expected_intervals_hours={s.sync_name(name): hours for s in stores for name, hours in SYNC_HOURS.items()},
            inlets=[Asset(f"storesync://ledger/{s.sync_name(name)}") for s in stores
                    for name in ("order_events", "customers", "checkouts", "products")])
    return dag


_by_ledger: dict = {}
for _store in load_stores(Path(__file__).parent):
    _by_ledger.setdefault(_store.ledger_conn_id, []).append(_store)
for _number, (_ledger, _stores) in enumerate(_by_ledger.items()):
    build(_ledger, _stores, "storesync_monitor" if _number == 0 else f"storesync_monitor_{_ledger}")
