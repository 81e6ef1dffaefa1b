"""The delivery engine: drains a vendor account's open deliveries from the ledger, concurrently.

One engine run, for one (vendor, account):
1. recovery: ``sending`` rows left by a dead process become ``unknown``; every ``unknown`` row
   is resolved through the vendor's lookup where it has one (Sailthru purchases, by extid), or
   held for reconciliation where it has none (Sendlane) — never resent blindly;
2. re-drive: old ``retry`` rows go first (the ledger claims by id), then new work;
3. sending: ``concurrency`` threads share one HTTP session; the vendor's limiter (inside the
   client) keeps the whole account under its budget, whoever else is sending;
4. every answer is recorded as soon as it arrives, with a record-log line.

An ``AuthError`` stops the run at once (bad credentials will fail every request, and Sendlane
locks accounts out after too many errors): the run fails loudly and nothing is dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
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
from storesync.delivery.ledger import (
    ACCEPTED,
    DEAD,
    RETRY,
    SUPPRESSED,
    UNKNOWN,
    Delivery,
    Ledger,
    Outcome,
    process_identity,
    utcnow,
)

log = logging.getLogger(__name__)


class VendorSender(Protocol):
    """What the engine needs from a vendor: send one delivery, and look one up."""

    vendor: str
    account: str

    def send(self, delivery: Delivery) -> dict | None:
        """Send it; return the vendor's answer, or raise a ``DeliveryError`` subclass."""

    def resolve_unknown(self, delivery: Delivery) -> bool | None:
        """After an unknown outcome: True = the vendor has it, False = it does not (safe to
        send again), None = cannot tell (hold for reconciliation)."""


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
    held_unknown: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.states[ACCEPTED] / self.elapsed_s if self.elapsed_s else 0.0

    def as_dict(self) -> dict:
        return {
            "vendor": self.vendor, "requests": self.requests, "accepted": self.states[ACCEPTED],
            "retry": self.states[RETRY], "dead": self.states[DEAD], "suppressed": self.states[SUPPRESSED],
            "unknown": self.states[UNKNOWN], "recovered": self.recovered,
            "resolved_by_lookup": self.resolved_by_lookup, "held_unknown": self.held_unknown,
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


class DeliveryEngine:
    def __init__(self, ledger: Ledger, sender: VendorSender, *, run_id: str | None = None,
                 concurrency: int = 8, claim_size: int | None = None,
                 policy: RedrivePolicy | None = None, owner: str | None = None) -> None:
        self.ledger = ledger
        self.sender = sender
        self.run_id = run_id
        self.concurrency = concurrency
        self.claim_size = claim_size or concurrency * 8
        self.policy = policy or RedrivePolicy()
        self.owner = owner or process_identity()

    # ------------------------------------------------------------------ recovery
    def recover(self, report: DeliveryReport) -> None:
        orphans = self.ledger.orphaned(self.sender.vendor, self.sender.account)
        report.recovered = len(orphans)
        if orphans:
            log.warning("%d %s deliveries were in flight when their process died: outcome unknown",
                        len(orphans), self.sender.vendor)
        found, resend = [], []
        for delivery in self.ledger.in_state(UNKNOWN, vendor=self.sender.vendor, account=self.sender.account):
            verdict = self._lookup(delivery)
            if verdict is True:
                found.append(delivery.id)
            elif verdict is False:
                resend.append(delivery.id)
        self.ledger.mark_accepted(found, reason="confirmed by vendor lookup after an unknown outcome")
        self.ledger.requeue(resend, reset_attempts=False)
        report.resolved_by_lookup += len(found) + len(resend)

    def _lookup(self, delivery: Delivery) -> bool | None:
        try:
            return self.sender.resolve_unknown(delivery)
        except AuthError:
            raise
        except DeliveryError as exc:
            log.warning("lookup of %s failed (%s): held for the next run", delivery.delivery_key, exc.error_class)
            return None

    # ------------------------------------------------------------------ sending
    def run(self) -> DeliveryReport:
        report = DeliveryReport(self.sender.vendor, self.sender.account, self.run_id)
        started = time.monotonic()
        self.recover(report)
        in_flight: dict[Future, Delivery] = {}
        queue: list[Delivery] = []
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"send-{self.sender.vendor}") as pool:
            try:
                while True:
                    free = self.concurrency - len(in_flight) - len(queue)
                    if free > 0:
                        # Claim no more than can be sent now: a claim that never left is held as
                        # unknown if this process dies, so claims must not run ahead of sending.
                        queue.extend(self.ledger.claim(self.sender.vendor, self.sender.account,
                                                       min(free, self.claim_size), self.owner))
                    while queue and len(in_flight) < self.concurrency:
                        delivery = queue.pop(0)
                        in_flight[pool.submit(self._send_one, delivery)] = delivery
                    if not in_flight:
                        if not self._wait_for_due_retries(started):
                            break
                        continue
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    results = []
                    for future in done:
                        delivery = in_flight.pop(future)
                        outcome = future.result()
                        results.append((delivery, outcome))
                        report.requests += 1
                        report.states[outcome.state] += 1
                        report.by_event[f"{delivery.event_type}:{outcome.state}"] += 1
                        if outcome.state == UNKNOWN:
                            report.held_unknown += 1
                    self.ledger.record(results, run_id=self.run_id, owner=self.owner)
                    auth = next((o for _, o in results if o.error_class == AuthError.error_class), None)
                    if auth:
                        raise AuthError(f"{self.sender.vendor} refused the credentials "
                                        f"(HTTP {auth.http_status}): {auth.vendor_error}",
                                        http_status=auth.http_status)
            finally:
                # Finish what is already on the wire, record it, and hand back unsent claims.
                leftovers = []
                for future, delivery in list(in_flight.items()):
                    try:
                        leftovers.append((delivery, future.result()))
                    except Exception:  # noqa: BLE001 - the sender never raises; belt and braces
                        leftovers.append((delivery, Outcome(RETRY, error_class="retryable")))
                self.ledger.record(leftovers, run_id=self.run_id, owner=self.owner)
                self.ledger.release(queue)
        report.elapsed_s = time.monotonic() - started
        return report

    def _wait_for_due_retries(self, started: float) -> bool:
        """Sleep until this account's earliest retry is due, if that is soon enough for this run."""
        pending = self.ledger.in_state(RETRY, vendor=self.sender.vendor, account=self.sender.account, limit=1)
        if not pending:
            return False
        due = self.ledger.next_due(self.sender.vendor, self.sender.account)
        wait_s = 0.0 if due is None else max(0.0, (due - utcnow()).total_seconds())
        if time.monotonic() - started + wait_s > self.policy.max_wait_in_run_s:
            return False
        time.sleep(min(wait_s, 5.0) + 0.01)
        return True

    def _send_one(self, delivery: Delivery) -> Outcome:
        try:
            answer = self.sender.send(delivery)
        except UnknownOutcomeError as exc:
            verdict = self._lookup(delivery)
            if verdict is True:
                return Outcome(ACCEPTED, error_class=exc.error_class,
                               vendor_error="no answer; confirmed by vendor lookup")
            if verdict is False:
                return self._retry(delivery, exc)
            return Outcome(UNKNOWN, **_error_fields(exc))
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
