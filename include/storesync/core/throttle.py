"""Client-side rate limiters: keep every request storesync sends inside the vendor's budget.

Pure Python; no Airflow. The limiter shared through the ledger database, ``SharedWindowLimiter``,
lives in ``storesync.core.shared_budget`` (it needs SQLAlchemy) and is importable from here.

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

A limiter that is shared through a database is keyed by the *account key*
(``storesync.pipeline.vendor_clients.budget_key``: ``account_id``, else a fingerprint of the
credential, never the credential itself), so the table can be read by anyone who can read the
ledger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

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


class StackedLimiter:
    """Several budgets at once (a share of the account's budget on top of the account's budget,
    say): a request goes only when every one admits it; a 429 pauses all; headers reach all that
    read them. Admissions taken ahead (``try_reserve``) take one from each or none; a component
    that cannot reserve ahead makes the stack say so (``(None, 0.0)``: the caller then admits at
    send time, through ``acquire``)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("a stack needs at least one limiter")
        self.limiters = limiters

    def acquire(self, cost: int = 1) -> float:
        if _take_prepaid(self):
            return 0.0
        return sum(limiter.acquire(cost) for limiter in self.limiters)

    def acquire_until_answered(self, cost: int = 1) -> Callable[[], None]:
        permit = _take_prepaid(self)
        if permit is not None:
            return permit.settle
        settles = [limiter.acquire_until_answered(cost) if isinstance(limiter, HoldsUntilAnswered)
                   else (limiter.acquire(cost), _nothing)[1] for limiter in self.limiters]
        return _all(settles)

    def try_reserve(self, cost: int = 1) -> tuple[Permit | None, float]:
        if not all(isinstance(limiter, Reserves) for limiter in self.limiters):
            return None, 0.0
        taken: list[Permit] = []
        for limiter in self.limiters:
            permit, wait = limiter.try_reserve(cost)
            if permit is None:
                for other in taken:  # all or nothing
                    other.cancel()
                return None, max(wait, 1e-3)
            taken.append(permit)
        return Permit(self, settle=_all([p.settle for p in taken]), cancel=_all([p.cancel for p in taken])), 0.0

    def penalize(self, seconds: float) -> None:
        for limiter in self.limiters:
            limiter.penalize(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        for limiter in self.limiters:
            if isinstance(limiter, ObservesResponses):
                limiter.observe(headers)


def _all(calls: list[Callable[[], None]]) -> Callable[[], None]:
    def run() -> None:
        for call in calls:
            call()

    return run


_SHARED = ("SharedWindowLimiter", "rate_slots", "rate_slots_metadata")


def __getattr__(name: str):
    # The shared limiter lives in storesync.core.shared_budget (it needs SQLAlchemy); importable
    # from here too, as it always was.
    if name in _SHARED:
        from storesync.core import shared_budget

        return getattr(shared_budget, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HeaderThrottle",
    "HoldsUntilAnswered",
    "ObservesResponses",
    "PerEndpointLimiters",
    "Permit",
    "RateLimiter",
    "Reserves",
    "SharedWindowLimiter",
    "StackedLimiter",
    "TokenBucket",
    "Unlimited",
    "prepaid",
    "rate_slots",
    "rate_slots_metadata",
]
