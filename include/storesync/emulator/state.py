"""The emulator's memory: configuration, accepted requests, vendor-side data, limits and faults.

One ``EmulatorState`` per server. Every mutation happens under ``state.lock``; the vendor modules
take the lock for the whole of one request's bookkeeping (cheap: no I/O happens under it).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# Default accounts and credentials (tests and clients import these).
# --------------------------------------------------------------------------------------------
DEFAULT_SENDLANE_ACCOUNT = "acct-1"
DEFAULT_SENDLANE_API_TOKEN = "test-sendlane-api-token"
DEFAULT_SENDLANE_INTEGRATION_TOKEN = "test-sendlane-integration-token"
DEFAULT_SENDLANE_LIST_ID = "1"

DEFAULT_SAILTHRU_ACCOUNT = "acct-1"
DEFAULT_SAILTHRU_API_KEY = "test-sailthru-key"
DEFAULT_SAILTHRU_SECRET = "test-sailthru-secret"

DEFAULT_SAILTHRU_TEMPLATES = ("abandoned-cart", "purchase receipt")

# Sailthru limits per "METHOD /endpoint"; a bare "GET" / "POST" / "DELETE" is the fallback.
DEFAULT_SAILTHRU_RATE_LIMITS = {
    "POST /purchase": 40,
    "POST /return": 40,
    "POST /content": 40,
    "POST /user": 300,
    "POST /job": 40,
    "GET": 300,
    "POST": 40,
    "DELETE": 40,
}

VENDORS = ("sendlane", "sailthru")
SAILTHRU_OPTOUT_RANK = {"none": 0, "blast": 1, "basic": 2, "all": 3}


def default_config() -> dict:
    return {
        "sendlane_accounts": {
            DEFAULT_SENDLANE_ACCOUNT: {
                "api_token": DEFAULT_SENDLANE_API_TOKEN,
                "integration_token": DEFAULT_SENDLANE_INTEGRATION_TOKEN,
            }
        },
        "sailthru_accounts": {
            DEFAULT_SAILTHRU_ACCOUNT: {"api_key": DEFAULT_SAILTHRU_API_KEY, "secret": DEFAULT_SAILTHRU_SECRET}
        },
        "rate_limits_enabled": True,
        "sendlane_rate_limit": 240,
        "sendlane_rate_window_s": 60.0,
        "sailthru_rate_limits": dict(DEFAULT_SAILTHRU_RATE_LIMITS),
        "sailthru_rate_window_s": 60.0,
        "lockout_enabled": True,
        "lockout_errors": 50,
        "lockout_window_s": 60.0,
        "lockout_cooldown_s": 60.0,
        "sailthru_templates": list(DEFAULT_SAILTHRU_TEMPLATES),
        "sailthru_opted_out": [],
        "sendlane_unsubscribed": [],
        "sendlane_lists": {DEFAULT_SENDLANE_LIST_ID: "Newsletter"},
        "sendlane_unsubscribe_on_accepts_marketing_false": True,
        "sendlane_strict_initial_sync": True,
        "sendlane_max_contacts_per_request": 1000,
        "job_delay_s": 0.2,
        "record_bodies": True,
        # Sailthru GET endpoints the account (or a gateway in front of it) does not route, and how
        # such a GET is answered: the lookups a client relies on may not work everywhere.
        "sailthru_unrouted_gets": [],
        "sailthru_unrouted_answer": "json_404",
        # Sendlane's contact reads (undocumented; the shapes public clients use): which of them the
        # account or a gateway does not route, and how such a GET is answered.
        "sendlane_unrouted_gets": [],
        "sendlane_unrouted_answer": "json_404",
        # Sendlane processes asynchronously ("a 200 means accepted, not processed"): a contact an
        # accepted write creates is found by a search only this long after.
        "sendlane_contact_delay_s": 0.0,
    }


# key -> (check, description). Dicts merge one level deep; lists replace, except
# ``sendlane_unsubscribed`` which *adds* (it is vendor data, like a real unsubscribe).
def _bool(v):
    return isinstance(v, bool)


def _pos_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _nonneg_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _pos_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _sendlane_accounts(v):
    return isinstance(v, dict) and all(
        isinstance(a, dict) and set(a) <= {"api_token", "integration_token"}
        and all(isinstance(x, str) and x for x in a.values())
        for a in v.values()
    )


def _sailthru_accounts(v):
    return isinstance(v, dict) and all(
        isinstance(a, dict) and set(a) <= {"api_key", "secret"}
        and all(isinstance(x, str) and x for x in a.values())
        for a in v.values()
    )


def _rate_map(v):
    return isinstance(v, dict) and all(isinstance(k, str) and _pos_int(n) for k, n in v.items())


def _unsub_list(v):
    return isinstance(v, list) and all(
        isinstance(x, str) or (isinstance(x, dict) and isinstance(x.get("email"), str)) for x in v
    )


def _lists_map(v):
    return isinstance(v, dict) and all(isinstance(name, str) for name in v.values())


# How an unrouted Sailthru GET is answered: a JSON 404 without a Sailthru error code, a gateway's
# HTML page, or (the worst case) the very shape of Sailthru's documented not-found (404, error 99).
UNROUTED_ANSWERS = ("json_404", "html_404", "not_found_99")
UNROUTABLE_GETS = ("purchase", "content", "user", "job")


def _unrouted_gets(v):
    return isinstance(v, list) and all(x in UNROUTABLE_GETS for x in v)


def _unrouted_answer(v):
    return v in UNROUTED_ANSWERS


# The same for Sendlane's contact reads; "not_found_422" answers every search with the very shape
# of the not-found public clients observe (422 "The selected email is invalid.").
SENDLANE_UNROUTED_ANSWERS = ("json_404", "html_404", "not_found_422")
SENDLANE_UNROUTABLE_GETS = ("contacts/search", "contacts/{id}")


def _sendlane_unrouted_gets(v):
    return isinstance(v, list) and all(x in SENDLANE_UNROUTABLE_GETS for x in v)


def _sendlane_unrouted_answer(v):
    return v in SENDLANE_UNROUTED_ANSWERS


CONFIG_SPEC = {
    "sendlane_accounts": (_sendlane_accounts, "{account: {api_token, integration_token}}"),
    "sailthru_accounts": (_sailthru_accounts, "{account: {api_key, secret}}"),
    "rate_limits_enabled": (_bool, "bool"),
    "sendlane_rate_limit": (_pos_int, "positive int"),
    "sendlane_rate_window_s": (_pos_number, "positive number"),
    "sailthru_rate_limits": (_rate_map, '{"POST /purchase": int, "GET": int, ...}'),
    "sailthru_rate_window_s": (_pos_number, "positive number"),
    "lockout_enabled": (_bool, "bool"),
    "lockout_errors": (_pos_int, "positive int"),
    "lockout_window_s": (_pos_number, "positive number"),
    "lockout_cooldown_s": (_nonneg_number, "number >= 0"),
    "sailthru_templates": (_str_list, "list of template names"),
    "sailthru_opted_out": (_str_list, "list of emails"),
    "sendlane_unsubscribed": (_unsub_list, "list of emails or {email, list_id?, unsubscribed_at?}"),
    "sendlane_lists": (_lists_map, "{list_id: name}"),
    "sendlane_unsubscribe_on_accepts_marketing_false": (_bool, "bool"),
    "sendlane_strict_initial_sync": (_bool, "bool"),
    "sendlane_max_contacts_per_request": (_pos_int, "positive int"),
    "job_delay_s": (_nonneg_number, "number >= 0"),
    "record_bodies": (_bool, "bool"),
    "sailthru_unrouted_gets": (_unrouted_gets, 'a list of "purchase", "content", "user", "job"'),
    "sailthru_unrouted_answer": (_unrouted_answer, f"one of {sorted(UNROUTED_ANSWERS)}"),
    "sendlane_unrouted_gets": (_sendlane_unrouted_gets, 'a list of "contacts/search", "contacts/{id}"'),
    "sendlane_unrouted_answer": (_sendlane_unrouted_answer, f"one of {sorted(SENDLANE_UNROUTED_ANSWERS)}"),
    "sendlane_contact_delay_s": (_nonneg_number, "number >= 0"),
}


class ConfigError(ValueError):
    pass


def iso_utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# --------------------------------------------------------------------------------------------
# Rate limiters
# --------------------------------------------------------------------------------------------
class SlidingWindow:
    """Sendlane: at most ``limit`` admitted requests in any trailing ``window`` seconds."""

    __slots__ = ("hits", "admitted", "over_limit", "max_in_window")

    def __init__(self) -> None:
        self.hits: deque[float] = deque()
        self.admitted = 0
        self.over_limit = 0
        self.max_in_window = 0

    def hit(self, now: float, limit: int, window: float, enforce: bool) -> bool:
        hits = self.hits
        cutoff = now - window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if enforce and len(hits) >= limit:
            self.over_limit += 1
            return False
        hits.append(now)
        self.admitted += 1
        if len(hits) > self.max_in_window:
            self.max_in_window = len(hits)
        return True


class FixedWindow:
    """Sailthru: ``limit`` requests per window aligned on multiples of ``window`` (per minute)."""

    __slots__ = ("start", "count", "admitted", "over_limit", "max_in_window")

    def __init__(self) -> None:
        self.start = -1.0
        self.count = 0
        self.admitted = 0
        self.over_limit = 0
        self.max_in_window = 0

    def _roll(self, now: float, window: float) -> float:
        start = math.floor(now / window) * window
        if start != self.start:
            self.start = start
            self.count = 0
        return start

    def hit(self, now: float, limit: int, window: float, enforce: bool) -> tuple[bool, int, int]:
        start = self._roll(now, window)
        reset = int(math.ceil(start + window))
        if enforce and self.count >= limit:
            self.over_limit += 1
            return False, 0, reset
        self.count += 1
        self.admitted += 1
        self.max_in_window = max(self.max_in_window, self.count)
        return True, max(limit - self.count, 0), reset

    def peek(self, now: float, limit: int, window: float) -> tuple[int, int]:
        start = self._roll(now, window)
        return max(limit - self.count, 0), int(math.ceil(start + window))


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------
FAULT_KEYS = {
    "error_rate",
    "error_statuses",
    "storm",
    "latency_ms",
    "drop_before_rate",
    "drop_after_rate",
    "vendors",
    "seed",
}


@dataclass
class Faults:
    """The active fault set. Every draw is a function of (seed, kind, n), where n counts the
    in-scope requests since the set was installed: the same seed and the same request order give
    the same faults, whatever else happened (no wall clock, no shared RNG stream)."""

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    storm_until: float = 0.0
    storm_duration_s: float = 0.0
    storm_requests: int = 0  # a counted storm: the next N in-scope requests get 429
    storm_requests_left: int = 0
    storm_reset_s: float = 1.0  # a counted storm's Sailthru reset header: this far ahead
    latency_ms: float = 0.0
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0
    vendors: tuple[str, ...] = VENDORS
    seed: int | None = None
    requests_seen: int = 0

    @classmethod
    def parse(cls, spec: dict, now: float) -> Faults:
        unknown = set(spec) - FAULT_KEYS
        if unknown:
            raise ConfigError(f"unknown fault fields: {sorted(unknown)}; known: {sorted(FAULT_KEYS)}")
        faults = cls()
        for name in ("error_rate", "drop_before_rate", "drop_after_rate"):
            if name in spec:
                value = spec[name]
                if not _nonneg_number(value) or value > 1:
                    raise ConfigError(f"{name} must be a number in [0, 1]")
                setattr(faults, name, float(value))
        if faults.error_rate + faults.drop_before_rate > 1:
            raise ConfigError("error_rate + drop_before_rate must not exceed 1")
        if "error_statuses" in spec:
            statuses = spec["error_statuses"]
            if not (isinstance(statuses, list) and statuses
                    and all(_pos_int(s) and 500 <= s <= 599 for s in statuses)):
                raise ConfigError("error_statuses must be a non-empty list of 5xx codes")
            faults.error_statuses = tuple(statuses)
        if "latency_ms" in spec:
            if not _nonneg_number(spec["latency_ms"]):
                raise ConfigError("latency_ms must be a number >= 0")
            faults.latency_ms = float(spec["latency_ms"])
        if spec.get("storm") is not None:
            faults._parse_storm(spec["storm"], now)
        if "vendors" in spec:
            vendors = spec["vendors"]
            if isinstance(vendors, str):
                vendors = [vendors]
            if not (isinstance(vendors, list) and set(vendors) <= set(VENDORS)):
                raise ConfigError(f"vendors must be a subset of {list(VENDORS)}")
            faults.vendors = tuple(vendors)
        if spec.get("seed") is not None:
            if not isinstance(spec["seed"], int) or isinstance(spec["seed"], bool):
                raise ConfigError("seed must be an int")
            faults.seed = spec["seed"]
        else:
            faults.seed = random.SystemRandom().randrange(2**31)
        return faults

    def _parse_storm(self, storm, now: float) -> None:
        usage = 'storm must be {"duration_s": number >= 0} or {"requests": int >= 1, "reset_s"?: number >= 0}'
        if not isinstance(storm, dict) or not storm or set(storm) - {"duration_s", "requests", "reset_s"}:
            raise ConfigError(usage)
        if "requests" in storm:
            if "duration_s" in storm or not _pos_int(storm["requests"]):
                raise ConfigError(usage)
            self.storm_requests = self.storm_requests_left = storm["requests"]
            if "reset_s" in storm:
                if not _nonneg_number(storm["reset_s"]):
                    raise ConfigError(usage)
                self.storm_reset_s = float(storm["reset_s"])
            return
        duration = storm.get("duration_s")
        if not _nonneg_number(duration) or "reset_s" in storm:
            raise ConfigError(usage)
        self.storm_duration_s = float(duration)
        self.storm_until = now + float(duration)

    # ---- per request (under the state lock) --------------------------------------------------
    def next_request(self) -> int:
        self.requests_seen += 1
        return self.requests_seen

    def in_storm(self, now: float) -> float | None:
        """The storm's end (unix seconds) when this request falls in a storm, else None. A
        counted storm uses up one of its requests."""
        if self.storm_requests_left > 0:
            self.storm_requests_left -= 1
            return now + self.storm_reset_s
        if self.storm_until > now:
            return self.storm_until
        return None

    def draw(self, kind: str, n: int) -> float:
        """A uniform draw in [0, 1) for request ``n`` and fault ``kind``."""
        return random.Random(f"{self.seed}:{kind}:{n}").random()

    def error_status(self, n: int) -> int:
        return self.error_statuses[int(self.draw("status", n) * len(self.error_statuses))]

    def active(self) -> bool:
        return bool(
            self.error_rate or self.latency_ms or self.drop_before_rate or self.drop_after_rate
            or self.storm_until > time.time() or self.storm_requests_left
        )

    def describe(self, now: float) -> dict:
        storm = None
        if self.storm_requests:
            storm = {"requests": self.storm_requests, "remaining_requests": self.storm_requests_left,
                     "reset_s": self.storm_reset_s}
        elif self.storm_duration_s:
            storm = {"duration_s": self.storm_duration_s, "remaining_s": max(0.0, self.storm_until - now)}
        return {
            "error_rate": self.error_rate,
            "error_statuses": list(self.error_statuses),
            "storm": storm,
            "latency_ms": self.latency_ms,
            "drop_before_rate": self.drop_before_rate,
            "drop_after_rate": self.drop_after_rate,
            "vendors": list(self.vendors),
            "seed": self.seed,
            "requests_seen": self.requests_seen,
        }


# --------------------------------------------------------------------------------------------
# Statistics per vendor endpoint
# --------------------------------------------------------------------------------------------
class EndpointStats:
    __slots__ = ("accepted", "skipped", "entities", "rejected", "errors", "by_source")

    def __init__(self) -> None:
        self.accepted = 0
        self.skipped = 0  # answered 200 but not recorded (Sendlane's repeat of an order event)
        self.entities: Counter = Counter()
        self.rejected: Counter = Counter()  # by HTTP status
        self.errors: Counter = Counter()  # by vendor error code (Sailthru)
        self.by_source: Counter = Counter()

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "skipped": self.skipped,
            "distinct_entities": len(self.entities),
            "duplicates": {str(k): n for k, n in self.entities.items() if n > 1},
            "rejected": {str(k): n for k, n in sorted(self.rejected.items())},
            "error_codes": {str(k): n for k, n in sorted(self.errors.items())},
            "by_source": dict(self.by_source),
        }


# --------------------------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------------------------
class EmulatorState:
    def __init__(self, base_config: dict | None = None) -> None:
        self.lock = threading.RLock()
        self.generation = 0
        self._base_config = copy.deepcopy(base_config or {})
        # Validate the base configuration once, up front.
        self.reset()

    # ---- configuration ----------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.started_at = time.time()
            self.config = default_config()
            self._seq = itertools.count(1)
            self.records: list[dict] = []
            self.endpoint_stats: dict[tuple[str, str], EndpointStats] = {}
            self.vendor_rejected: dict[str, Counter] = {v: Counter() for v in VENDORS}
            self.faults = Faults()
            self.fault_counts: Counter = Counter()
            self.fault_counts_by_vendor: dict[str, Counter] = {v: Counter() for v in VENDORS}
            self.consent_reversals: list[dict] = []
            # Sendlane
            self.sendlane_limiters: dict[str, SlidingWindow] = {}
            self.sendlane_errors: dict[str, deque] = {}
            self.sendlane_locked_until: dict[str, float] = {}
            self.sendlane_lockouts: Counter = Counter()
            self.sendlane_locked_rejections: Counter = Counter()
            # (account, list_id) -> email -> contact (list membership, as the list upserts left it)
            self.contacts: dict[tuple[str, str], dict[str, dict]] = {}
            # account -> email -> the account's contact (id, fields, visible_at): what
            # ``GET /contacts/search`` and ``/contacts/{id}`` read; made by accepted writes with an email
            self.sendlane_people: dict[str, dict[str, dict]] = {}
            self.unsubscribed: dict[str, dict[str, dict]] = {}  # account -> email -> entry
            # (account, event path, order id) of the order events recorded: the repeats are skipped
            self.sendlane_order_events: set[tuple[str, str, str]] = set()
            # Sailthru
            self.sailthru_limiters: dict[tuple[str, str], FixedWindow] = {}
            self.purchases: dict[str, dict] = {}
            self.purchases_by_extid: dict[str, list[str]] = {}
            self.returns: list[dict] = []
            self.content: dict[str, dict] = {}
            self.content_by_url: dict[str, str] = {}
            self.content_by_sku: dict[str, str] = {}
            self.users: dict[str, dict] = {}
            self.user_index: dict[str, dict[str, str]] = {"email": {}, "extid": {}}
            self.jobs: dict[str, dict] = {}
            self._ids = itertools.count(1)
            self._sendlane_contact_ids = itertools.count(1001)
            self._reindex()
            if self._base_config:
                self.configure(copy.deepcopy(self._base_config))

    def configure(self, updates: dict) -> dict:
        if not isinstance(updates, dict):
            raise ConfigError("config must be a JSON object")
        unknown = set(updates) - set(CONFIG_SPEC)
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}; known: {sorted(CONFIG_SPEC)}")
        for key, value in updates.items():
            check, description = CONFIG_SPEC[key]
            if not check(value):
                raise ConfigError(f"{key} must be {description}")
        with self.lock:
            merged_accounts = {}
            for key, fields_ in (
                ("sendlane_accounts", {"api_token", "integration_token"}),
                ("sailthru_accounts", {"api_key", "secret"}),
            ):
                if key not in updates:
                    continue
                accounts = copy.deepcopy(self.config[key])
                for name, account in updates[key].items():
                    accounts.setdefault(name, {}).update(account)
                    if set(accounts[name]) != fields_:
                        raise ConfigError(f"{key}[{name!r}] needs {sorted(fields_)}")
                merged_accounts[key] = accounts
            for key, value in updates.items():
                if key == "sendlane_unsubscribed":
                    for entry in value:
                        self._add_unsubscribed(entry)
                elif key in merged_accounts:
                    self.config[key] = merged_accounts[key]
                elif key == "sailthru_rate_limits":
                    # A bare method ("POST") sets that method's limit for every endpoint: it drops the
                    # per-endpoint limits of that method unless the same update names them again.
                    limits = self.config[key]
                    for method in [k for k in value if " " not in k]:
                        for existing in [k for k in limits if k.startswith(method + " ")]:
                            del limits[existing]
                    limits.update(value)
                else:
                    self.config[key] = copy.deepcopy(value)
            self._reindex()
            return self.public_config()

    def _reindex(self) -> None:
        cfg = self.config
        self.sendlane_by_token = {a["api_token"]: name for name, a in cfg["sendlane_accounts"].items()}
        self.sailthru_by_key = {a["api_key"]: name for name, a in cfg["sailthru_accounts"].items()}
        self.templates = set(cfg["sailthru_templates"])
        self.opted_out = {e.strip().lower() for e in cfg["sailthru_opted_out"]}

    def public_config(self) -> dict:
        cfg = copy.deepcopy(self.config)
        cfg.pop("sendlane_unsubscribed", None)
        return cfg

    def _add_unsubscribed(self, entry, account: str | None = None, source: str = "control") -> None:
        if isinstance(entry, str):
            entry = {"email": entry}
        account = entry.get("account") or account or DEFAULT_SENDLANE_ACCOUNT
        email = entry["email"].strip().lower()
        book = self.unsubscribed.setdefault(account, {})
        existing = book.get(email)
        list_id = entry.get("list_id")
        if existing is None:
            existing = book[email] = {
                "email": email,
                "unsubscribed_at": entry.get("unsubscribed_at") or iso_utc(time.time()),
                "list_ids": None if list_id is None else set(),
                "source": source,
            }
        if list_id is None:
            existing["list_ids"] = None  # unsubscribed from everything
        elif existing["list_ids"] is not None:
            existing["list_ids"].add(str(list_id))

    # ---- erasure (storesync erase) -----------------------------------------------------------
    def forget_person(self, vendor: str, account: str, email: str | None, extids=()) -> int:
        """Delete everything ``vendor``'s ``account`` holds of one person (a vendor's deletion of a
        user or contact): profiles, contacts, purchases, returns, unsubscribes and the logged
        requests that carry their email or extid. Returns how many objects went."""
        email = (email or "").strip().lower()
        extids = {str(e) for e in extids}
        # The email as a whole JSON string: a bare substring would also take "jimbob@x.com"'s
        # records when forgetting "bob@x.com".
        quoted = json.dumps(email)

        def mentions(obj) -> bool:
            return bool(email) and quoted in json.dumps(obj, default=str).lower()

        gone = 0
        if vendor == "sailthru":
            for sid, profile in list(self.users.items()):
                keys = profile["keys"]
                if profile["account"] == account and ((email and keys.get("email", "").lower() == email)
                                                      or keys.get("extid") in extids):
                    del self.users[sid]
                    for key in ("email", "extid"):
                        if key in keys:
                            index_value = keys[key].lower() if key == "email" else keys[key]
                            self.user_index[key].pop((account, index_value), None)
                    gone += 1
            for pid, purchase in list(self.purchases.items()):
                if purchase["account"] == account and mentions(purchase):
                    del self.purchases[pid]
                    ids = self.purchases_by_extid.get((account, purchase["extid"]), [])
                    if pid in ids:
                        ids.remove(pid)
                    gone += 1
            kept = [r for r in self.returns if not (r["account"] == account and mentions(r))]
            gone += len(self.returns) - len(kept)
            self.returns = kept
        else:
            for (contact_account, _list_id), book in self.contacts.items():
                if contact_account == account and book.pop(email, None) is not None:
                    gone += 1
            if self.unsubscribed.get(account, {}).pop(email, None) is not None:
                gone += 1
            if self.sendlane_people.get(account, {}).pop(email, None) is not None:
                gone += 1
        kept = [r for r in self.records if not (r["vendor"] == vendor and r["account"] == account
                                                and (mentions(r.get("body")) or mentions(r.get("entity_ids"))
                                                     or (r.get("entity_type") == "user"
                                                         and set(r.get("entity_ids") or ()) & extids)))]
        gone += len(self.records) - len(kept)
        self.records = kept
        return gone

    # ---- Sendlane's account contacts ------------------------------------------------------------
    def upsert_sendlane_person(self, account: str, email: str, fields: dict, now: float, source: str,
                               list_id: str | None = None) -> dict:
        """The account's contact for ``email``, created or updated by an accepted write (a tracking
        event with an email, a list upsert). Found by a search ``sendlane_contact_delay_s`` after
        it was first created (Sendlane processes asynchronously)."""
        email = email.strip().lower()
        book = self.sendlane_people.setdefault(account, {})
        person = book.get(email)
        if person is None:
            person = book[email] = {
                "id": next(self._sendlane_contact_ids), "email": email, "first_name": None, "last_name": None,
                "phone": None, "created_at": iso_utc(now), "updated_at": iso_utc(now),
                "visible_at": now + self.config["sendlane_contact_delay_s"], "lists": [], "sources": [],
            }
        for key in ("first_name", "last_name", "phone"):
            if isinstance(fields.get(key), str) and fields[key]:
                person[key] = fields[key]
        if list_id is not None and list_id not in person["lists"]:
            person["lists"].append(list_id)
        if source not in person["sources"]:
            person["sources"].append(source)
        person["updated_at"] = iso_utc(now)
        return person

    def sendlane_person_by_id(self, account: str, contact_id: str) -> dict | None:
        for person in self.sendlane_people.get(account, {}).values():
            if str(person["id"]) == str(contact_id):
                return person
        return None

    # ---- records ------------------------------------------------------------------------------
    def new_id(self) -> str:
        """A 24-hex id, like the vendors' object ids."""
        return f"{int(self.started_at):08x}{next(self._ids):016x}"

    def stats_for(self, vendor: str, endpoint: str) -> EndpointStats:
        key = (vendor, endpoint)
        stats = self.endpoint_stats.get(key)
        if stats is None:
            stats = self.endpoint_stats[key] = EndpointStats()
        return stats

    def record(
        self,
        vendor: str,
        account: str | None,
        method: str,
        endpoint: str,
        entity_type: str | None,
        entity_ids: list,
        body,
        *,
        source: str = "api",
        status: int = 200,
        extra: dict | None = None,
        skipped: bool = False,
    ) -> dict:
        """Log one answered request. ``skipped``: the vendor answered it as accepted but did not
        record it (a repeat it de-duplicates): logged, so tests can tell posted from recorded."""
        entity_ids = [str(e) for e in entity_ids if e is not None]
        rec = {
            "seq": next(self._seq),
            "vendor": vendor,
            "account": account,
            "method": method,
            "endpoint": endpoint,
            "entity_type": entity_type,
            "entity_id": entity_ids[0] if entity_ids else None,
            "entity_ids": entity_ids,
            "status": status,
            "source": source,
            "body": copy.deepcopy(body) if self.config["record_bodies"] else None,
            "received_at": time.time(),
            "skipped": skipped,
        }
        if extra:
            rec.update(extra)
        self.records.append(rec)
        stats = self.stats_for(vendor, f"{method} {endpoint}")
        if skipped:
            stats.skipped += 1
            return rec
        stats.accepted += 1
        stats.by_source[source] += 1
        for entity in entity_ids:
            stats.entities[entity] += 1
        return rec

    def reject(self, vendor: str, endpoint: str | None, status: int, code=None) -> None:
        self.vendor_rejected[vendor][status] += 1
        if endpoint is not None:
            stats = self.stats_for(vendor, endpoint)
            stats.rejected[status] += 1
            if code is not None:
                stats.errors[code] += 1

    def consent_reversal(self, vendor: str, email: str, detail: str, seq: int | None) -> None:
        self.consent_reversals.append(
            {"vendor": vendor, "email": email, "detail": detail, "seq": seq, "at": time.time()}
        )

    # ---- inspection ---------------------------------------------------------------------------
    def query_records(self, filters: dict) -> list[dict]:
        with self.lock:
            records = list(self.records)
        for key in ("vendor", "endpoint", "method", "source", "account", "entity_type"):
            value = filters.get(key)
            if value:
                if key == "endpoint":
                    value = value if value.startswith("/") else "/" + value
                if key == "method":
                    value = value.upper()
                records = [r for r in records if r[key] == value]
        entity_id = filters.get("entity_id")
        if entity_id:
            records = [r for r in records if entity_id in r["entity_ids"]]
        since = filters.get("since_seq")
        if since:
            records = [r for r in records if r["seq"] > int(since)]
        # What the vendor recorded by default; "0"/"false": only the repeats it skipped; "all": both.
        recorded = (filters.get("recorded") or "1").lower()
        if recorded != "all":
            keep_skipped = recorded in ("0", "false")
            records = [r for r in records if r.get("skipped", False) == keep_skipped]
        return records

    def summary(self) -> dict:
        now = time.time()
        with self.lock:
            vendors: dict = {v: {"accepted": 0, "endpoints": {}, "rejected": {}} for v in VENDORS}
            for (vendor, endpoint), stats in sorted(self.endpoint_stats.items()):
                vendors[vendor]["endpoints"][endpoint] = stats.as_dict()
                vendors[vendor]["accepted"] += stats.accepted
            for vendor in VENDORS:
                rejected = sorted(self.vendor_rejected[vendor].items())
                vendors[vendor]["rejected"] = {str(k): n for k, n in rejected}
            cfg = self.config
            sendlane_limits = {}
            accounts = (set(self.sendlane_limiters) | set(self.sendlane_lockouts)
                        | set(self.sendlane_locked_until))
            for account in sorted(accounts):
                lim = self.sendlane_limiters.get(account) or SlidingWindow()
                sendlane_limits[account] = {
                    "limit": cfg["sendlane_rate_limit"],
                    "window_s": cfg["sendlane_rate_window_s"],
                    "admitted": lim.admitted,
                    "over_limit_rejections": lim.over_limit,
                    "max_in_window": lim.max_in_window,
                    "lockouts": self.sendlane_lockouts.get(account, 0),
                    "locked_rejections": self.sendlane_locked_rejections.get(account, 0),
                    "locked_for_s": max(0.0, self.sendlane_locked_until.get(account, 0.0) - now),
                }
            sailthru_limits: dict = {}
            for (account, key), lim in sorted(self.sailthru_limiters.items()):
                sailthru_limits.setdefault(account, {})[key] = {
                    "limit": sailthru_limit(cfg, key),
                    "window_s": cfg["sailthru_rate_window_s"],
                    "admitted": lim.admitted,
                    "over_limit_rejections": lim.over_limit,
                    "max_in_window": lim.max_in_window,
                }
            jobs = Counter(job["status"] for job in self.jobs.values())
            return {
                "total_accepted": sum(1 for r in self.records if not r.get("skipped")),
                "vendors": vendors,
                "rate_limits": {
                    "enabled": cfg["rate_limits_enabled"],
                    "sendlane": sendlane_limits,
                    "sailthru": sailthru_limits,
                },
                "faults": {
                    "active": self.faults.describe(now),
                    "injected": dict(self.fault_counts),
                    "injected_by_vendor": {v: dict(c) for v, c in self.fault_counts_by_vendor.items()},
                },
                "jobs": dict(jobs),
                "consent_reversals": list(self.consent_reversals),
            }


    def duplicates(self) -> dict:
        """What the vendors *recorded* twice, by their documented semantics: ``{vendor: {endpoint:
        {"count": n, "entities": [...]}}}``, n the records beyond the first.

        - Sendlane order events: never (the vendor skips a repeat of event + id; see ``skipped``);
          products (overwritten) and list contacts (upserted by email): never;
          any other tracking event recorded again with the same body: a duplicate (a flow can fire
          twice). A changed body is a new event the store owes, not a duplicate.
        - Sailthru: a completed purchase recorded again under the same extid (or, without one,
          the same body): a duplicate (revenue counts twice); a cart or a return recorded again
          with the same body: a duplicate; content and users (upserts): never.
        Bodies are compared when ``record_bodies`` is on; otherwise entity ids are.
        """
        with self.lock:
            records = [r for r in self.records if r["method"] == "POST" and not r.get("skipped")]
        seen: set = set()
        found: dict = {}
        for rec in records:
            key = _duplicate_key(rec)
            if key is None:
                continue
            if key in seen:
                entry = found.setdefault(rec["vendor"], {}).setdefault(rec["endpoint"], {"count": 0, "entities": []})
                entry["count"] += 1
                if len(entry["entities"]) < 50:
                    entry["entities"].append(rec["entity_id"])
            seen.add(key)
        return found


# Endpoints a repeat of which is harmless (the vendor de-duplicates, overwrites or upserts).
_IDEMPOTENT_ENDPOINTS = {
    ("sendlane", "/tracking/order-placed"), ("sendlane", "/tracking/order-fulfilled"),
    ("sendlane", "/tracking/order-cancelled"), ("sendlane", "/tracking/order-refunded"),
    ("sendlane", "/tracking/product-added"), ("sendlane", "/lists/{list_id}/contacts"),
    ("sailthru", "/content"), ("sailthru", "/user"), ("sailthru", "/job"),
}


def _duplicate_key(rec: dict):
    vendor, endpoint = rec["vendor"], rec["endpoint"]
    if (vendor, endpoint) in _IDEMPOTENT_ENDPOINTS:
        return None
    body = rec.get("body")
    if vendor == "sailthru" and endpoint == "/purchase" and isinstance(body, dict):
        extid = (body.get("purchase_keys") or {}).get("extid") or body.get("extid")
        if extid is not None and not body.get("incomplete"):
            return (vendor, endpoint, "extid", str(extid))
    if body is None:
        return (vendor, endpoint, "entity", tuple(rec["entity_ids"]))
    return (vendor, endpoint, "body", json.dumps(body, sort_keys=True, default=str))


def sailthru_limit(config: dict, key: str) -> int:
    limits = config["sailthru_rate_limits"]
    if key in limits:
        return limits[key]
    method = key.split(" ", 1)[0]
    return limits.get(method, 40)
