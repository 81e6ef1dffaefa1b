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

from datetime import datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from storesync.provider.notifiers import alert_callbacks


@dag(
    schedule=CronDataIntervalTimetable("*/30 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["storesync", "operations", "alerts"],
    default_args={"owner": "data-engineering", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "max_intervals": Param(3, type="integer", minimum=1,
                               description="A sync is stalled when its watermark is this many intervals old"),
        "quarantine_factor": Param(3.0, type="number", minimum=1),
        "quarantine_min_rows": Param(10, type="integer", minimum=1),
    },
    doc_md=__doc__,
    on_failure_callback=alert_callbacks(),
)
def storesync_monitor():
    @task(inlets=[Asset("storesync://ledger/order_events"), Asset("storesync://ledger/customers"),
                  Asset("storesync://ledger/checkouts"), Asset("storesync://ledger/products")])
    def check_ledger(**context) -> dict:
        from storesync.provider import tasks

        params = context["params"]
        return tasks.monitor(context, max_intervals=params.get("max_intervals", 3),
                             quarantine_factor=params.get("quarantine_factor", 3.0),
                             quarantine_min_rows=params.get("quarantine_min_rows", 10))

    check_ledger()


storesync_monitor()
