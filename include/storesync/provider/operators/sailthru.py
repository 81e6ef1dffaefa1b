"""Thin Sailthru operators: send what they are given, through ``SailthruHook``.

They are for small, explicit sends (a DAG that maps a handful of events, a manual replay). The
ledger-backed delivery engine is what the sync DAGs use: it remembers what Sailthru accepted, so
reruns never send anything twice. These operators remember nothing, so they default to
``retries=0``: an Airflow retry would resend purchases already recorded, and Sailthru purchases
are neither idempotent nor editable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from storesync.core.errors import PermanentError, SuppressedError, UnknownOutcomeError

log = logging.getLogger(__name__)


def _fail_on_rejections(rejected: list[dict], total: int) -> None:
    if rejected:
        raise PermanentError(f"Sailthru rejected {len(rejected)} of {total} requests; "
                             f"the first ones: {rejected[:10]}")


class SailthruPostOperator(BaseOperator):
    """POST requests to Sailthru, one each, in order: profiles, content, returns, purchases.

    :param requests: ``(endpoint, payload)`` pairs, as the ``storesync.mappers.sailthru``
        functions return them (from arguments or an upstream task's XCom; templated).
    :param sailthru_conn_id: the Sailthru connection.

    A request Sailthru rejects (validation, or a suppressed address) is logged with its error, and
    the others still go; the task then fails, naming the rejections. An error that is not about
    one request (credentials, rate limit or server errors outlasting the retries, an unknown
    outcome) stops the task at once. Returns ``{"accepted": n}``.
    """

    template_fields: Sequence[str] = ("requests", "sailthru_conn_id")

    def __init__(self, *, requests: Sequence[Sequence[Any]], sailthru_conn_id: str = "sailthru_default",
                 **kwargs) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.requests = requests
        self.sailthru_conn_id = sailthru_conn_id

    def execute(self, context: Context) -> dict:
        from storesync.provider.hooks.sailthru import SailthruHook

        client = SailthruHook(self.sailthru_conn_id).get_conn()
        accepted, rejected = 0, []
        for index, (endpoint, payload) in enumerate(self.requests):
            try:
                client.post(endpoint, payload)
            except (PermanentError, SuppressedError) as error:
                log.warning("request %d (%s) rejected: %s", index, endpoint, error)
                rejected.append({"index": index, "endpoint": endpoint, **error.as_record()})
            else:
                accepted += 1
        log.info("Sailthru accepted %d of %d requests", accepted, len(self.requests))
        _fail_on_rejections(rejected, len(self.requests))
        return {"accepted": accepted}


class SailthruPurchaseOperator(BaseOperator):
    """POST completed purchases, one each, in order.

    :param purchases: purchase payloads, as ``storesync.mappers.sailthru.map_purchase`` builds them
        (templated; may come from XCom). Each should carry ``purchase_keys.extid``.
    :param sailthru_conn_id: the Sailthru connection.

    When a purchase got no answer (unknown outcome), Sailthru is asked whether it recorded that
    extid: if it did, the purchase counts as accepted; if not, or without an extid, the task
    stops rather than risk a duplicate. Rejections are handled as in ``SailthruPostOperator``.
    Returns ``{"accepted": n, "confirmed_by_lookup": m}``.
    """

    template_fields: Sequence[str] = ("purchases", "sailthru_conn_id")

    def __init__(self, *, purchases: Sequence[dict], sailthru_conn_id: str = "sailthru_default",
                 **kwargs) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.purchases = purchases
        self.sailthru_conn_id = sailthru_conn_id

    def execute(self, context: Context) -> dict:
        from storesync.provider.hooks.sailthru import SailthruHook

        client = SailthruHook(self.sailthru_conn_id).get_conn()
        accepted, confirmed, rejected = 0, 0, []
        for index, payload in enumerate(self.purchases):
            try:
                client.purchase(payload)
            except UnknownOutcomeError:
                extid = (payload.get("purchase_keys") or {}).get("extid")
                if not extid or client.lookup_purchase(extid) is None:
                    raise
                log.info("purchase %d (extid %s): no answer, but Sailthru has it", index, extid)
                confirmed += 1
            except (PermanentError, SuppressedError) as error:
                log.warning("purchase %d rejected: %s", index, error)
                rejected.append({"index": index, **error.as_record()})
            else:
                accepted += 1
        log.info("Sailthru accepted %d of %d purchases (%d confirmed by lookup)",
                 accepted + confirmed, len(self.purchases), confirmed)
        _fail_on_rejections(rejected, len(self.purchases))
        return {"accepted": accepted + confirmed, "confirmed_by_lookup": confirmed}
