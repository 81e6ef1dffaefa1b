"""Retention: personal data kept only as long as it is useful (``[retention]``, default 30 days).

What exactly-once needs of a delivery is its identity (vendor, account, event type, entity id,
version), its state and, for content versions, the version itself (a hash of the payload): never
the payload. So once a delivery has been ``accepted`` for ``days`` days, its payload becomes
``{"scrubbed": "retention"}``, and its vendor error and its record-log lines' errors say so
(which also keeps it out of the Sailthru lookup evidence, ``delivery/lookup_proofs.py``, that
needs real payloads); a rerun or a backfill of its window finds the same identity and plans
nothing. Quarantine records resolved ``days`` days ago keep their entity, id, times and the
names of their failed checks (the details, which quote values, go) and lose the row. Open rows
(in the ledger or the quarantine) are never scrubbed: they are still owed or still to be fixed;
dead letters neither (``storesync replay`` needs them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, inspect, select, update

from storesync.delivery.ledger import ACCEPTED, Ledger, deliveries, record_log, utcnow
from storesync.privacy.erasure import ERASED_PAYLOAD

log = logging.getLogger(__name__)

SCRUBBED_PAYLOAD = json.dumps({"scrubbed": "retention"})
SCRUBBED_NOTE = "payload scrubbed (retention)"
_BATCH = 5000


@dataclass
class RetentionReport:
    cutoff: datetime
    deliveries: int = 0
    quarantine: int = 0

    def as_dict(self) -> dict:
        return {"cutoff": self.cutoff.isoformat(sep=" "), "deliveries_scrubbed": self.deliveries,
                "quarantine_scrubbed": self.quarantine}


def scrub_expired(ledger: Ledger, *, days: int, now: datetime | None = None) -> RetentionReport:
    """Scrub what is older than ``days`` (module docstring); in batches, so a first run on a large
    ledger holds no long lock. Safe to run at any time and to repeat."""
    now = now or utcnow()
    report = RetentionReport(cutoff=now - timedelta(days=days))
    report.deliveries = _scrub_deliveries(ledger, report.cutoff)
    report.quarantine = _scrub_quarantine(ledger, report.cutoff)
    log.info("retention: %d delivery payloads and %d quarantine rows older than %s scrubbed",
             report.deliveries, report.quarantine, report.cutoff)
    return report


def _scrub_deliveries(ledger: Ledger, cutoff: datetime) -> int:
    due = and_(deliveries.c.state == ACCEPTED, deliveries.c.accepted_at < cutoff,
               deliveries.c.payload != SCRUBBED_PAYLOAD, deliveries.c.payload != ERASED_PAYLOAD)
    total = 0
    while True:
        with ledger.engine.begin() as conn:
            ids = conn.execute(select(deliveries.c.id).where(due).order_by(deliveries.c.id)
                               .limit(_BATCH)).scalars().all()
            if not ids:
                return total
            total += conn.execute(update(deliveries)
                                  .where(deliveries.c.id.in_(ids), deliveries.c.state == ACCEPTED)
                                  .values(payload=SCRUBBED_PAYLOAD, vendor_error=SCRUBBED_NOTE)).rowcount
            # Their record-log lines' error texts (earlier retries' answers can quote an email).
            conn.execute(update(record_log)
                         .where(record_log.c.delivery_id.in_(ids), record_log.c.error.is_not(None))
                         .values(error=SCRUBBED_NOTE))


def _scrub_quarantine(ledger: Ledger, cutoff: datetime) -> int:
    from storesync.quality.store import quarantine

    if not inspect(ledger.engine).has_table(quarantine.name, schema=ledger.schema):
        return 0
    due = and_(quarantine.c.resolved_at.is_not(None), quarantine.c.resolved_at < cutoff,
               quarantine.c.row != SCRUBBED_PAYLOAD, quarantine.c.row != ERASED_PAYLOAD)
    total = 0
    while True:
        with ledger.engine.begin() as conn:
            rows = conn.execute(select(quarantine.c.id, quarantine.c.reasons).where(due)
                                .order_by(quarantine.c.id).limit(_BATCH)).all()
            if not rows:
                return total
            for row in rows:
                conn.execute(update(quarantine).where(quarantine.c.id == row.id)
                             .values(row=SCRUBBED_PAYLOAD, reasons=json.dumps(_check_names(row.reasons))))
            total += len(rows)


def _check_names(reasons_json: str) -> list[str]:
    """``["email_well_formed: 'bob@' is not an email"]`` -> ``["email_well_formed"]``."""
    try:
        reasons = json.loads(reasons_json or "[]")
    except ValueError:
        return ["(unreadable)"]
    return [str(r).split(":", 1)[0].strip() for r in reasons]
