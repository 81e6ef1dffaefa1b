"""Senders: the delivery engine's view of a vendor client (send one delivery, look one up).

An unknown outcome (the request left, no answer came back: a dropped connection, a gateway's
502/504 to a write that is not idempotent, a process killed mid-request) is resolved by what the
vendor documents, never by a blind resend. ``resolve_unknown`` answers True (the vendor has it),
False (safe to send again), ``LOOKUP_PENDING`` (look again in a later run) or None (held: a
person decides; ``storesync.delivery.remedies`` says how).

Sendlane (no read of tracking events, no export of them):
- order events (``order_placed``/``fulfilled``/``cancelled``/``refunded``): sent again under the
  same event + order id. The vendor's integration guide: "If the same combination of event and id
  are sent more than once, Sendlane will record the first event and skip all subsequent events";
- ``product_added``: sent again; "the new data will overwrite the product's existing data";
- list contacts (``POST /lists/{id}/contacts``): sent again; an add-or-update keyed by email
  (fields overwrite, tags and custom fields merge), so the same contact twice is the same contact.
  The client already retries them through a gateway's 502/504 for the same reason;
- ``checkout_started``, ``customer_added``: nothing says the vendor de-duplicates them, and a
  second one can fire a flow twice; once the request is ``unknown_grace_s`` old, a rule settles
  them where one applies (``storesync.delivery.settle``): superseded by a newer version or by an
  order the contact placed since (``supersede_held``); the contact read (``contact_read``): a
  not-found on a proven path resends; a found contact proves arrival with ``"presence"`` (the
  default) when it was created while the held event could have made it and nothing else of the
  person's was sent (their deliveries wait for the read: ``ledger.PERSON_WAIT_EVENTS``).
  Until the grace is over: ``AWAITING_READ``. No rule applies: held;
- anything else (``added_to_cart``, ``product_viewed``, custom events): held.
``unknown_outcome = "resend"`` (default) is the rule above; ``"hold"`` holds every unknown
outcome, order events included. No setting resends an event the contract does not make safe.

Sailthru (``unknown_outcome = "lookup"``, default; ``"hold"`` holds them all):
- purchases and carts (carts carry a per-version extid) by ``GET /purchase`` on the extid; content
  and profiles by ``GET /content`` / ``GET /user``, comparing what we sent with what it holds.
  Found (and, for upserts, holding what we sent) → accepted.
- "not found" licenses a resend only when (a) it is the documented not-found
  (``clients.sailthru.is_documented_not_found``; a gateway's 404 or any other error is not), (b)
  ``unknown_grace_s`` has passed since the request (until then the vendor may still be recording
  it: ``LOOKUP_PENDING``), and (c) the same lookup path is proven: it found an object the vendor
  accepted (``storesync.delivery.lookup_proofs``). With no such object yet, the row waits
  (``LOOKUP_PENDING``); when known objects are "not found" too, the path does not work and the row
  is held (looked up again every run, in case the path comes back).
- returns (``/return``): Sailthru has no read of returns, and a second return counts twice: held.
- lookup errors raise: the engine looks again in a later run, and holds the row after a day.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from storesync.core.config import SailthruSettings, SendlaneSettings
from storesync.core.errors import AuthError, ConfigurationError, DeliveryError, PermanentError
from storesync.delivery.contracts import SAILTHRU_LOOKUPS, lookup_request, sendlane_resend_is_safe
from storesync.delivery.engine import AWAITING_READ, LOOKUP_GIVE_UP_S, LOOKUP_PENDING, Settled
from storesync.delivery.ledger import ACCEPTED, RETRY, SUPERSEDED, Delivery, utcnow
from storesync.delivery.lookup_proofs import EVIDENCE_PER_CHECK, LookupProofs
from storesync.delivery.settle import EVIDENCE_EVENTS, SETTLEABLE_EVENTS, HeldRules, email_of
from storesync.pipeline.vendor_clients import default_sailthru_client, default_sendlane_client

log = logging.getLogger(__name__)

INVALID_ENDPOINT = "/_invalid"

SENDLANE_UNKNOWN_OUTCOMES = ("resend", "hold")
SAILTHRU_UNKNOWN_OUTCOMES = ("lookup", "hold")
# A held Sendlane row whose contact was found but that the find cannot settle: noted on the row
# (``vendor_code``), so that later runs do not read it again (the supersede rules still apply).
CONTACT_FOUND = "contact_found"
# Contact reads per run (held rows and proofs): every not-found is a 4xx, and Sendlane locks an
# account out after too many 4xx in a minute.
MAX_CONTACT_READS_PER_RUN = 20


def _reject_invalid(delivery: Delivery) -> None:
    if delivery.endpoint == INVALID_ENDPOINT:
        raise PermanentError(delivery.payload.get("_invalid", "the event could not be mapped"))


def _grow_pool(client, n: int) -> None:
    grow = getattr(client, "ensure_pool_size", None)  # a client from a factory may not pool
    if grow is not None:
        grow(n)


def _check_choice(vendor: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigurationError(f"{vendor}.unknown_outcome must be one of {', '.join(choices)}; "
                                 f"got {value!r}")


class SendlaneSender:
    vendor = "sendlane"
    READ_ENDPOINT = "/contacts/search"

    def __init__(self, settings: SendlaneSettings, account: str, client_factory=None,
                 limiter_engine=None, proofs: LookupProofs | None = None) -> None:
        """``limiter_engine``: the ledger database's engine (the shared budget); the rules that
        settle held rows read the ledger through it (none without it: held rows stay held)."""
        _check_choice("sendlane", settings.unknown_outcome, SENDLANE_UNKNOWN_OUTCOMES)
        self.settings = settings
        self.account = account
        self.client = client_factory(settings) if client_factory else default_sendlane_client(
            settings, account, limiter_engine)
        self.rules = HeldRules(limiter_engine, self.vendor, account) if limiter_engine is not None else None
        self.proofs = proofs or LookupProofs(self.vendor, account, None, min_age_s=settings.unknown_grace_s)
        self._reads_left = MAX_CONTACT_READS_PER_RUN
        self._reads_lock = threading.Lock()
        self._path_fails = False  # the read path was found not to work in this run (one sender a run)

    def send(self, delivery: Delivery) -> dict | None:
        _reject_invalid(delivery)
        if delivery.endpoint.startswith("/lists/"):
            list_id = delivery.endpoint.split("/")[2]
            return self.client.add_contacts(list_id, delivery.payload["contacts"])
        answer = self.client.track(delivery.endpoint, delivery.payload)
        email = email_of(delivery) if delivery.event_type in EVIDENCE_EVENTS else None
        if email:
            self.proofs.note_accepted(self.READ_ENDPOINT, {"email": email})
        return answer

    def ensure_connections(self, n: int) -> None:
        _grow_pool(self.client, n)

    def resolve_unknown(self, delivery: Delivery) -> bool | str | Settled | None:
        """False (send again) where the vendor's contract makes a repeat harmless. A held
        ``checkout_started`` / ``customer_added`` is settled by the first rule that applies, once
        the request is ``unknown_grace_s`` old (``AWAITING_READ`` until then): superseded by a newer
        version or by the contact's order (``storesync.delivery.settle``), then the contact read.
        Else None: held, a person decides."""
        if self.settings.unknown_outcome == "hold":
            return None
        if sendlane_resend_is_safe(delivery.event_type, delivery.endpoint):
            return False
        supersede = self.settings.supersede_held != "off" and self.rules is not None
        read = (self.settings.contact_read != "off" and email_of(delivery) is not None
                and delivery.vendor_code != CONTACT_FOUND)
        if delivery.event_type not in SETTLEABLE_EVENTS or not (supersede or read):
            return None
        if _unknown_for(delivery) < self.settings.unknown_grace_s:
            return AWAITING_READ  # Sendlane may still be processing it: nothing is known yet
        if supersede:
            verdict = self._superseded(delivery)
            if verdict is not None:
                return verdict
        if not read:
            return None
        try:
            verdict = self._read_contact(delivery)
        except AuthError:
            raise
        except DeliveryError as error:  # Sendlane's API down, rate limited: read again by a later run
            log.warning("sendlane GET %s failed (%s): %s is read again by a later run", self.READ_ENDPOINT,
                        error.error_class, delivery.delivery_key)
            verdict = AWAITING_READ
        if verdict == AWAITING_READ and _unknown_for(delivery) >= LOOKUP_GIVE_UP_S:
            return None  # a day with nothing to prove the read path with: a person decides
        return verdict

    def _take_read(self) -> bool:
        with self._reads_lock:
            if self._reads_left <= 0:
                return False
            self._reads_left -= 1
            return True

    # ------------------------------------------------------------------ rules
    def _superseded(self, delivery: Delivery) -> Settled | None:
        newer = self.rules.newer_version(delivery)
        if newer is not None:
            return Settled(SUPERSEDED, f"superseded: version {newer.version} of this {delivery.event_type} "
                           f"(delivery {newer.id}, {newer.state}) is what Sendlane is owed, and it carries "
                           "the newer data whether or not this one arrived", "newer_version")
        if delivery.event_type == "checkout_started":
            order = self.rules.order_since(delivery)
            if order is not None:
                return Settled(SUPERSEDED, f"superseded: the contact placed order {order[1]} after this "
                               f"checkout began (order_placed delivery {order[0]}, accepted); Sendlane's "
                               "checkout flow is for contacts who do not place an order", "contact_ordered")
        return None

    def _read_contact(self, delivery: Delivery) -> Settled | str | None:
        """The contact read (``GET /contacts/search``; undocumented, see docs/vendors-and-errors.md):
        each of these events makes the contact, so a not-found from a path proven to find what
        Sendlane accepted means the event did not arrive: sent again. A found contact proves
        arrival only with ``contact_read = "presence"`` and no other storesync delivery that could
        have made it; otherwise it proves nothing and the row is held (not read again)."""
        if self._path_fails:
            return None  # found not to work in this run: no more 4xx for nothing
        if not self._take_read():
            return AWAITING_READ  # Sendlane locks out accounts after many 4xx a minute: next run
        email = email_of(delivery)
        try:
            contact = self.client.find_contact(email)
        except PermanentError as error:
            # A 404 that is not the search's not-found (an unrouted path, a gateway): it says nothing.
            # (HTTP status only: a vendor message can quote the email.)
            log.error("sendlane GET %s failed (HTTP %s): %s stays held (read again every run)",
                      self.READ_ENDPOINT, error.http_status, delivery.delivery_key)
            self._path_fails = True
            return None
        if contact is not None:
            self.proofs.mark_proven(self.READ_ENDPOINT)
            if self.settings.contact_read == "presence" and self.rules is not None:
                created = _parse_time(contact.get("created_at"))
                if self.rules.made_by(delivery, created, self.settings.unknown_grace_s):
                    return Settled(ACCEPTED, "arrived: Sendlane holds the contact, created while this event "
                                   "could have made it, and no other storesync delivery of the person was "
                                   "sent (contact_read = presence)", "contact_read")
            return CONTACT_FOUND  # held, noted so that later runs do not read it again
        verdict = self._read_path_verdict()
        if verdict is True:
            return Settled(RETRY, "resent: the contact is not found on a read path proven to find what "
                           "Sendlane accepted, so the event did not arrive", "contact_read")
        return verdict

    def _read_path_verdict(self) -> bool | str | None:
        """True when the search path is proven (it found a contact Sendlane must hold);
        ``AWAITING_READ`` with nothing to prove it with yet; None when known contacts are "not
        found" too: the path does not work."""
        if self.proofs.is_proven(self.READ_ENDPOINT):
            return True
        emails = [p["email"] for _, p in self.proofs.evidence(self.READ_ENDPOINT)]
        if self.rules is not None and len(emails) < EVIDENCE_PER_CHECK:
            known = self.rules.evidence_emails(self.settings.unknown_grace_s)
            emails += [e for e in known if e not in emails]
        for email in emails[:EVIDENCE_PER_CHECK]:
            if not self._take_read():
                return AWAITING_READ
            if self.client.find_contact(email) is not None:
                self.proofs.mark_proven(self.READ_ENDPOINT)
                return True
        if not emails:
            return AWAITING_READ
        self._path_fails = True
        log.error("sendlane GET %s found none of %d contacts Sendlane accepted events for: its \"not found\" "
                  "is not trusted, held events there stay held (read again every run)",
                  self.READ_ENDPOINT, len(emails))
        return None


class SailthruSender:
    vendor = "sailthru"
    UPSERT_ENDPOINTS = ("/user", "/content")

    def __init__(self, settings: SailthruSettings, account: str, client_factory=None, limiter_engine=None,
                 proofs: LookupProofs | None = None) -> None:
        """``limiter_engine``: the ledger database's engine (the budgets shared there); the lookup
        proofs read their evidence from its accepted rows."""
        _check_choice("sailthru", settings.unknown_outcome, SAILTHRU_UNKNOWN_OUTCOMES)
        self.settings = settings
        self.account = account
        self.client = (client_factory or default_sailthru_client)(settings)
        self.proofs = proofs or LookupProofs(self.vendor, account, limiter_engine,
                                             min_age_s=settings.unknown_grace_s)

    def send(self, delivery: Delivery) -> dict | None:
        _reject_invalid(delivery)
        answer = self.client.post(delivery.endpoint.lstrip("/"), delivery.payload)
        if delivery.endpoint in SAILTHRU_LOOKUPS:
            self.proofs.note_accepted(delivery.endpoint, delivery.payload)
        return answer

    def ensure_connections(self, n: int) -> None:
        _grow_pool(self.client, n)

    def resolve_unknown(self, delivery: Delivery) -> bool | str | None:
        if self.settings.unknown_outcome == "hold" or delivery.endpoint not in SAILTHRU_LOOKUPS:
            return None  # returns and jobs: no read of them, and a repeat counts twice
        request = lookup_request(delivery.endpoint, delivery.payload)
        if request is None:
            return None  # a purchase without an extid cannot be looked up
        try:
            if self._holds(delivery, *request):
                return True
            if not self._grace_over(delivery):
                return LOOKUP_PENDING  # not there *yet* proves nothing
            verdict = self._path_verdict(delivery.endpoint)
            if verdict == LOOKUP_PENDING and _unknown_for(delivery) >= LOOKUP_GIVE_UP_S:
                return None  # a day with nothing to prove the path with: a person decides
            return verdict
        except PermanentError as error:
            # A 404 that is not Sailthru's documented not-found (a gateway, an unrouted path), or
            # a refused lookup: it says nothing about the object, and asking again will not help.
            # (HTTP status and code only: a vendor message can quote the email looked up.)
            log.error("sailthru GET /%s failed (HTTP %s, error %s): the outcome of %s stays unknown and is "
                      "held (looked up again every run)", request[0], error.http_status, error.vendor_code,
                      delivery.delivery_key)
            return None

    def _holds(self, delivery: Delivery, endpoint: str, data: dict) -> bool:
        """Does the vendor hold what this delivery sent? A found object proves the path too."""
        current = self.client.lookup(endpoint, data)  # errors raise: never taken for "not found"
        if current is None:
            return False
        self.proofs.mark_proven(delivery.endpoint)
        if delivery.endpoint == "/purchase":
            return True
        if delivery.endpoint == "/content":
            return _contains(current.get("content", current), delivery.payload, ("title", "price", "url"))
        return _contains(current, delivery.payload, ("vars", "optout_email"))

    def _path_verdict(self, endpoint: str) -> bool | str | None:
        """After the documented not-found: False (resend) when this lookup path is proven to find
        what the vendor accepted; ``LOOKUP_PENDING`` when nothing accepted can prove it yet; None
        (held) when accepted objects are not found either: the path does not work."""
        if self.proofs.is_proven(endpoint):
            return False
        evidence = self.proofs.evidence(endpoint)
        for _event_type, payload in evidence:
            request = lookup_request(endpoint, payload)
            if request is not None and self.client.lookup(*request) is not None:
                self.proofs.mark_proven(endpoint)
                return False
        if not evidence:
            return LOOKUP_PENDING  # (held by resolve_unknown once the row has waited a day)
        log.error("sailthru GET %s found none of %d %s objects the vendor accepted: its \"not found\" is not "
                  "trusted, unknown outcomes there are held (looked up again every run)",
                  endpoint, len(evidence), endpoint.lstrip("/"))
        return None

    def _grace_over(self, delivery: Delivery) -> bool:
        return _unknown_for(delivery) >= self.settings.unknown_grace_s


def _unknown_for(delivery: Delivery) -> float:
    since = delivery.unknown_since or utcnow()  # unknown just now: the request just left
    return (utcnow() - since).total_seconds()


def _parse_time(value) -> datetime | None:
    """A contact's ``created_at`` as naive UTC (the ledger's clock), or None when absent or odd."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def _contains(current: dict, sent: dict, fields: tuple[str, ...]) -> bool:
    """Does the vendor's current object already hold what we sent (for these fields)?"""
    for name in fields:
        if name not in sent:
            continue
        want, have = sent[name], current.get(name)
        if isinstance(want, dict):
            if not isinstance(have, dict) or any(have.get(k) != v for k, v in want.items()):
                return False
        elif have != want:
            return False
    return True
