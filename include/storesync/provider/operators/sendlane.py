"""Ledger-backed Sendlane operators: deliver a sync's planned deliveries, or plan and deliver one
sync for one Sendlane account, and read back the account's unsubscribes.

Every send goes through the delivery ledger: what Sendlane accepted is recorded, so a retry, a
cleared task or a backfill never sends it twice, and the account's per-minute budget is shared
(in the ledger database) by every task, DAG and worker that sends to it. The account is the
connection's (``sendlane_conn_id``): its extra ``account_id``, else a fingerprint of its token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from storesync.provider.connections import SENDLANE_CONN_ID
from storesync.provider.operators.base import StoresyncBaseOperator, VendorDeliverMixin
from storesync.provider.operators.sync import plan_job


class SendlaneDeliverOperator(VendorDeliverMixin, StoresyncBaseOperator):
    """Send the Sendlane account's due deliveries (planned by ``StoresyncPlanOperator``), within its
    budget, exactly once each. Fails, after sending everything else, when deliveries are held with
    an unknown outcome or stranded under another account key.

    :param sync_name: the sync whose plan this follows (templated).
    :param sendlane_conn_id: the Sendlane connection (templated).
    """

    vendor = "sendlane"
    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "sync_name", "sendlane_conn_id")
    reads_warehouse = False  # sends what the ledger holds

    def __init__(self, *, sync_name: str, sendlane_conn_id: str = SENDLANE_CONN_ID, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sync_name = sync_name
        self.sendlane_conn_id = sendlane_conn_id

    def run_job(self, run, context: Context) -> dict:
        return self.deliver(run)


class SendlaneSyncOperator(VendorDeliverMixin, StoresyncBaseOperator):
    """One sync for one Sendlane account in one task: plan the window (quality gate, ledger), send,
    settle the window.

    :param entity: ``orders``, ``customers``, ``products``, ``checkouts`` or ``ltv_profiles``.
    :param sync_name: the ledger's name for this sync; give each account its own (templated).
    :param sendlane_conn_id: the Sendlane connection (templated).
    :param full_catalog, options: as ``StoresyncPlanOperator``'s.
    """

    vendor = "sendlane"
    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "sync_name", "sendlane_conn_id",
                                      "options")

    def __init__(self, *, entity: str, sync_name: str, sendlane_conn_id: str = SENDLANE_CONN_ID,
                 full_catalog: bool = False, options: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entity = entity
        self.sync_name = sync_name
        self.sendlane_conn_id = sendlane_conn_id
        self.full_catalog = full_catalog
        self.options = options or {}

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        planned = plan_job(run, entity=self.entity, sync_name=self.sync_name, vendors=[self.vendor],
                           full_catalog=self.full_catalog, options=dict(self.options))
        delivered = self.deliver(run)
        finished = tasks.finish(run, sync_name=self.sync_name, full_catalog=self.full_catalog)
        return {"planned": planned.get("planned", {}), "delivered": delivered, **finished}


class SendlaneUnsubscribesOperator(StoresyncBaseOperator):
    """Read the Sendlane account's own unsubscribes into the ledger database before people are
    planned, so a sync never re-subscribes someone who unsubscribed at Sendlane.

    :param sendlane_conn_id: the Sendlane connection (templated).
    """

    vendor = "sendlane"
    template_fields: Sequence[str] = (*StoresyncBaseOperator.template_fields, "sendlane_conn_id")

    def __init__(self, *, sendlane_conn_id: str = SENDLANE_CONN_ID, **kwargs) -> None:
        kwargs.setdefault("window_start", None)
        kwargs.setdefault("window_end", None)
        super().__init__(**kwargs)
        self.sendlane_conn_id = sendlane_conn_id

    def run_job(self, run, context: Context) -> dict:
        from storesync.provider import tasks

        return tasks.read_vendor_unsubscribes(run)
