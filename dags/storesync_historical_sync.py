"""
### Historical sync (triggered by hand)

Sends the store's past, day by day, to the vendors as *history*: Sendlane events carry
`initial_sync: true` and their past `time`, so they fill reports without firing live
automations; Sailthru purchases and catalog items go in bulk jobs (`purchase_import`,
`content_update`) instead of one call each; returns and user profiles go one by one.
Checkouts are never synced historically (old cart reminders would be spam).

Params:
- `entities`: any of `products`, `customers`, `orders` (run in that order);
- `start_date`, `end_date`: UTC days, inclusive; the range must end before today (live syncs
  own the present);
- `vendors`: `sendlane`, `sailthru`;
- `dry_run` (default **on**): extract, validate and count what would be sent per vendor and
  event (new / already sent), with a few sample payloads, emails masked; nothing is sent and no
  checkpoint is written. Turn it off to send;
- `budget_share` (default 0.25, at most 0.5): the share of each vendor budget history may use;
- `restart`: ignore the checkpoints and re-extract every day (the ledger still sends nothing twice);
- `job_rows`, `job_poll_seconds`: Sailthru job size and polling.

**Exactly once, shared with the live syncs.** Deliveries have the live syncs' ledger identities:
anything already sent live is skipped, and anything sent here is never sent by a live run; a
purchase goes in a job or singly, never both. Job rows are recorded as accepted only after
Sailthru reports the job completed; rows it lists as failed become dead letters.

**Checkpoints and resume.** It spans days at the vendors' rate limits. Each (entity, day,
vendor) is checkpointed in the ledger database (`storesync_historical_chunks`, and
`storesync_historical_jobs` for Sailthru jobs): after a failure, a restart or a task retry
(six, backing off up to an hour), it resumes at the first unfinished day, polls running jobs
again instead of resubmitting them, and skips finished days. A new run with the same range
resumes too.

**Never starves the live syncs.** Its deliveries are *parked* in the ledger, invisible to the
live syncs' delivery tasks, and sent by this DAG on its own share of the budget: on Sendlane, a
second shared window of `budget_share × budget_per_minute` drawn from the account's own window
(default 50 of 200/min, leaving at least 150/min to the live syncs on every host); on Sailthru,
jobs use `/job`, which live syncs never call, and single calls only use a window while the
vendor's announced remaining budget stays above `(1 - budget_share)` of it. One run at a time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Asset, Param, task

from storesync.provider.dag_parts import default_args
from storesync.provider.operators.sync import StoresyncHistoricalOperator, StoresyncHistoricalRequestOperator
from storesync.provider.stores import load_stores


@task
def summarize(results) -> dict:
    results = list(results)
    return {"entities": [r["entity"] for r in results], "dry_run": all(r["dry_run"] for r in results),
            "planned": {r["entity"]: r["planned"] for r in results},
            "skipped_days": {r["entity"]: r["skipped_days"] for r in results}}


def build(store):
    with DAG(
        dag_id=store.dag_id("historical_sync"),
        description="By hand: the store's past, day by day, to the vendors as history (dry run by default)",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "historical", "backfill", *store.vendors, *store.tags],
        default_args=default_args(retries=6, retry_delay=timedelta(minutes=5), retry_exponential_backoff=True,
                                  max_retry_delay=timedelta(hours=1)),
        params={
            "entities": Param(["products", "customers", "orders"], type="array",
                              items={"type": "string", "enum": ["products", "customers", "orders"]}),
            "start_date": Param(None, type=["null", "string"], format="date",
                                description="First UTC day (inclusive)"),
            "end_date": Param(None, type=["null", "string"], format="date", description="Last UTC day (inclusive)"),
            "vendors": Param(store.vendors, type="array", items={"type": "string", "enum": store.vendors}),
            "dry_run": Param(True, type="boolean", description="Count and sample what would be sent; send nothing"),
            "budget_share": Param(0.25, type="number", exclusiveMinimum=0, maximum=0.5,
                                  description="Share of each vendor budget the history may use"),
            "restart": Param(False, type="boolean", description="Ignore checkpoints (the ledger still dedups)"),
            "job_rows": Param(5000, type="integer", minimum=1, maximum=100000),
            "job_poll_seconds": Param(15, type="number", exclusiveMinimum=0),
        },
        doc_md=__doc__,
    ) as dag:
        conns = {"sendlane_conn_id": store.sendlane_conn_id, "sailthru_conn_id": store.sailthru_conn_id,
                 **store.conn_kwargs}
        request = StoresyncHistoricalRequestOperator(task_id="check_request", retries=1, **store.conn_kwargs)
        synced = StoresyncHistoricalOperator.partial(task_id="sync_entity", max_active_tis_per_dagrun=1,
                                                     **conns).expand(entity=request.output)
        summarize.override(outlets=[Asset(f"storesync://ledger/{store.sync_name('historical')}")])(synced.output)
    return dag


for _store in load_stores(Path(__file__).parent):
    build(_store)
