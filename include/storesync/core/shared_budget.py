"""The rate limiter shared through the ledger database: one budget for every process, DAG,
Celery worker and host that sends for the same vendor account (Sendlane's per account, Sailthru's
per account, endpoint and method).

Apart from ``storesync.core.throttle`` (which re-exports it) because it needs SQLAlchemy and a
database; the in-process limiters need neither.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import Column, Float, Index, MetaData, String, Table, create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from storesync.core.throttle import Clock, Permit, Sleep, _check_cost, _take_prepaid

log = logging.getLogger(__name__)


rate_slots_metadata = MetaData()

rate_slots = Table(
    "storesync_rate_slots",
    rate_slots_metadata,
    Column("key", String(80), nullable=False),
    # Wall-clock unix seconds: processes on different hosts must share one time line.
    Column("slot_at", Float, nullable=False),
    Index("ix_storesync_rate_slots_key_slot_at", "key", "slot_at"),
)

_PAUSE_SUFFIX = "#paused"


class SharedWindowLimiter:
    """One request budget shared by every process and host that sends for the same account.

    Why it is shaped so: Sendlane allows 240 requests per minute per *account*, counted over every
    key and integration on it. Two DAGs syncing the same account run in different processes (and,
    with Celery, on different hosts); each with its own in-process bucket of 200/min would send
    400/min together and be answered 429, then locked out (403) after too many errors. So the
    budget lives in the one place they all share: the ledger database.

    It is a sliding-window log: table ``storesync_rate_slots(key, slot_at)`` holds one row per
    admitted request. ``acquire`` runs one short transaction that, holding a lock per key,
    deletes the slots older than ``window_s + margin_s``, counts the rest and inserts ``cost`` new
    slots if ``count + cost <= limit``; otherwise it computes when enough slots will age out,
    commits, sleeps outside the transaction and tries again. So any ``window_s + margin_s`` seconds
    hold at most ``limit`` admissions, in whichever process they happened.

    The margin: a request is *admitted* here but *counted* by the vendor when it arrives, a
    variable latency later. Without a margin, a request admitted right at the client's window edge
    could arrive inside the vendor's window together with the ``limit`` ones before it. Counting
    over ``window_s + margin_s`` keeps that from happening while latency jitter stays under
    ``margin_s`` (and the same margin absorbs modest clock skew between hosts).

    Latency: ``acquire`` stamps a slot with its admission time, so it only holds while the time a
    request takes to reach the vendor varies by less than ``margin_s``. A busy host breaks that
    (a 2-second test window has a 0.1 s margin; delays of 0.2 s were measured under load). So the
    HTTP retry loop uses ``acquire_until_answered``: the slot is inserted *in flight*, stamped
    ``in_flight_s`` ahead (a lease, for a process that dies mid-request), and ``settle`` restamps
    it with the time the answer came back. The vendor counted the request somewhere between the
    two, and a slot counts over that whole span and the window after it: no latency, however
    large, lets more than ``limit`` requests reach the vendor within one ``window_s``. The margin
    then only covers clock skew between hosts.

    The per-key lock: SQLite takes the database write lock up front (``BEGIN IMMEDIATE``), so two
    transactions cannot both count "under the limit" and both insert; PostgreSQL takes
    ``pg_advisory_xact_lock(hashtext(key))``, which serializes only this account's limiter and is
    released at commit. ``penalize`` stores a ``<key>#paused`` row whose ``slot_at`` is the end of
    the pause, so a 429 seen by one process stops all of them.
    """

    def __init__(
        self,
        engine_or_url: Engine | str,
        key: str,
        limit: int,
        window_s: float = 60.0,
        margin_s: float = 1.0,
        *,
        in_flight_s: float = 300.0,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        on_admit: Callable[[float], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window_s <= 0 or margin_s < 0:
            raise ValueError("window_s must be positive and margin_s not negative")
        if in_flight_s <= 0:
            raise ValueError("in_flight_s must be positive")
        if not key or len(key) + len(_PAUSE_SUFFIX) > rate_slots.c.key.type.length:
            raise ValueError("key must be a short account fingerprint, e.g. 'sendlane:<16 hex>'")
        self.key = key
        self.limit = limit
        self.window_s = window_s
        self.margin_s = margin_s
        # How long an unsettled admission counts before it is presumed over (its process died):
        # longer than any request with its timeouts. A wait for one to settle polls this often.
        self.in_flight_s = in_flight_s
        self._settle_poll_s = max(0.01, min(0.25, window_s / 40))
        self._pause_key = key + _PAUSE_SUFFIX
        self._clock = clock
        self._sleep = sleep
        # Called with each admission's time as stamped under the key's lock (metrics, tests).
        self._on_admit = on_admit
        self.engine = _limiter_engine(engine_or_url)
        self._is_postgres = self.engine.dialect.name == "postgresql"
        with self.engine.begin() as conn:
            if self._is_postgres:
                # Two first-ever users racing "CREATE TABLE IF NOT EXISTS" can still collide in
                # PostgreSQL's catalog: serialize the DDL too.
                conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(rate_slots.name))))
            conn.execute(CreateTable(rate_slots, if_not_exists=True))
            for index in rate_slots.indexes:
                conn.execute(CreateIndex(index, if_not_exists=True))

    def __repr__(self) -> str:
        return f"SharedWindowLimiter(key={self.key!r}, limit={self.limit}, window_s={self.window_s:g})"

    def acquire(self, cost: int = 1) -> float:
        _check_cost(cost, self.limit)
        permit = _take_prepaid(self)
        if permit is not None:
            permit.settle()  # counted from now on, like an admission made now
            return 0.0
        started = self._clock()
        while True:
            wait, _ = self._try_admit(cost, held=False)
            if wait <= 0:
                return self._clock() - started
            self._sleep(wait)

    def acquire_until_answered(self, cost: int = 1) -> Callable[[], None]:
        """``acquire``, with the slots counted as in flight until the returned ``settle`` is called
        (see the class docstring)."""
        _check_cost(cost, self.limit)
        permit = _take_prepaid(self)
        if permit is not None:
            return permit.settle
        while True:
            wait, stamp = self._try_admit(cost, held=True)
            if wait <= 0:
                break
            self._sleep(wait)
        return self._settler(stamp)

    def try_reserve(self, cost: int = 1) -> tuple[Permit | None, float]:
        """One attempt at admitting ``cost`` slots, held until answered (``Permit.settle``) or
        handed back (``Permit.cancel`` deletes them)."""
        _check_cost(cost, self.limit)
        wait, stamp = self._try_admit(cost, held=True)
        if wait > 0:
            return None, wait
        return Permit(self, settle=self._settler(stamp), cancel=self._canceller(stamp)), 0.0

    def _canceller(self, stamp: float) -> Callable[[], None]:
        def cancel() -> None:
            try:
                with self.engine.begin() as conn:
                    self._lock_key(conn)
                    conn.execute(rate_slots.delete().where(rate_slots.c.key == self.key,
                                                           rate_slots.c.slot_at == stamp))
            except Exception:  # noqa: BLE001 - the slot then counts until its lease ends: safe
                log.warning("could not hand back a %s rate slot", self.key, exc_info=True)

        return cancel

    def _lock_key(self, conn) -> None:
        if self._is_postgres:
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(self.key))))

    def _settler(self, stamp: float) -> Callable[[], None]:
        settled = False

        def settle() -> None:
            nonlocal settled
            if settled:
                return
            settled = True
            try:
                with self.engine.begin() as conn:
                    if self._is_postgres:
                        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(self.key))))
                    conn.execute(rate_slots.update()
                                 .where(rate_slots.c.key == self.key, rate_slots.c.slot_at == stamp)
                                 .values(slot_at=self._clock()))
            except Exception:  # noqa: BLE001 - never turn an answered request into an error
                # The slot stays in flight until its lease ends: the budget errs on the safe side.
                log.warning("could not settle a %s rate slot: it counts until its lease ends",
                            self.key, exc_info=True)

        return settle

    def _try_admit(self, cost: int, *, held: bool) -> tuple[float, float]:
        """One transaction: admit ``cost`` slots and return ``(0, their slot_at)``, or return how
        long to wait. ``held``: the slots are stamped in flight, with a ``slot_at`` no other slot of
        the key has (``settle`` finds them by it)."""
        with self.engine.begin() as conn:
            if self._is_postgres:
                conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(self.key))))
            now = self._clock()
            horizon = now - (self.window_s + self.margin_s)
            conn.execute(
                rate_slots.delete().where(
                    ((rate_slots.c.key == self.key) & (rate_slots.c.slot_at <= horizon))
                    | ((rate_slots.c.key == self._pause_key) & (rate_slots.c.slot_at <= now))
                )
            )
            paused_until = conn.execute(
                select(func.max(rate_slots.c.slot_at)).where(rate_slots.c.key == self._pause_key)
            ).scalar()
            if paused_until is not None:
                return paused_until - now, 0.0
            in_window = conn.execute(
                select(func.count()).select_from(rate_slots).where(rate_slots.c.key == self.key)
            ).scalar_one()
            if in_window + cost <= self.limit:
                stamp = now
                if held:
                    stamp = now + self.in_flight_s
                    while conn.execute(select(func.count()).select_from(rate_slots).where(
                            rate_slots.c.key == self.key, rate_slots.c.slot_at == stamp)).scalar_one():
                        stamp = math.nextafter(stamp, math.inf)
                conn.execute(rate_slots.insert(), [{"key": self.key, "slot_at": stamp}] * cost)
                if self._on_admit is not None:
                    self._on_admit(now)
                return 0.0, stamp
            # Wait until enough of the oldest slots have aged out of the window.
            must_expire = in_window + cost - self.limit
            oldest_needed = conn.execute(
                select(rate_slots.c.slot_at)
                .where(rate_slots.c.key == self.key)
                .order_by(rate_slots.c.slot_at)
                .offset(must_expire - 1)
                .limit(1)
            ).scalar_one()
            if oldest_needed > now:
                # Still in flight: it ages out a window after its answer, which may come any
                # moment. Look again soon.
                return self._settle_poll_s, 0.0
            # A hair past the horizon, so the retry finds the slot deleted (<= horizon).
            return max(oldest_needed - horizon, 0.0) + 1e-3, 0.0

    def penalize(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self.engine.begin() as conn:
            self._lock_key(conn)
            conn.execute(rate_slots.insert(), {"key": self._pause_key, "slot_at": self._clock() + seconds})

    def observe(self, headers: Mapping[str, str]) -> None:
        """Sailthru's ``X-Rate-Limit-*`` headers: ``Limit`` becomes this limiter's budget (the
        vendor knows its ceiling per endpoint better than a default does); ``Remaining: 0`` pauses
        every process on the key until ``Reset`` plus the margin (something else on the account,
        another integration say, spent the budget). The sliding-window count stays in force
        either way: the vendor's window may be fixed or sliding, and 60 s with at most ``limit``
        admissions satisfies both."""
        try:
            limit = int(headers["X-Rate-Limit-Limit"])
            remaining = int(headers["X-Rate-Limit-Remaining"])
            reset_at = float(headers["X-Rate-Limit-Reset"])
        except (KeyError, TypeError, ValueError):
            return  # not every answer (a proxy's 502, say) carries the headers
        if limit >= 1:
            self.limit = limit
        if remaining <= 0:
            self.penalize(reset_at + self.margin_s - self._clock())


def _limiter_engine(engine_or_url: Engine | str) -> Engine:
    """The engine the shared limiter runs its transactions on.

    PostgreSQL: the caller's engine as is (the advisory lock needs nothing special). SQLite: a
    private engine on the same file, because taking the write lock at ``BEGIN`` needs the driver's
    own transaction handling switched off (SQLAlchemy's documented pysqlite recipe), and that must
    not change the behaviour of an engine someone else owns. The file's folder is created if
    missing, as the ledger's default lives in a ``var/`` folder that a fresh checkout lacks.
    """
    url = make_url(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url.url
    if url.get_backend_name() != "sqlite":
        return engine_or_url if isinstance(engine_or_url, Engine) else create_engine(engine_or_url)
    if url.database in (None, "", ":memory:"):
        raise ValueError("SharedWindowLimiter needs a file database: an in-memory one is not shared")
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


__all__ = ["SharedWindowLimiter", "rate_slots", "rate_slots_metadata"]
