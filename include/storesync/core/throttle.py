"""Client-side rate limiters: keep every request storesync sends inside the vendor's budget.

Pure Python (plus SQLAlchemy Core for the shared limiter); no Airflow.

Every limiter has the same two-method shape (``RateLimiter``):

- ``acquire(cost=1) -> float`` blocks until ``cost`` requests may be sent and returns the seconds
  it waited;
- ``penalize(seconds)`` is called after the vendor answered 429: nobody using this limiter sends
  for that long, whatever budget seemed to be left.

| limiter               | budget kept where            | use                                          |
|-----------------------|------------------------------|----------------------------------------------|
| ``TokenBucket``       | this process                 | one process owns the account                 |
| ``SharedWindowLimiter`` | a table in the ledger DB   | Sendlane: 240/min per *account*, shared by every DAG, process and host using it |
| ``SharedWindowLimiter`` + ``observe`` | the ledger DB, steered by headers | Sailthru with a ledger: per account, endpoint and method, shared the same way |
| ``HeaderThrottle``    | the vendor's own headers     | Sailthru alone: per (endpoint, method) budget announced on every response |
| ``Unlimited``         | nowhere                      | benchmarks with the vendor's limits switched off |

Permits taken ahead (``try_reserve``): the delivery engine takes a request's admission *before*
it claims the row (a claimed row is ``sending``, and a crash turns ``sending`` into "unknown", so
no row may wait for budget once claimed). ``try_reserve(cost)`` never blocks: it returns a
``Permit`` or the seconds to wait before asking again. The thread that sends the row runs the
request inside ``prepaid(permit)``: the first admission that thread asks of that limiter is the
permit, so the client's own retry loop does not take a second one. A permit never used (the
request was refused locally, the claim lost a race) is handed back.

A limiter that is shared through a database is keyed by an *account fingerprint*
(``storesync.core.config.fingerprint``, e.g. ``"sendlane:" + fingerprint(api_token)``): a hash of
the credential, never the credential itself, so the table can be read by anyone who can read the
ledger.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

from sqlalchemy import Column, Float, Index, MetaData, String, Table, create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.schema import CreateIndex, CreateTable

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@runtime_checkable
class RateLimiter(Protocol):
    def acquire(self, cost: int = 1) -> float:
        """Block until ``cost`` requests may be sent; return the seconds waited."""

    def penalize(self, seconds: float) -> None:
        """The vendor said 429: let nobody using this limiter send for ``seconds``."""


@runtime_checkable
class ObservesResponses(Protocol):
    """A limiter that learns the vendor's remaining budget from each response's headers."""

    def observe(self, headers: Mapping[str, str]) -> None: ...


@runtime_checkable
class HoldsUntilAnswered(Protocol):
    """A limiter that can count a request from its admission until its answer came back.

    ``acquire_until_answered(cost)`` blocks like ``acquire`` and returns ``settle``: the caller
    calls it once the request is over (answered, failed or timed out). Until then the admission
    counts against the budget whatever its age; from then on it counts like an admission made at
    that moment. Whenever the vendor counted the request, it was between the two, so the budget
    holds however late the request reached the vendor. ``settle`` never raises."""

    def acquire_until_answered(self, cost: int = 1) -> Callable[[], None]: ...


@runtime_checkable
class Reserves(Protocol):
    """A limiter that can admit a request ahead of it without blocking (see ``Permit``)."""

    def try_reserve(self, cost: int = 1) -> tuple[Permit | None, float]:
        """A permit now, or ``(None, seconds to wait before asking again)``."""


def _check_cost(cost: int, capacity: float) -> None:
    if cost < 1:
        raise ValueError(f"cost must be at least 1, got {cost}")
    if cost > capacity:
        # Such a request could never be admitted: fail now instead of blocking forever.
        raise ValueError(f"cost {cost} exceeds the limiter's capacity {capacity:g}")


def _nothing() -> None:
    return None


class Permit:
    """One admission taken ahead of its request (``try_reserve``). ``settle`` (once the request is
    over) and ``cancel`` (it never left) are each safe to call more than once; after one, the
    other does nothing."""

    __slots__ = ("limiter", "_settle", "_cancel", "used", "closed")

    def __init__(self, limiter: RateLimiter, settle: Callable[[], None] = _nothing,
                 cancel: Callable[[], None] = _nothing) -> None:
        self.limiter = limiter
        self._settle, self._cancel = settle, cancel
        self.used = False  # handed to the request it was taken for
        self.closed = False

    def settle(self) -> None:
        if not self.closed:
            self.closed = True
            self._settle()

    def cancel(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel()


_prepaid = threading.local()


@contextmanager
def prepaid(permit: Permit | None) -> Iterator[None]:
    """Inside, this thread's next admission from ``permit.limiter`` is ``permit`` (no wait); a
    permit still unused on the way out is handed back (``cancel``)."""
    _prepaid.permit = permit
    try:
        yield
    finally:
        _prepaid.permit = None
        if permit is not None and not permit.used:
            permit.cancel()


def _take_prepaid(limiter) -> Permit | None:
    permit = getattr(_prepaid, "permit", None)
    if permit is None or permit.used or permit.limiter is not limiter:
        return None
    permit.used = True
    return permit


class TokenBucket:
    """In-process token bucket, safe to share between threads.

    Tokens drip in at ``rate_per_minute / 60`` per second up to ``burst``. Any interval of ``W``
    seconds admits at most ``burst + rate_per_minute * W / 60`` requests, so the default burst of
    1 paces requests evenly and a full bucket can never add a second minute's worth on top of the
    first (a burst of ``rate_per_minute`` would allow twice the rate in the first minute).
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.rate_per_second = rate_per_minute / 60.0
        self.burst = 1 if burst is None else burst
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._updated_at = clock()
        self._paused_until = float("-inf")

    def _refill(self, now: float) -> None:
        # A pause stops the drip too: after it, the bucket starts from what it held, not full.
        earning_from = max(self._updated_at, self._paused_until)
        if now > earning_from:
            self._tokens = min(self.burst, self._tokens + (now - earning_from) * self.rate_per_second)
        self._updated_at = now

    def _take(self, cost: int) -> float:
        """Take ``cost`` tokens (0.0) or say how long until they may be there."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            if now < self._paused_until:
                return self._paused_until - now
            if self._tokens >= cost:
                self._tokens -= cost
                return 0.0
            return (cost - self._tokens) / self.rate_per_second

    def acquire(self, cost: int = 1) -> float:
        _check_cost(cost, self.burst)
        if _take_prepaid(self):
            return 0.0
        started = self._clock()
        while (wait := self._take(cost)) > 0:
            # Sleep outside the lock; on waking, compete again (a penalty may have arrived).
            self._sleep(wait)
        return self._clock() - started

    def try_reserve(self, cost: int = 1) -> tuple[Permit | None, float]:
        _check_cost(cost, self.burst)
        wait = self._take(cost)
        if wait > 0:
            return None, wait

        def give_back() -> None:
            with self._lock:
                self._tokens = min(float(self.burst), self._tokens + cost)

        return Permit(self, cancel=give_back), 0.0

    def penalize(self, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = 0.0
            self._paused_until = max(self._paused_until, now + max(0.0, seconds))


class Unlimited:
    """No client-side budget (benchmarks with the vendor's limits off).

    It still honours ``penalize``: a 429 is the vendor speaking, not a client-side guess.
    """

    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._paused_until = float("-inf")

    def acquire(self, cost: int = 1) -> float:
        _check_cost(cost, float("inf"))
        if _take_prepaid(self):
            return 0.0
        with self._lock:
            wait = self._paused_until - self._clock()
        if wait <= 0:
            return 0.0
        self._sleep(wait)
        return wait

    def try_reserve(self, cost: int = 1) -> tuple[Permit | None, float]:
        _check_cost(cost, float("inf"))
        with self._lock:
            wait = self._paused_until - self._clock()
        return (None, wait) if wait > 0 else (Permit(self), 0.0)

    def penalize(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))


class HeaderThrottle:
    """One Sailthru budget (one endpoint and method), steered by the vendor's response headers.

    Sailthru announces ``X-Rate-Limit-Limit``, ``-Remaining`` and ``-Reset`` (unix seconds, the end
    of its per-minute window) on every response. Locally, each admitted request takes one from
    ``remaining`` at once, because responses to requests still in flight have not said so yet; a
    header lowers ``remaining`` for the same window, or replaces it when the vendor's window moved
    on. When nothing is left it waits until ``reset + margin_s`` (the margin absorbs skew between
    our clock and Sailthru's). Until the first header arrives it assumes ``limit_per_minute`` per
    minute from first use.
    """

    def __init__(
        self,
        limit_per_minute: int = 40,
        *,
        margin_s: float = 1.0,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
    ) -> None:
        if limit_per_minute < 1:
            raise ValueError("limit_per_minute must be at least 1")
        self.margin_s = margin_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._limit = limit_per_minute
        self._remaining = limit_per_minute
        self._reset_at = float("-inf")
        self._reset_is_vendors = False
        self._paused_until = float("-inf")

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def remaining(self) -> int:
        return self._remaining

    def _take(self, cost: int) -> tuple[float, float]:
        """``(0.0, the window's reset)`` once ``cost`` is taken, else ``(seconds to wait, _)``."""
        with self._lock:
            _check_cost(cost, self._limit)
            now = self._clock()
            if now >= self._reset_at + self.margin_s:
                # The window is over (or nothing is known yet): assume a fresh one until a
                # header says otherwise.
                self._remaining = self._limit
                self._reset_at = now + 60.0
                self._reset_is_vendors = False
            if now < self._paused_until:
                return self._paused_until - now, 0.0
            if self._remaining >= cost:
                self._remaining -= cost
                return 0.0, self._reset_at
            return self._reset_at + self.margin_s - now, 0.0

    def acquire(self, cost: int = 1) -> float:
        if _take_prepaid(self):
            return 0.0
        started = self._clock()
        while (wait := self._take(cost)[0]) > 0:
            self._sleep(wait)
        return self._clock() - started

    def try_reserve(self, cost: int = 1) -> tuple[Permit | None, float]:
        wait, reset_at = self._take(cost)
        if wait > 0:
            return None, wait

        def give_back() -> None:
            with self._lock:
                if self._reset_at == reset_at:  # the same window: the request never counted
                    self._remaining = min(self._limit, self._remaining + cost)

        return Permit(self, cancel=give_back), 0.0

    def penalize(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def observe(self, headers: Mapping[str, str]) -> None:
        try:
            limit = int(headers["X-Rate-Limit-Limit"])
            remaining = int(headers["X-Rate-Limit-Remaining"])
            reset_at = float(headers["X-Rate-Limit-Reset"])
        except (KeyError, TypeError, ValueError):
            return  # not every answer (a proxy's 502, say) carries the headers
        if limit < 1:
            return
        with self._lock:
            if self._reset_is_vendors and reset_at == self._reset_at:
                self._remaining = min(self._remaining, remaining)
            elif reset_at > self._reset_at or not self._reset_is_vendors:
                self._remaining = remaining
                self._reset_at = reset_at
                self._reset_is_vendors = True
            else:
                return  # a late answer from a window that is already over
            self._limit = limit


class PerEndpointLimiters:
    """One limiter per (endpoint, method), made by ``factory`` on first use (Sailthru's limits are
    per endpoint and method). ``keyed=True``: the factory is called with ``(endpoint, method)``
    (a shared limiter needs them in its key)."""

    def __init__(self, factory: Callable[..., RateLimiter], *, keyed: bool = False) -> None:
        self._factory = factory
        self._keyed = keyed
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str], RateLimiter] = {}

    def __call__(self, endpoint: str, method: str) -> RateLimiter:
        key = (endpoint.strip("/"), method.upper())
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = self._limiters[key] = self._factory(*key) if self._keyed else self._factory()
            return limiter


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


__all__ = [
    "HeaderThrottle",
    "HoldsUntilAnswered",
    "ObservesResponses",
    "PerEndpointLimiters",
    "RateLimiter",
    "SharedWindowLimiter",
    "TokenBucket",
    "Unlimited",
    "rate_slots",
    "rate_slots_metadata",
]
