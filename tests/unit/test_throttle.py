"""Rate limiters: token-bucket math on a fake clock, header-driven Sailthru budgets, budgets
shared through the ledger database (Sendlane's per account, Sailthru's per account, endpoint and
method) by separate limiter objects and by two OS processes, and admissions taken ahead
(``try_reserve``/``prepaid``). No test reads the wall clock to decide whether a budget held: the
limiters' own (fake or locked) clocks do."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest
from sqlalchemy import text

from storesync.core.throttle import (
    HeaderThrottle,
    PerEndpointLimiters,
    RateLimiter,
    Reserves,
    SharedWindowLimiter,
    StackedLimiter,
    TokenBucket,
    Unlimited,
    prepaid,
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


def busiest_window(stamps: list[float], window_s: float) -> int:
    """The most admissions in any ``window_s`` (a sliding window, as a vendor may count)."""
    stamps = sorted(stamps)
    return max((sum(1 for t in stamps[i:] if t < start + window_s) for i, start in enumerate(stamps)), default=0)


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


@pytest.mark.parametrize("make", [lambda c: TokenBucket(60, burst=5, clock=c, sleep=c.sleep),
                                  lambda c: HeaderThrottle(5, clock=c, sleep=c.sleep)])
def test_limiters_are_thread_safe(make):
    """Eight threads race for a budget of five while time stands still: exactly five win."""
    limiter = make(FakeClock())
    start = threading.Barrier(8)
    won = []

    def race():
        start.wait()
        for _ in range(50):
            permit, _ = limiter.try_reserve()
            if permit is not None:
                won.append(permit)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 5


# ------------------------------------------------------------------ admissions taken ahead
@pytest.mark.parametrize("make", [lambda c: TokenBucket(60, burst=1, clock=c, sleep=c.sleep),
                                  lambda c: HeaderThrottle(1, clock=c, sleep=c.sleep)])
def test_a_reserved_admission_is_spent_by_its_thread_or_handed_back(make):
    clock = FakeClock()
    limiter = make(clock)
    permit, wait = limiter.try_reserve()
    assert permit is not None and wait == 0.0
    assert limiter.try_reserve()[0] is None  # the budget of one is taken
    with prepaid(permit):
        assert limiter.acquire() == 0.0  # spends the permit: no second admission, no wait
    assert permit.used and clock.now == 1_000.0
    # An unused one goes back: the next admission is free again.
    clock.sleep(61.0)
    unused, _ = limiter.try_reserve()
    with prepaid(unused):
        pass
    assert limiter.try_reserve()[0] is not None


def test_a_permit_is_spent_only_on_its_own_limiter():
    clock = FakeClock()
    mine = TokenBucket(60, burst=1, clock=clock, sleep=clock.sleep)
    other = TokenBucket(60, burst=1, clock=clock, sleep=clock.sleep)
    permit, _ = mine.try_reserve()
    other.acquire()
    with prepaid(permit):
        other.acquire()  # another limiter: waits its own second, the permit stays unused
    assert clock.now == pytest.approx(1_001.0)
    assert not permit.used and permit.closed  # handed back on the way out


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
    assert isinstance(limiter, RateLimiter) and isinstance(limiter, Reserves)


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
    """While one transaction holds the key's lock (SQLite's write lock, PostgreSQL's advisory lock)
    and has admitted the last slot of the budget, uncommitted, another limiter on the same key
    cannot count meanwhile: it waits for the commit, then finds the budget spent. (Counting
    without the lock, it would see no slot and admit a second request.)"""
    from sqlalchemy import event

    from storesync.core.throttle import rate_slots

    clock = FakeClock()
    holder = SharedWindowLimiter(db_url, "sendlane:abc", 1, clock=clock, sleep=clock.sleep)
    other = SharedWindowLimiter(db_url, "sendlane:abc", 1, clock=clock, sleep=clock.sleep)
    locking = threading.Event()

    @event.listens_for(other.engine, "before_cursor_execute")
    def _taking_the_lock(conn, cursor, statement, *args):
        if "BEGIN IMMEDIATE" in statement or "pg_advisory_xact_lock" in statement:
            locking.set()

    answers = []
    with holder.engine.begin() as conn:
        if holder.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('sendlane:abc'))"))
        conn.execute(rate_slots.insert(), {"key": "sendlane:abc", "slot_at": clock()})
        thread = threading.Thread(target=lambda: answers.append(other.try_reserve()))
        thread.start()
        assert locking.wait(timeout=60)  # the other limiter is at the lock (an event, not a timer)
        assert not answers or answers[0][0] is None
    thread.join(timeout=60)
    [(permit, wait)] = answers
    assert permit is None and wait > 0


_WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from storesync.core.throttle import SharedWindowLimiter

    url, go, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    stamps = []  # each admission's time, read under the key's lock
    limiter = SharedWindowLimiter(url, "sendlane:0123456789abcdef", limit=10, window_s=2.0, margin_s=0.25,
                                  on_admit=stamps.append)
    Path(sys.argv[2] + "." + sys.argv[4]).touch()  # ready
    while not go.exists():  # both start together, whenever both interpreters are up
        time.sleep(0.01)
    for _ in range(count):
        limiter.acquire()
    print(json.dumps(stamps))
    """
)


def test_two_processes_never_exceed_the_shared_limit_in_any_window(db_url, tmp_path):
    """Two OS processes, one budget of 10 per 2 s: no 2-second window of their merged admissions
    holds more than 10. The admissions are the limiter's own stamps, taken under the key's lock,
    so scheduling noise on a loaded machine cannot blur them."""
    url = db_url
    SharedWindowLimiter(url, "sendlane:0123456789abcdef", limit=10)  # create the table up front
    go = tmp_path / "go"
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, str(go), "15", str(n)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    ready = [tmp_path / f"go.{n}" for n in range(2)]
    while not all(path.exists() for path in ready):
        assert all(w.poll() is None for w in workers), [w.communicate()[1][-2000:] for w in workers]
        threading.Event().wait(0.01)
    go.touch()
    admitted, per_worker = [], []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        per_worker.append(json.loads(out))
        admitted.extend(per_worker[-1])
    assert len(admitted) == 30 and all(len(stamps) == 15 for stamps in per_worker)
    assert busiest_window(admitted, 2.0) <= 10
    # And the budget was used, not just respected: 30 admissions need at least two full windows.
    admitted.sort()
    assert admitted[-1] - admitted[0] >= 2 * 2.25 - 0.01


# ------------------------------------------------------------------ Sailthru's shared budgets
def sailthru_settings(budget: int = 40):
    from storesync.core.config import SailthruSettings

    return SailthruSettings(api_key="raw-api-key", secret="secret", account_id="acct-1", budget_per_minute=budget)


def test_sailthru_budgets_are_shared_per_account_endpoint_and_method(db_url):
    """Two DAGs' processes (two limiter sets on one database): POST /purchase on the account
    keeps 40 in any 60 s together, on a fake clock; other endpoints and methods have their own."""
    from storesync.pipeline.vendor_clients import sailthru_limiters

    clock = FakeClock()
    stamps: list[float] = []
    dags = [sailthru_limiters(sailthru_settings(), db_url, clock=clock, sleep=clock.sleep,
                              on_admit=stamps.append) for _ in range(2)]
    purchase = [dag("purchase", "POST") for dag in dags]
    assert purchase[0] is not purchase[1] and purchase[0].key == purchase[1].key
    assert purchase[0].key == "sailthru:acct-1:POST /purchase"  # the account key, never the API key
    for n in range(130):  # the two take turns, each as fast as the shared budget lets it
        purchase[n % 2].acquire()
    purchases = list(stamps)
    assert busiest_window(purchases, 60.0) == 40  # used to the full, never over
    assert clock.now - 1_000.0 >= 3 * 61.0
    # Content and lookups are separate budgets: their first request does not wait.
    before = clock.now
    dags[0]("content", "POST").acquire()
    dags[1]("purchase", "GET").acquire()
    assert clock.now == before


def test_a_held_sailthru_slot_counts_until_its_answer_whichever_process_asks(db_url):
    """A slow answer: the vendor may count the request late, so another process waits for a
    window after the answer, not after the admission."""
    from storesync.pipeline.vendor_clients import sailthru_limiters

    clock = FakeClock()
    one, other = (sailthru_limiters(sailthru_settings(budget=1), db_url, clock=clock, sleep=clock.sleep)
                  for _ in range(2))
    settle = one("purchase", "POST").acquire_until_answered()
    clock.now += 30.0  # the request takes 30 s
    settle()
    assert other("purchase", "POST").acquire() == pytest.approx(61.0, abs=0.3)


def test_sailthru_429_and_an_empty_remaining_pause_every_process(db_url):
    from storesync.pipeline.vendor_clients import sailthru_limiters

    clock = FakeClock(10_000.0)
    one, other = (sailthru_limiters(sailthru_settings(), db_url, clock=clock, sleep=clock.sleep)
                  for _ in range(2))
    one("purchase", "POST").penalize(12.0)  # a 429 / error 43 seen by one process
    assert other("purchase", "POST").acquire() == pytest.approx(12.0, abs=0.01)
    # The headers say the account's budget is spent (another integration used it): everyone
    # waits for the vendor's reset, plus the margin.
    one("purchase", "POST").observe(headers(40, 0, clock() + 20))
    assert other("purchase", "POST").acquire() == pytest.approx(21.0, abs=0.01)
    assert other("user", "POST").acquire() == 0.0  # another endpoint: its own budget


def test_sailthru_headers_set_the_endpoints_budget(db_url):
    from storesync.pipeline.vendor_clients import sailthru_limiters

    clock = FakeClock(10_000.0)
    limiters = sailthru_limiters(sailthru_settings(budget=40), db_url, clock=clock, sleep=clock.sleep)
    user = limiters("user", "POST")
    user.observe(headers(300, 299, clock() + 60))  # POST /user allows 300 a minute
    assert [user.acquire() for _ in range(100)] == [0.0] * 100
    purchase = limiters("purchase", "POST")
    purchase.observe(headers(2, 1, clock() + 60))  # a tighter account: 2 a minute
    assert [purchase.acquire() for _ in range(2)] == [0.0, 0.0]
    assert purchase.acquire() > 59.0


def test_a_shared_admission_handed_back_frees_its_slot(db_url):
    clock = FakeClock()
    limiter = SharedWindowLimiter(db_url, "sailthru:acct-1:POST /purchase", 1, clock=clock, sleep=clock.sleep)
    permit, _ = limiter.try_reserve()
    assert limiter.try_reserve()[0] is None
    permit.cancel()  # the request never left
    again, wait = limiter.try_reserve()
    assert again is not None and wait == 0.0
    with prepaid(again):
        settle = limiter.acquire_until_answered()  # the client's admission is the permit
    assert again.used
    settle()
    assert limiter.acquire() == pytest.approx(61.0, abs=0.01)  # one slot, counted from the answer


def test_without_an_account_id_the_budget_is_keyed_by_the_credentials_fingerprint(db_url):
    from dataclasses import replace

    from storesync.pipeline.vendor_clients import sailthru_limiters

    settings = replace(sailthru_settings(), account_id=None)
    key = sailthru_limiters(settings, db_url)("purchase", "POST").key
    assert key == f"sailthru:{settings.account}:POST /purchase" and "raw-api-key" not in key


def test_budget_keys_fit_the_table_and_stay_distinct():
    from storesync.core.throttle import rate_slots
    from storesync.pipeline.vendor_clients import budget_key

    assert budget_key("sendlane", "abc") == "sendlane:abc"
    assert budget_key("sailthru", "abc", "/purchase", "post") == "sailthru:abc:POST /purchase"
    long_a, long_b = "a" * 40, "a" * 39 + "b"
    keys = {budget_key("sailthru", account, endpoint, "POST")
            for account in (long_a, long_b) for endpoint in ("purchase", "return")}
    assert len(keys) == 4
    assert all(len(key) + len("#paused") <= rate_slots.c.key.type.length for key in keys)


# ------------------------------------------------------------------ stacked budgets
def test_a_stack_reserves_from_every_budget_or_none():
    clock = FakeClock()
    wide = TokenBucket(60, burst=3, clock=clock, sleep=clock.sleep)
    narrow = TokenBucket(60, burst=1, clock=clock, sleep=clock.sleep)
    stack = StackedLimiter(wide, narrow)
    first, _ = stack.try_reserve()
    assert first is not None
    second, wait = stack.try_reserve()  # the narrow budget is spent: nothing taken from the wide
    assert second is None and wait > 0
    assert [wide.try_reserve()[0] is not None for _ in range(3)] == [True, True, False]
    with prepaid(first):
        assert stack.acquire() == 0.0  # the stack's own permit: neither budget asked again
    assert clock.now == 1_000.0


def test_a_stack_with_a_member_that_cannot_reserve_admits_at_send_time():
    class Plain:
        def __init__(self):
            self.admitted = 0

        def acquire(self, cost=1):
            self.admitted += 1
            return 0.0

        def penalize(self, seconds):
            pass

    plain = Plain()
    stack = StackedLimiter(plain, TokenBucket(60))
    assert stack.try_reserve() == (None, 0.0)
    stack.acquire_until_answered()()
    assert plain.admitted == 1
