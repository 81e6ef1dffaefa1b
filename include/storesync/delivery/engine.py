"""The delivery engine: drains a vendor account's open deliveries from the ledger, concurrently.

One engine run, for one (vendor, account):
1. recovery: ``sending`` rows left by a dead process become ``unknown``; every ``unknown`` row
   is resolved through the vendor's lookup where it has one (Sailthru purchases, by extid), or
   held for reconciliation where it has none (Sendlane) — never resent blindly. A lookup that
   finds nothing too soon after the request (``LOOKUP_PENDING``) is not trusted yet: the row stays
   ``unknown`` and is looked up again by a later run; so is a row whose lookup fails, until it
   has been unknown for ``lookup_give_up_s`` (a day): then it is held. A sender may also settle a
   row by a rule (``Settled``: superseded, accepted or resent, with why; Sendlane's held checkouts
   and customers, ``storesync.delivery.settle``) or note what settles it next (``AWAITING_READ``). Content rows waiting for
   a resend while a newer version of their entity is out are superseded;
2. re-drive: old ``retry`` rows go first (the ledger claims by id), then new work;
3. budget, then claim: the engine looks at the rows it would claim next
   (``Ledger.next_claimable``), takes each one's admission from the vendor's limiter without
   waiting (``try_reserve``; the limiter the client will use, shared by every process sending
   for the account), and claims only the rows that got one. So a row is ``sending`` only once
   its request can leave: waiting for budget happens while rows are still ``planned``/``retry``,
   and a crash then leaves them claimable, never "unknown". The thread that sends a row spends
   its admission (``prepaid``) instead of asking the limiter again;
4. sending: ``concurrency`` threads share one HTTP session; the client's retries of a request
   take their admissions from the same limiter;
5. every answer is recorded as soon as the engine's loop sees it, with a record-log line: all the
   answers back by then in one batch, in the transaction that claims their replacements.

The report tells held rows (a person must reconcile them: ``held_unknown``, this run's and those
recovered from earlier runs) from rows awaiting a later lookup (``awaiting_lookup``); the task
that runs the engine fails on the first, not on the second.

Crash points: ``fault_point(point, delivery)`` is called at ``"after_claim"`` (the row is
``sending``, its request not yet sent) and ``"after_accept"`` (the vendor accepted, the ledger does
not know yet). Tests pass one, or set ``STORESYNC_CRASH_AT`` to a point (and optionally
``STORESYNC_CRASH_ON`` to ``vendor`` or ``vendor:event_type``): the process then dies there with
``os._exit`` (``CRASH_EXIT_CODE``), as under ``kill -9``. Unset, nothing happens.

An ``AuthError`` stops the run at once (bad credentials will fail every request, and Sendlane
locks accounts out after too many errors): the run fails loudly and nothing is dead-lettered.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Protocol

from storesync.core.errors import (
    AuthError,
    DeliveryError,
    PermanentError,
    RetryableError,
    SuppressedError,
    UnknownOutcomeError,
)
from storesync.core.throttle import Permit, Reserves, prepaid
from storesync.delivery.ledger import AWAITING_READ as LEDGER_AWAITING_READ
from storesync.delivery.ledger import (
    ACCEPTED,
    DEAD,
    RETRY,
    SUPERSEDED,
    SUPPRESSED,
    UNKNOWN,
    ClaimCandidate,
    Delivery,
    Ledger,
    Outcome,
    process_identity,
    utcnow,
)

log = logging.getLogger(__name__)

# A lookup's verdict besides True (the vendor has it) / False (it does not) / None (cannot
# tell: hold): "not found, but too soon to trust that" — look again later.
LOOKUP_PENDING = "pending"
# As LOOKUP_PENDING, for a vendor whose held rows are settled by rules and reads that only run once
# the request is old enough (Sendlane): the row is noted (``vendor_code``), so that the CLI and
# the alert count it as awaiting, not held (``storesync.delivery.remedies``), and so that the
# person's other deliveries wait for its read (``ledger.PERSON_WAIT_EVENTS``).
AWAITING_READ = LEDGER_AWAITING_READ


@dataclass(frozen=True)
class Settled:
    """A verdict that settles an unknown row by a rule (``storesync.delivery.settle``): ``state``
    is ``accepted`` (a read proved arrival), ``superseded`` (moot) or ``retry`` (a read proved it
    did not arrive: send again); ``reason`` goes to the ledger and the record log; ``rule`` names
    the rule in reports (``newer_version``, ``contact_ordered``, ``contact_read``)."""

    state: str
    reason: str
    rule: str
# How long an unknown row's lookups may keep failing before it is held for a person.
LOOKUP_GIVE_UP_S = 24 * 3600.0

# Where a test can make the engine die (``STORESYNC_CRASH_AT``), and the exit status it dies with.
CRASH_POINTS = ("after_claim", "after_accept")
CRASH_EXIT_CODE = 70
FaultPoint = Callable[[str, "Delivery"], None]


def crash_point_from_env() -> FaultPoint | None:
    """``STORESYNC_CRASH_AT=<point>`` (one of ``CRASH_POINTS``; ``STORESYNC_CRASH_ON=vendor`` or
    ``vendor:event_type`` narrows it): the process dies at the first such delivery reaching
    that point, with ``os._exit`` (no cleanup, no ledger write), as it would under ``kill -9``.
    For crash tests only; unset, None."""
    point = os.environ.get("STORESYNC_CRASH_AT", "").strip()
    if not point:
        return None
    if point not in CRASH_POINTS:
        raise ValueError(f"STORESYNC_CRASH_AT must be one of {', '.join(CRASH_POINTS)}, got {point!r}")
    vendor, _, event_type = os.environ.get("STORESYNC_CRASH_ON", "").strip().partition(":")

    def crash(reached: str, delivery: Delivery) -> None:
        if reached == point and vendor in ("", delivery.vendor) and event_type in ("", delivery.event_type):
            log.critical("STORESYNC_CRASH_AT=%s: dying at delivery %s", point, delivery.id)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)

    return crash


class VendorSender(Protocol):
    """What the engine needs from a vendor: send one delivery, and look one up."""

    vendor: str
    account: str

    def send(self, delivery: Delivery) -> dict | None:
        """Send it; return the vendor's answer, or raise a ``DeliveryError`` subclass."""

    # Optional: ``ensure_connections(n)``, called before the n sending threads start, so that
    # the client's connection pool does not hold any of them back. Optional:
    # ``limiter_for(method, endpoint)``, the rate limiter the client admits that request with;
    # without it the engine finds it on ``client.limiters(endpoint, method)`` (per endpoint) or
    # ``client.limiter``. No limiter found: rows are claimed at once and wait in their thread.

    def resolve_unknown(self, delivery: Delivery) -> bool | str | Settled | None:
        """After an unknown outcome: True = the vendor has it, False = it does not (safe to
        send again), None = cannot tell (hold for reconciliation), ``LOOKUP_PENDING`` = not found
        yet, but too soon after the request to trust that (look again later); ``AWAITING_READ``
        likewise, noted on the row; a ``Settled`` = settled by a rule, with why.
        ``delivery.unknown_since`` is when the outcome became unknown (the request left before)."""


@dataclass
class DeliveryReport:
    vendor: str
    account: str
    run_id: str | None
    states: Counter = field(default_factory=Counter)
    by_event: Counter = field(default_factory=Counter)
    requests: int = 0
    recovered: int = 0
    resolved_by_lookup: int = 0
    held_unknown: int = 0  # unknown and held for reconciliation (earlier runs' included)
    held_from_earlier: int = 0  # of which recovered from earlier runs
    awaiting_lookup: int = 0  # unknown, to be looked up again by a later run
    superseded: int = 0
    # Held rows settled by a rule, by "state:rule" (superseded:newer_version, accepted:contact_read...)
    settled: Counter = field(default_factory=Counter)
    # Open deliveries of this vendor under accounts other than the one sending (account key
    # changed under them): never sent from here; the task fails until they are moved.
    open_under_other_accounts: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.states[ACCEPTED] / self.elapsed_s if self.elapsed_s else 0.0

    def as_dict(self) -> dict:
        return {
            "vendor": self.vendor, "account": self.account, "requests": self.requests, "accepted": self.states[ACCEPTED],
            "retry": self.states[RETRY], "dead": self.states[DEAD], "suppressed": self.states[SUPPRESSED],
            "unknown": self.states[UNKNOWN], "recovered": self.recovered,
            "resolved_by_lookup": self.resolved_by_lookup, "held_unknown": self.held_unknown,
            "held_from_earlier": self.held_from_earlier, "awaiting_lookup": self.awaiting_lookup,
            "superseded": self.superseded,
            "settled_superseded": sum(n for k, n in self.settled.items() if k.startswith(SUPERSEDED)),
            "settled_by_read": sum(n for k, n in self.settled.items() if k.endswith(":contact_read")),
            "settled": dict(self.settled),
            "open_under_other_accounts": dict(self.open_under_other_accounts),
            "by_event": dict(self.by_event), "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class RedrivePolicy:
    """How the engine treats a delivery the client already retried and gave up on, for now."""

    max_attempts: int = 8  # across runs; then it is dead-lettered as retries exhausted
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0
    # How long one run keeps waiting for its own retries to come due before leaving them to the next.
    max_wait_in_run_s: float = 60.0

    def delay(self, attempts: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempts - 1))


def other_accounts_problem(vendor: str, account: str, others: dict) -> str:
    """What to say (log, task failure) when ``vendor``'s open deliveries sit under other account
    keys (``{key: count}``) than ``account``, the one sent to."""
    listed = ", ".join(f"{a}: {n}" for a, n in sorted(others.items()))
    return (f"{sum(others.values())} open {vendor} deliveries are under other accounts ({listed}) than the one "
            f"this run sends to ({account}); nothing lost, nothing sent. If it is the same {vendor} account under "
            f"a new key, run `storesync ledger move-account --vendor {vendor} --from OLD --to {account}` (add "
            f"--merge-unsent when both keys hold the same deliveries and the old key's never left); else set "
            f"account_id back until they are delivered")


class DeliveryEngine:
    def __init__(self, ledger: Ledger, sender: VendorSender, *, run_id: str | None = None,
                 concurrency: int = 8, claim_size: int | None = None,
                 policy: RedrivePolicy | None = None, owner: str | None = None,
                 lookup_give_up_s: float = LOOKUP_GIVE_UP_S, fault_point: FaultPoint | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ledger = ledger
        self.fault_point = fault_point or crash_point_from_env()
        self._sleep = sleep
        self.lookup_give_up_s = lookup_give_up_s
        self.sender = sender
        self.run_id = run_id
        self.concurrency = concurrency
        self.claim_size = claim_size or concurrency * 8
        self.policy = policy or RedrivePolicy()
        self.owner = owner or process_identity()
        self._claimed_at = None  # when the last claim looked for due work

    # ------------------------------------------------------------------ recovery
    def recover(self, report: DeliveryReport) -> None:
        vendor, account = self.sender.vendor, self.sender.account
        others = {a: n for a, n in self.ledger.open_by_account(vendor).items() if a != account}
        if others:
            # The account key changed under open rows (a rotated key fingerprinted, account_id
            # set or edited): nothing sends them now. Said loudly; `storesync ledger
            # move-account` re-keys them when it is the same vendor account.
            report.open_under_other_accounts = others
            log.error("%s", other_accounts_problem(vendor, account, others))
        orphans = self.ledger.orphaned(self.sender.vendor, self.sender.account)
        report.recovered = len(orphans)
        if orphans:
            log.warning("%d %s deliveries were in flight when their process died: outcome unknown",
                        len(orphans), self.sender.vendor)
        found, resend, held, pending = [], [], 0, 0
        settled: list[tuple[int, str, str]] = []
        notes: dict[str | None, list[int]] = {}  # what settles held rows next, noted on them
        for delivery in self.ledger.in_state(UNKNOWN, vendor=self.sender.vendor, account=self.sender.account):
            verdict = self._lookup(delivery)
            if isinstance(verdict, Settled):
                settled.append((delivery.id, verdict.state, verdict.reason))
                report.settled[f"{verdict.state}:{verdict.rule}"] += 1
            elif verdict is True:
                found.append(delivery.id)
            elif verdict is False:
                resend.append(delivery.id)
            elif verdict in (LOOKUP_PENDING, AWAITING_READ):
                pending += 1
                if verdict == AWAITING_READ and delivery.vendor_code != AWAITING_READ:
                    notes.setdefault(AWAITING_READ, []).append(delivery.id)
            else:
                held += 1
                note = verdict if isinstance(verdict, str) else None  # a held verdict may name a note
                if (note is not None and delivery.vendor_code != note) or (
                        note is None and delivery.vendor_code == AWAITING_READ):
                    notes.setdefault(note, []).append(delivery.id)
        self.ledger.mark_accepted(found, reason="confirmed by vendor lookup after an unknown outcome")
        self.ledger.requeue(resend, reset_attempts=False)
        self.ledger.settle_unknown(settled, run_id=self.run_id)
        for note, ids in notes.items():
            self.ledger.mark_unknown_code(ids, note)
        report.resolved_by_lookup += len(found) + len(resend)
        report.held_unknown += held
        report.held_from_earlier += held
        report.awaiting_lookup += pending
        if settled:
            log.info("%d %s deliveries held with an unknown outcome were settled by a rule: %s", len(settled),
                     self.sender.vendor, dict(report.settled))
        if held:
            log.warning("%d %s deliveries from earlier runs are held with an unknown outcome",
                        held, self.sender.vendor)
        # A resend found necessary, or an old retry, must not go out over a newer version.
        report.superseded += self.ledger.supersede_stale(self.sender.vendor, self.sender.account,
                                                         run_id=self.run_id)

    def _lookup(self, delivery: Delivery) -> bool | str | Settled | None:
        try:
            return self.sender.resolve_unknown(delivery)
        except AuthError:
            raise
        except DeliveryError as exc:
            since = delivery.unknown_since
            if since is not None and (utcnow() - since).total_seconds() >= self.lookup_give_up_s:
                # Lookups failing for a day are no longer a blip: a person reconciles it, and
                # the task fails saying so, rather than the row waiting unseen.
                log.error("lookups of %s have failed since %s (now %s): held for reconciliation",
                          delivery.delivery_key, since.isoformat(timespec="seconds"), exc.error_class)
                return None
            log.warning("lookup of %s failed (%s): looked up again by a later run",
                        delivery.delivery_key, exc.error_class)
            return LOOKUP_PENDING

    # ------------------------------------------------------------------ sending
    def run(self) -> DeliveryReport:
        report = DeliveryReport(self.sender.vendor, self.sender.account, self.run_id)
        started = time.monotonic()
        ensure_connections = getattr(self.sender, "ensure_connections", None)
        if ensure_connections is not None:  # one pooled connection per sending thread
            ensure_connections(self.concurrency)
        self.recover(report)
        in_flight: dict[Future, Delivery] = {}
        answers: list[tuple[Delivery, Outcome]] = []  # answered, not yet recorded
        permits: dict[int, Permit | None] = {}  # admissions secured, rows not claimed yet
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"send-{self.sender.vendor}") as pool:
            try:
                while True:
                    auth = next((o for _, o in answers if o.error_class == AuthError.error_class), None)
                    free = self.concurrency - len(in_flight)
                    budget_wait, recorded = 0.0, bool(answers)
                    if free > 0 and not auth:  # none at all once the credentials were refused
                        permits, budget_wait = self._reserve(free)
                    if answers or permits:
                        if permits:
                            self._claimed_at = utcnow()
                        # The answers that came back and the claims that replace them: one
                        # transaction. Recording late is safe: until it commits, the rows are
                        # ``sending``, which a crash turns into unknown, as it would mid-request.
                        # Only rows whose admission is secured are claimed: no claim waits.
                        claimed = self.ledger.record_and_claim(
                            answers, run_id=self.run_id, owner=self.owner, vendor=self.sender.vendor,
                            account=self.sender.account, limit=len(permits), ids=list(permits))
                        answers = []
                        for delivery in claimed:
                            permit = permits.pop(delivery.id)
                            in_flight[pool.submit(self._send_one, delivery, permit)] = delivery
                        self._cancel(permits)  # claimed by another run meanwhile, or no longer due
                    if auth:
                        raise AuthError(f"{self.sender.vendor} refused the credentials "
                                        f"(HTTP {auth.http_status}): {auth.vendor_error}",
                                        http_status=auth.http_status)
                    if not in_flight:
                        if recorded and free > 0 and not auth:
                            continue  # the answers just recorded may have unblocked rows: look again
                        if budget_wait > 0:
                            self._sleep(budget_wait)  # work is due; its budget is not there yet
                            continue
                        if not self._wait_for_due_retries(started):
                            break
                        continue
                    # Every answer already back is recorded in the same batch, however many. While
                    # work waits for budget, look again when the limiter said it might have some.
                    done, _ = wait(in_flight, timeout=budget_wait or None, return_when=FIRST_COMPLETED)
                    for future in done:
                        delivery = in_flight.pop(future)
                        outcome = future.result()
                        answers.append((delivery, outcome))
                        report.requests += 1
                        report.states[outcome.state] += 1
                        report.by_event[f"{delivery.event_type}:{outcome.state}"] += 1
                        if outcome.extra.get("settled"):
                            report.settled[outcome.extra["settled"]] += 1
                        if outcome.state == UNKNOWN:
                            if outcome.extra.get("awaiting_lookup"):
                                report.awaiting_lookup += 1
                            else:
                                report.held_unknown += 1
            finally:
                # Hand back admissions never used, finish what is already on the wire and record
                # it (with any answers not recorded yet).
                self._cancel(permits)
                leftovers = answers
                for future, delivery in list(in_flight.items()):
                    try:
                        leftovers.append((delivery, future.result()))
                    except Exception:  # noqa: BLE001 - the sender never raises; belt and braces
                        leftovers.append((delivery, Outcome(RETRY, error_class="retryable")))
                self.ledger.record(leftovers, run_id=self.run_id, owner=self.owner)
        report.elapsed_s = time.monotonic() - started
        return report

    # ------------------------------------------------------------------ budget before claim
    def _reserve(self, free: int) -> tuple[dict[int, Permit | None], float]:
        """Admissions for up to ``free`` of the rows the next claim would take, in its order,
        none of them waited for: ``({row id: permit}, 0.0)``, or, when rows are due but no budget
        is there for them, ``({}, seconds until a limiter may have some)``. A row whose request
        no known limiter admits gets ``None`` (claimed at once; its thread waits, if anyone)."""
        permits: dict[int, Permit | None] = {}
        waits: list[float] = []
        exhausted: set[int] = set()  # limiters found without budget: not asked again this round
        for candidate in self.ledger.next_claimable(self.sender.vendor, self.sender.account, self.claim_size):
            if len(permits) >= free:
                break
            try:
                limiter = self._limiter_for(candidate)
                if isinstance(limiter, Reserves) and id(limiter) in exhausted:
                    continue
                permit, wait_s = limiter.try_reserve() if isinstance(limiter, Reserves) else (None, 0.0)
            except Exception:  # noqa: BLE001 - a limiter's store failing must not lose the row
                # Sent as before this engine reserved ahead: the request takes its admission (or
                # meets the same failure, then retried like any internal error) in its thread.
                log.warning("could not reserve %s budget ahead: the row waits in its thread",
                            self.sender.vendor, exc_info=True)
                limiter, permit, wait_s = None, None, 0.0
            if permit is None and wait_s > 0:
                exhausted.add(id(limiter))
                waits.append(wait_s)
                continue
            permits[candidate.id] = permit
        if permits or not waits:
            return permits, 0.0
        return permits, min(waits)

    def _limiter_for(self, candidate: ClaimCandidate):
        find = getattr(self.sender, "limiter_for", None)
        if find is not None:
            return find(candidate.method, candidate.endpoint)
        client = getattr(self.sender, "client", None)
        per_endpoint = getattr(client, "limiters", None)
        if callable(per_endpoint):
            return per_endpoint(candidate.endpoint.strip("/"), candidate.method or "POST")
        return getattr(client, "limiter", None)

    @staticmethod
    def _cancel(permits: dict[int, Permit | None]) -> None:
        for permit in permits.values():
            if permit is not None:
                permit.cancel()
        permits.clear()

    def _wait_for_due_retries(self, started: float) -> bool:
        """Sleep until this account's next retry comes due, if that is soon enough for this run.

        Only retries that came due after the last claim count: one that was due then and was
        passed over waits behind an open delivery of its ordering key (or another run has it),
        and polling for it would spin; it is left to the run that settles what it waits on. One
        sleep per due time, never longer than the time the run has left to wait."""
        now = utcnow()
        due = self.ledger.next_due(self.sender.vendor, self.sender.account,
                                   after=self._claimed_at or now)
        if due is None:
            return False
        wait_s = max(0.0, (due - now).total_seconds())
        if time.monotonic() - started + wait_s > self.policy.max_wait_in_run_s:
            return False
        time.sleep(wait_s + 0.01)
        return True

    def _send_one(self, delivery: Delivery, permit: Permit | None = None) -> Outcome:
        if self.fault_point is not None:
            self.fault_point("after_claim", delivery)
        try:
            with prepaid(permit):  # the first admission this request asks for is the one secured
                answer = self.sender.send(delivery)
        except UnknownOutcomeError as exc:
            delivery = replace(delivery, unknown_since=utcnow())
            verdict = self._lookup(delivery)
            if isinstance(verdict, Settled):
                if verdict.state == RETRY:
                    outcome = self._retry(delivery, exc)
                    outcome.vendor_error = f"{verdict.reason}: {outcome.vendor_error}"[:2000]
                    outcome.extra["settled"] = f"{verdict.state}:{verdict.rule}"
                    return outcome
                return Outcome(verdict.state, error_class=exc.error_class, vendor_error=verdict.reason,
                               extra={"settled": f"{verdict.state}:{verdict.rule}"})
            if verdict is True:
                return Outcome(ACCEPTED, error_class=exc.error_class,
                               vendor_error="no answer; confirmed by vendor lookup")
            if verdict is False:
                return self._retry(delivery, exc)
            if verdict in (LOOKUP_PENDING, AWAITING_READ):
                fields = _error_fields(exc)
                if verdict == AWAITING_READ:
                    fields["vendor_code"] = AWAITING_READ
                    fields["vendor_error"] = f"no answer; settled by a later run's rules: {fields['vendor_error']}"
                else:
                    fields["vendor_error"] = f"not found by lookup yet; looked up again later: {fields['vendor_error']}"
                return Outcome(UNKNOWN, extra={"awaiting_lookup": True}, **fields)
            fields = _error_fields(exc)
            if isinstance(verdict, str):  # held, with a note of what settles it next
                fields["vendor_code"] = verdict
            return Outcome(UNKNOWN, **fields)
        except SuppressedError as exc:
            return Outcome(SUPPRESSED, **_error_fields(exc))
        except PermanentError as exc:
            return Outcome(DEAD, **_error_fields(exc))
        except AuthError as exc:
            return Outcome(RETRY, **_error_fields(exc))
        except RetryableError as exc:
            return self._retry(delivery, exc)
        except DeliveryError as exc:
            return Outcome(DEAD, **_error_fields(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the delivery: retry it later
            log.exception("unexpected error sending %s", delivery.delivery_key)
            error = DeliveryError(f"internal error: {type(exc).__name__}: {exc}"[:2000])
            error.error_class = "internal"
            return self._retry(delivery, error)
        if self.fault_point is not None:  # outside the try: a crash here must not become a retry
            self.fault_point("after_accept", delivery)
        status = answer.get("_http_status") if isinstance(answer, dict) else None
        return Outcome(ACCEPTED, http_status=status or 200)

    def _retry(self, delivery: Delivery, exc: DeliveryError) -> Outcome:
        if delivery.attempts >= self.policy.max_attempts:
            fields = _error_fields(exc)
            fields["vendor_error"] = f"retries exhausted after {delivery.attempts} attempts: {fields['vendor_error']}"
            return Outcome(DEAD, **fields)
        delay = self.policy.delay(delivery.attempts)
        if exc.retry_after:
            delay = max(delay, exc.retry_after)
        return Outcome(RETRY, next_attempt_at=utcnow() + timedelta(seconds=delay), **_error_fields(exc))


def _error_fields(exc: DeliveryError) -> dict:
    record = exc.as_record()
    return {"http_status": record["http_status"], "error_class": record["error_class"],
            "vendor_code": record["vendor_code"], "vendor_error": record["vendor_error"]}
