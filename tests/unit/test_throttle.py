"""Rate limiters: token-bucket math on a fake clock, header-driven Sailthru budgets, and one
budget shared by two OS processes through SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import text

from storesync.core.throttle import (
    HeaderThrottle,
    PerEndpointLimiters,
    RateLimiter,
    SharedWindowLimiter,
    TokenBucket,
    Unlimited,
)


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# ------------------------------------------------------------------ TokenBucket
def test_token_bucket_paces_evenly_by_default():
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)  # one per second, burst 1
    waits = [bucket.acquire() for _ in range(5)]
    assert waits == pytest.approx([0.0, 1.0, 1.0, 1.0, 1.0])
    assert clock.now == pytest.approx(1_004.0)


def test_token_bucket_burst_then_rate():
    clock = FakeClock()
    bucket = TokenBucket(120, burst=3, clock=clock, sleep=clock.sleep)  # two per second
    waits = [bucket.acquire() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.5, 0.5])


def test_token_bucket_refills_while_idle_but_never_beyond_burst():
    clock = FakeClock()
    bucket = TokenBucket(60, burst=2, clock=clock, sleep=clock.sleep)
    bucket.acquire(2)
    clock.now += 100.0  # a long idle time earns at most `burst` tokens
    assert [bucket.acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_token_bucket_any_minute_admits_at_most_burst_plus_rate():
    clock = FakeClock()
    bucket = TokenBucket(240, burst=1, clock=clock, sleep=clock.sleep)
    admitted = []
    for _ in range(600):
        bucket.acquire()
        admitted.append(clock.now)
    for i, start in enumerate(admitted):
        in_minute = sum(1 for t in admitted[i:] if t < start + 60.0)
        assert in_minute <= 240 + 1


def test_token_bucket_penalty_stops_everyone_then_resumes_at_pace():
    clock = FakeClock()
    bucket = TokenBucket(60, burst=5, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    bucket.penalize(10.0)
    # Nothing for 10 s, and no tokens were earned during the pause: one more second for the next.
    assert bucket.acquire() == pytest.approx(11.0)


def test_token_bucket_refuses_a_cost_it_could_never_admit():
    with pytest.raises(ValueError):
        TokenBucket(60, burst=2).acquire(3)


def test_token_bucket_is_thread_safe_under_real_time():
    bucket = TokenBucket(1200, burst=1)  # 20 per second
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [bucket.acquire() for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 20 admissions at 20/s with a burst of 1 need at least 19 intervals of 50 ms.
    assert time.monotonic() - started >= 0.9


# ------------------------------------------------------------------ Unlimited
def test_unlimited_never_waits_but_honours_a_penalty():
    clock = FakeClock()
    limiter = Unlimited(clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(1000)] == [0.0] * 1000
    limiter.penalize(3.0)
    assert limiter.acquire() == pytest.approx(3.0)
    assert limiter.acquire() == 0.0


@pytest.mark.parametrize("limiter", [TokenBucket(60), Unlimited(), HeaderThrottle()])
def test_every_limiter_has_the_protocol(limiter):
    assert isinstance(limiter, RateLimiter)


# ------------------------------------------------------------------ HeaderThrottle
def headers(limit: int, remaining: int, reset: float) -> dict:
    return {"X-Rate-Limit-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(int(reset))}


def test_header_throttle_assumes_its_budget_until_told_otherwise():
    clock = FakeClock()
    throttle = HeaderThrottle(2, margin_s=1.0, clock=clock, sleep=clock.sleep)
    assert throttle.acquire() == 0.0
    assert throttle.acquire() == 0.0
    # Budget of the assumed 60 s window spent: wait for its end plus the margin.
    assert throttle.acquire() == pytest.approx(61.0)


def test_header_throttle_waits_for_the_vendors_reset_when_nothing_remains():
    clock = FakeClock(1_000.0)
    throttle = HeaderThrottle(40, margin_s=1.0, clock=clock, sleep=clock.sleep)
    throttle.acquire()
    throttle.observe(headers(40, 0, 1_020))
    assert throttle.acquire() == pytest.approx(21.0)  # until reset (1020) + margin
    assert throttle.limit == 40


def test_header_throttle_counts_in_flight_requests_locally():
    clock = FakeClock(1_000.0)
    throttle = HeaderThrottle(40, clock=clock, sleep=clock.sleep)
    throttle.acquire()
    throttle.observe(headers(300, 3, 1_030))  # the vendor's budget is 300 and 3 are left
    for _ in range(3):
        assert throttle.acquire() == 0.0
    # A late answer from before those three still says 2 remain: the local count (0) wins.
    throttle.observe(headers(300, 2, 1_030))
    assert throttle.remaining == 0
    assert throttle.acquire() == pytest.approx(31.0)


def test_header_throttle_ignores_answers_from_an_older_window():
    clock = FakeClock(1_000.0)
    throttle = HeaderThrottle(40, clock=clock, sleep=clock.sleep)
    throttle.acquire()
    throttle.observe(headers(40, 10, 1_060))
    throttle.observe(headers(40, 39, 1_000))  # a straggler from the previous minute
    assert throttle.remaining == 10


def test_header_throttle_ignores_answers_without_headers():
    throttle = HeaderThrottle(40)
    throttle.observe({"Content-Type": "text/html"})
    assert throttle.remaining == 40


def test_header_throttle_penalty():
    clock = FakeClock()
    throttle = HeaderThrottle(40, clock=clock, sleep=clock.sleep)
    throttle.penalize(5.0)
    assert throttle.acquire() == pytest.approx(5.0)


def test_per_endpoint_limiters_are_separate_per_endpoint_and_method():
    limiters = PerEndpointLimiters(lambda: HeaderThrottle(40))
    assert limiters("purchase", "POST") is limiters("/purchase", "post")
    assert limiters("purchase", "POST") is not limiters("purchase", "GET")
    assert limiters("purchase", "POST") is not limiters("user", "POST")


# ------------------------------------------------------------------ SharedWindowLimiter
# ``db_url``: an empty SQLite file, and an empty PostgreSQL database (skipped outside CI without one).
def test_shared_window_admits_limit_then_waits_for_the_oldest_to_age_out(db_url):
    clock = FakeClock()
    limiter = SharedWindowLimiter(db_url, "sendlane:abc", 3,
                                  window_s=10.0, margin_s=1.0, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    waited = limiter.acquire()
    assert waited == pytest.approx(11.0, abs=0.01)  # window + margin after the first slot


def test_shared_window_held_slot_counts_until_its_answer_then_a_window_more(db_url):
    """However long a request takes to reach the vendor, its slot counts until the answer."""
    clock = FakeClock()
    limiter = SharedWindowLimiter(db_url, "sendlane:abc", 1,
                                  window_s=10.0, margin_s=1.0, clock=clock, sleep=clock.sleep)
    settle = limiter.acquire_until_answered()
    clock.now += 50.0  # far past window + margin: an admission-stamped slot would be gone
    settle()
    settle()  # idempotent
    assert limiter.acquire() == pytest.approx(11.0, abs=0.01)  # window + margin after the answer


def test_shared_window_unsettled_slot_counts_until_its_lease_ends(db_url):
    clock = FakeClock()
    limiter = SharedWindowLimiter(db_url, "sendlane:abc", 1, window_s=10.0, margin_s=1.0,
                                  in_flight_s=5.0, clock=clock, sleep=clock.sleep)
    limiter.acquire_until_answered()  # its process "dies": never settled
    assert limiter.acquire() == pytest.approx(16.0, abs=0.3)  # lease + window + margin


def test_shared_window_keys_are_separate_budgets(db_url):
    url = db_url
    clock = FakeClock()
    first = SharedWindowLimiter(url, "sendlane:aaa", 1, clock=clock, sleep=clock.sleep)
    second = SharedWindowLimiter(url, "sendlane:bbb", 1, clock=clock, sleep=clock.sleep)
    assert first.acquire() == 0.0
    assert second.acquire() == 0.0


def test_shared_window_penalty_reaches_every_instance(db_url):
    url = db_url
    clock = FakeClock()
    one = SharedWindowLimiter(url, "sendlane:abc", 100, clock=clock, sleep=clock.sleep)
    other = SharedWindowLimiter(url, "sendlane:abc", 100, clock=clock, sleep=clock.sleep)
    one.penalize(7.0)
    assert other.acquire() == pytest.approx(7.0, abs=0.01)


def test_shared_window_refuses_memory_databases_and_long_keys(tmp_path):
    with pytest.raises(ValueError):
        SharedWindowLimiter("sqlite://", "sendlane:abc", 10)
    with pytest.raises(ValueError):
        SharedWindowLimiter(f"sqlite:///{tmp_path / 'x.db'}", "x" * 200, 10)


def test_shared_window_transactions_are_serialized_per_key(db_url):
    """While one transaction holds the key's lock (SQLite's write lock, PostgreSQL's advisory lock),
    another limiter on the same key cannot count and admit: it waits for the commit."""
    holder = SharedWindowLimiter(db_url, "sendlane:abc", 100)
    other = SharedWindowLimiter(db_url, "sendlane:abc", 100)
    admitted_at: list[float] = []
    with holder.engine.begin() as conn:
        if holder.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('sendlane:abc'))"))
        thread = threading.Thread(target=lambda: admitted_at.append((other.acquire(), time.monotonic())[1]))
        thread.start()
        time.sleep(0.5)
        released_at = time.monotonic()
    thread.join(timeout=30)
    assert admitted_at and admitted_at[0] >= released_at


_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from storesync.core.throttle import SharedWindowLimiter

    url, start_at, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    limiter = SharedWindowLimiter(url, "sendlane:0123456789abcdef", limit=10, window_s=2.0, margin_s=0.25)
    time.sleep(max(0.0, start_at - time.time()))
    admitted = []
    for _ in range(count):
        limiter.acquire()
        admitted.append(time.time())
    print(json.dumps(admitted))
    """
)


def test_two_processes_never_exceed_the_shared_limit_in_any_window(db_url):
    """Two OS processes, one budget of 10 per 2 s: over ~6 s, no 2-second window of the merged
    admissions holds more than 10 (the limiter itself keeps 10 per 2.25 s, so measuring after
    the fact has 0.25 s of slack for scheduling noise)."""
    url = db_url
    SharedWindowLimiter(url, "sendlane:0123456789abcdef", limit=10)  # create the table up front
    start_at = time.time() + 3.0  # both interpreters are up and importing by then
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, str(start_at), "15"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    admitted = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        admitted.extend(json.loads(out))
    admitted.sort()
    assert len(admitted) == 30
    busiest = max(sum(1 for t in admitted[i:] if t < start + 2.0) for i, start in enumerate(admitted))
    assert busiest <= 10
    # And the budget was used, not just respected: 30 admissions need at least two full windows.
    assert admitted[-1] - admitted[0] >= 2 * 2.25 - 0.1
