"""
### Personal data upkeep, daily: erasure requests, then retention

1. **erase_requested**: the people of the `erasure_requests` model (optional; no file, nobody)
   not erased yet are deleted at Sailthru (`DELETE /user`) and Sendlane (the contact found by
   `GET /contacts/search`, then `DELETE /contacts/{id}`: undocumented calls, see docs/privacy.md),
   scrubbed from the ledger, the record log, the quarantine and the LTV tables, recorded in
   `storesync_erasures` as salted hashes, and left out of every later sync. `storesync erase
   --email/--customer-id` does the same by hand.
   A vendor that could not delete someone, or a Sendlane deletion that could not be confirmed (a
   generic 404), fails the task saying what to do; the next run tries again.
2. **retention**: payloads of deliveries accepted more than `[retention] days` ago (default 30)
   and quarantine rows resolved that long ago lose their personal data; identities, states and
   versions stay, so reruns and backfills still send nothing twice (`storesync retention`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable

from storesync.privacy.operators import StoresyncErasureOperator, StoresyncRetentionOperator
from storesync.provider.dag_parts import default_args
from storesync.provider.stores import load_stores


def build(store):
    with DAG(
        dag_id=store.dag_id("maintenance"),
        description="Daily: erase the people who asked (vendors and storesync's tables), then scrub "
                    "personal data past its retention",
        schedule=CronDataIntervalTimetable("30 3 * * *", timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "maintenance", "privacy", *store.tags],
        default_args=default_args(retry_delay=timedelta(minutes=10)),
        doc_md=__doc__,
    ) as dag:
        erase = StoresyncErasureOperator(task_id="erase_requested", sendlane_conn_id=store.sendlane_conn_id,
                                         sailthru_conn_id=store.sailthru_conn_id, **store.conn_kwargs)
        retention = StoresyncRetentionOperator(task_id="retention", **store.conn_kwargs)
        erase >> retention
    return dag


for _store in load_stores(Path(__file__).parent):
    build(_store)
