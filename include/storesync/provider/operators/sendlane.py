"""Thin Sendlane operators: send what they are given, through ``SendlaneHook``.

They are for small, explicit sends (a DAG that maps a handful of events, a manual replay). The
ledger-backed delivery engine is what the sync DAGs use: it remembers what each vendor accepted,
so reruns never send anything twice. These operators remember nothing, so they default to
``retries=0``: an Airflow retry would resend the payloads that were already accepted, and
Sendlane has no idempotency key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from storesync.core.errors import PermanentError, SuppressedError

log = logging.getLogger(__name__)


class SendlaneTrackEventsOperator(BaseOperator):
    """POST tracking events, one request each, in order.

    :param events: ``(path, payload)`` pairs, as the ``storesync.mappers.sendlane`` functions
        return them (from arguments or an upstream task's XCom; templated).
    :param sendlane_conn_id: the Sendlane connection.

    A payload Sendlane rejects (validation) is logged with its error, and the others still go;
    the task then fails, naming the rejections. An error that is not about one payload
    (credentials, lockout, rate limit or server errors outlasting the retries, an unknown outcome)
    stops the task at once. Returns ``{"accepted": n}``.
    """

    template_fields: Sequence[str] = ("events", "sendlane_conn_id")

    def __init__(self, *, events: Sequence[Sequence[Any]], sendlane_conn_id: str = "sendlane_default",
                 **kwargs) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.events = events
        self.sendlane_conn_id = sendlane_conn_id

    def execute(self, context: Context) -> dict:
        from storesync.provider.hooks.sendlane import SendlaneHook

        client = SendlaneHook(self.sendlane_conn_id).get_conn()
        accepted, rejected = 0, []
        for index, (path, payload) in enumerate(self.events):
            try:
                client.track(path, payload)
            except (PermanentError, SuppressedError) as error:
                log.warning("event %d (%s) rejected: %s", index, path, error)
                rejected.append({"index": index, "path": path, **error.as_record()})
            else:
                accepted += 1
        log.info("Sendlane accepted %d of %d events", accepted, len(self.events))
        if rejected:
            raise PermanentError(f"Sendlane rejected {len(rejected)} of {len(self.events)} events; "
                                 f"the first ones: {rejected[:10]}")
        return {"accepted": accepted}


class SendlaneAddContactsOperator(BaseOperator):
    """Add or update contacts on a Sendlane list, up to 1000 per request.

    :param list_id: the Sendlane list (templated).
    :param contacts: contact dicts, as ``storesync.mappers.sendlane.map_contact`` returns them
        (templated; may come from XCom).
    :param sendlane_conn_id: the Sendlane connection.

    Adding a contact again updates it, so re-running this task is safe.
    """

    template_fields: Sequence[str] = ("list_id", "contacts", "sendlane_conn_id")

    def __init__(self, *, list_id: str | int, contacts: Sequence[dict],
                 sendlane_conn_id: str = "sendlane_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.list_id = list_id
        self.contacts = contacts
        self.sendlane_conn_id = sendlane_conn_id

    def execute(self, context: Context) -> dict:
        from storesync.provider.hooks.sendlane import SendlaneHook

        client = SendlaneHook(self.sendlane_conn_id).get_conn()
        answers = client.add_contacts(self.list_id, list(self.contacts))
        log.info("Sendlane took %d contacts for list %s in %d requests", len(self.contacts), self.list_id,
                 len(answers))
        return {"contacts": len(self.contacts), "requests": len(answers)}
