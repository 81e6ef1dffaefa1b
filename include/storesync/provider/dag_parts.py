"""Pieces the shipped DAG files share: default arguments with task-level alerts, and the
plan -> deliver per vendor -> finish chain, for one store (``storesync.provider.stores``).

Imported while DAG files are parsed: it imports the operators' modules (which import nothing
heavy at the top) and nothing else.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset

from storesync.provider.notifiers import alert_callbacks
from storesync.provider.operators.sailthru import SailthruDeliverOperator
from storesync.provider.operators.sendlane import SendlaneDeliverOperator
from storesync.provider.operators.sync import StoresyncFinishOperator, StoresyncPlanOperator
from storesync.provider.stores import Store

OWNER = "data-engineering"


def default_args(*, retries: int = 2, retry_delay: timedelta = timedelta(minutes=2), **more) -> dict:
    """Task defaults: an owner, retries for what retrying fixes (operators fail at once on what it
    cannot), and the failure alert per task, so it names the task, vendor and error."""
    return {"owner": OWNER, "retries": retries, "retry_delay": retry_delay,
            "on_failure_callback": alert_callbacks(), **more}


def ledger_asset(store: Store, sync: str) -> Asset:
    return Asset(f"storesync://ledger/{store.sync_name(sync)}")


def sync_chain(store: Store, *, sync: str, entity: str, plan_task_id: str, full_catalog: bool = False,
               options: dict | None = None, plan_inlets=(), finish_outlets=None):
    """``plan >> [deliver_<vendor> for each vendor of the store] >> finish``; returns (plan, finish)."""
    sync_name = store.sync_name(sync)
    plan = StoresyncPlanOperator(task_id=plan_task_id, entity=entity, sync_name=sync_name,
                                 sendlane_conn_id=store.sendlane_conn_id, sailthru_conn_id=store.sailthru_conn_id,
                                 full_catalog=full_catalog, options=options or {}, inlets=list(plan_inlets),
                                 **store.conn_kwargs)
    delivers = []
    if store.sendlane_conn_id:
        delivers.append(SendlaneDeliverOperator(task_id="deliver_sendlane", sync_name=sync_name,
                                                sendlane_conn_id=store.sendlane_conn_id, **store.conn_kwargs))
    if store.sailthru_conn_id:
        delivers.append(SailthruDeliverOperator(task_id="deliver_sailthru", sync_name=sync_name,
                                                sailthru_conn_id=store.sailthru_conn_id, **store.conn_kwargs))
    finish = StoresyncFinishOperator(task_id="finish", sync_name=sync_name, full_catalog=full_catalog,
                                     outlets=list(finish_outlets or [ledger_asset(store, sync)]),
                                     **store.conn_kwargs)
    plan >> delivers >> finish
    return plan, finish
