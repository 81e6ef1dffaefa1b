"""
### Dead-letter replay (triggered by hand)

Deliveries a vendor refused for good (validation, a missing template, a bad email) are kept in
the ledger as dead letters, with the vendor's error, and alerted on by the monitor. Once the
cause is fixed (at the vendor, in configuration, or in the warehouse and re-planned), trigger
this DAG to put them back in line and send them, exactly once each, within the vendor's budget.

Params:
- `vendor`: `sendlane`, `sailthru` or empty for both;
- `event_type`: e.g. `purchase`, `incomplete_purchase`, `order_placed`; empty for all;
- `ids`: ledger delivery ids (`storesync_deliveries.id`); empty for all that match;
- `dry_run` (default **on**): list what would be replayed, by vendor and event type, and change
  nothing. Turn it off to replay.

Resolving held rows (deliveries with an unknown outcome no lookup can settle; the Storesync view's
"Mark arrived" / "Resend"), instead of replaying dead letters:
- `held_ids`: ledger delivery ids of this store's held rows (`storesync reconcile --list`);
- `resolution`: `arrived` (you found them at the vendor: recorded accepted, nothing is sent) or
  `resend` (you found them missing: sent again now; if one did arrive after all, the vendor gets it
  twice). This is `storesync reconcile --ids ... --arrived|--resend`: a row still awaiting its own
  lookup is never resent (the next scheduled run settles it), and ids that are not this store's
  held rows fail the run before anything changes. `dry_run` applies here too.

A replayed delivery keeps its identity: if it was accepted meanwhile by another path, it is not
among the dead letters and is not sent again. A dead letter blocks what follows it for the same
order or cart (a return never reaches a vendor before its purchase); replaying it releases them.
Dead letters of the historical sync are replayed here too, one call each on the live budget (a
replayed purchase goes as a single `POST /purchase`, never in a second job).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, Param

from storesync.provider.dag_parts import default_args
from storesync.provider.operators.sync import StoresyncReplayOperator
from storesync.provider.stores import load_stores


def build(store):
    with DAG(
        dag_id=store.dag_id("dead_letter_replay"),
        description="By hand: replay dead letters once their cause is fixed (dry run by default)",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["storesync", "operations", "dead-letters", *store.vendors, *store.tags],
        default_args=default_args(retries=1),
        params={
            "vendor": Param(None, type=["null", "string"], enum=[None, "sendlane", "sailthru"],
                            description="Only this vendor's dead letters (empty: both)"),
            "event_type": Param(None, type=["null", "string"], description="Only this event type (empty: all)"),
            "ids": Param([], type="array", items={"type": "integer"},
                         description="Only these ledger delivery ids (empty: all that match)"),
            "dry_run": Param(True, type="boolean", description="List what would be replayed; change nothing"),
            "held_ids": Param([], type="array", items={"type": "integer"},
                              description="Held rows to resolve instead (ledger delivery ids); needs resolution"),
            "resolution": Param(None, type=["null", "string"], enum=[None, "arrived", "resend"],
                                description="For held_ids: arrived (the vendor has them) or resend (it does not)"),
        },
        doc_md=__doc__,
    ) as dag:
        StoresyncReplayOperator(
            task_id="replay", vendor_filter="{{ params.vendor }}", event_type="{{ params.event_type }}",
            ids="{{ params.ids }}", dry_run="{{ params.dry_run }}", held_ids="{{ params.held_ids }}",
            resolution="{{ params.resolution }}", sendlane_conn_id=store.sendlane_conn_id,
            sailthru_conn_id=store.sailthru_conn_id, outlets=[Asset(f"storesync://ledger/{store.sync_name('replay')}")],
            **store.conn_kwargs)
    return dag


for _store in load_stores(Path(__file__).parent):
    build(_store)
