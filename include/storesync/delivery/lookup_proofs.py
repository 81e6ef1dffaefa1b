"""Lookup proofs: is a vendor's lookup path able to find what the vendor accepted?

A lookup that answers "not found" licenses a resend of a non-idempotent write (a Sailthru
purchase counts twice when posted twice). But an account, proxy or gateway that does not route
the lookup answers a 404 for everything, sometimes in the very shape of the documented
not-found. So "not found" is believed only from a lookup path (account + endpoint) that, recently,
*found* an object known to be accepted.

Evidence is derived from the ledger: the newest rows the vendor accepted with its own answer
(not ones accepted by a lookup or by a person's reconciliation), older than ``min_age_s`` so the
vendor had time to record them, plus those this process saw accepted. That survives restarts (the
ledger is the durable record of what was accepted) and costs no table of its own. The proof
itself is a live read, kept for ``ttl_s`` (a run): a stored "proven" flag would outlive a path
that stopped working (a gateway's routes change), while one GET per endpoint and run is cheap.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine

from storesync.delivery.ledger import ACCEPTED, deliveries, utcnow

DEFAULT_TTL_S = 15 * 60.0
EVIDENCE_PER_CHECK = 3  # known objects tried before the path is declared not working


class LookupProofs:
    """Per (vendor, account): the endpoints whose lookups are proven, and the evidence to prove
    them with. Thread-safe (the delivery engine's sending threads share one)."""

    def __init__(self, vendor: str, account: str, engine: Engine | None = None, *,
                 ttl_s: float = DEFAULT_TTL_S, min_age_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.vendor = vendor
        self.account = account
        self.engine = engine
        self.ttl_s = ttl_s
        self.min_age_s = min_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._proven_at: dict[str, float] = {}
        self._seen: dict[str, deque] = {}  # endpoint -> payloads accepted in this process

    def note_accepted(self, endpoint: str, payload: dict) -> None:
        """The vendor just accepted ``payload`` at ``endpoint`` (its own answer): evidence."""
        with self._lock:
            self._seen.setdefault(endpoint, deque(maxlen=EVIDENCE_PER_CHECK)).append((self._clock(), payload))

    def is_proven(self, endpoint: str) -> bool:
        with self._lock:
            proven_at = self._proven_at.get(endpoint)
            return proven_at is not None and self._clock() - proven_at < self.ttl_s

    def mark_proven(self, endpoint: str) -> None:
        with self._lock:
            self._proven_at[endpoint] = self._clock()

    def forget(self, endpoint: str) -> None:
        with self._lock:
            self._proven_at.pop(endpoint, None)

    def evidence(self, endpoint: str, limit: int = EVIDENCE_PER_CHECK) -> list[tuple[str, dict]]:
        """Up to ``limit`` ``(event_type, payload)`` the vendor accepted at ``endpoint`` with its own
        answer, at least ``min_age_s`` ago: completed purchases before carts, newest first."""
        found: list[tuple[str, dict]] = []
        now = self._clock()
        with self._lock:
            seen = [p for at, p in self._seen.get(endpoint, ()) if now - at >= self.min_age_s]
        found.extend(("seen", p) for p in reversed(seen))
        if self.engine is not None and len(found) < limit:
            cutoff = utcnow() - timedelta(seconds=self.min_age_s)
            query = (select(deliveries.c.event_type, deliveries.c.payload)
                     .where(deliveries.c.vendor == self.vendor, deliveries.c.account == self.account,
                            deliveries.c.state == ACCEPTED, deliveries.c.endpoint == endpoint,
                            deliveries.c.vendor_error.is_(None), deliveries.c.accepted_at <= cutoff)
                     .order_by(deliveries.c.id.desc()).limit(limit * 4))
            with self.engine.connect() as conn:
                rows = [(event_type, json.loads(payload)) for event_type, payload in conn.execute(query)]
            rows.sort(key=lambda row: row[0] != "purchase")  # stable: newest first within each kind
            found.extend(rows)
        return found[:limit]


__all__ = ["DEFAULT_TTL_S", "LookupProofs"]
