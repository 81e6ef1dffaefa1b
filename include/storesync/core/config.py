"""Settings: where the warehouse, the ledger and the vendors are, and how hard to push them.

Read from ``STORESYNC_*`` environment variables over an optional TOML file
(``STORESYNC_CONFIG``, default ``./storesync.toml``). Inside Airflow, vendor credentials come from
the ``sendlane_default`` / ``sailthru_default`` connections instead; everything else is the same.
Secrets are kept in ``SecretStr`` so that a settings object printed or logged never shows them.

Every value is checked when the settings are built (``SettingError``): the message names the key,
the value, what is allowed and where it came from (the file and table, or the environment
variable); an unknown key (a typo) is refused with the closest known one. A URL's password is
never shown.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from storesync.core.errors import ConfigurationError
from storesync.core.ltv_settings import LtvSettings

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "sql"
DEFAULT_DATA_DIR = Path(os.environ.get("STORESYNC_HOME", PROJECT_ROOT / "var"))


class SecretStr(str):
    """A string that never shows itself in repr/str formatting of containers or logs."""

    def __repr__(self) -> str:
        return "SecretStr('**********')" if self else "SecretStr('')"

    def __str__(self) -> str:
        return "**********" if self else ""

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def reveal(self) -> str:
        return str.__str__(self)


def _secrets(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, SecretStr):
            object.__setattr__(obj, name, SecretStr(value or ""))


class SettingError(ConfigurationError):
    """One bad setting: names the key, the value and what is allowed; ``load_settings`` adds
    where it came from (the file or the environment variable)."""

    def __init__(self, key: str, value, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        self.origin: str | None = None
        super().__init__(self._text())

    def _text(self) -> str:
        where = f" (from {self.origin})" if self.origin else ""
        return f"setting {self.key} = {self.value!r} is not allowed{where}: {self.allowed}"

    def came_from(self, origin: str) -> "SettingError":
        self.origin = origin
        self.args = (self._text(),)
        return self


def _number(section: str, name: str, value, *, whole: bool, low: float, low_open: bool = False,
            high: float | None = None, allowed: str):
    """A number within bounds, else a ``SettingError`` naming ``section.name``. Booleans are
    not numbers here (TOML ``true`` would otherwise read as 1)."""
    key = f"{section}.{name}" if section else name
    if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not float(value).is_integer()):
        raise SettingError(key, value, allowed)
    if value != value or value < low or (low_open and value == low) or (high is not None and value > high):
        raise SettingError(key, value, allowed)
    return int(value) if whole else float(value)


def _choice(section: str, name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingError(f"{section}.{name}", value, "one of " + ", ".join(repr(c) for c in choices))


def _http_url(section: str, name: str, value) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingError(f"{section}.{name}", value, "an http:// or https:// URL with a host, "
                                                        "e.g. https://api.sendlane.com/v2")


def _database_url(name: str, value) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(value)
    except (ArgumentError, TypeError, ValueError):
        raise SettingError(name, _masked_url(value), "a SQLAlchemy URL such as "
                                                     "postgresql+psycopg://user@host/db or sqlite:///path.db") from None


def _masked_url(value) -> str:
    """A URL for an error message: a password in it never shown."""
    import re

    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(value))


# What an unknown outcome may be told to do, per vendor (``pipeline/senders.py`` acts on them).
SENDLANE_UNKNOWN_OUTCOMES = ("resend", "hold")
SAILTHRU_UNKNOWN_OUTCOMES = ("lookup", "hold")
# Rules that settle a held Sendlane event without a person (``storesync.delivery.settle``):
# superseded by what Sendlane accepted later, and what a contact read may prove.
SENDLANE_SUPERSEDE_HELD = ("newer_or_order", "off")
SENDLANE_CONTACT_READS = ("absence", "presence", "off")
# Entities of the quality gate (``storesync.quality.checks.ENTITIES``; kept here so reading the
# settings imports no pandas) and "*", the default for the rest.
QUARANTINE_ENTITIES = ("orders", "order_lines", "products", "customers", "checkouts", "site_events")
BUDGET_ALLOWED = "a whole number >= 0 (requests per window; 0 = no client-side budget, only for a sandbox without limits)"


# Where Sendlane's fulfilled/cancelled/refunded events go: the published reference gives no
# path for them, so the map is configuration (override with [sendlane.event_paths]).
DEFAULT_SENDLANE_EVENT_PATHS = {
    "order_placed": "/tracking/order-placed",
    "order_fulfilled": "/tracking/order-fulfilled",
    "order_cancelled": "/tracking/order-cancelled",
    "order_refunded": "/tracking/order-refunded",
    "customer_added": "/tracking/customer-added",
    "product_added": "/tracking/product-added",
    "checkout_started": "/tracking/checkout-started",
    "added_to_cart": "/tracking/added-to-cart",
    "product_viewed": "/tracking/product-viewed",
    "custom_event": "/tracking/event",
}


@dataclass(frozen=True)
class SendlaneSettings:
    base_url: str = "http://127.0.0.1:8765/sendlane/v2"
    api_token: SecretStr = SecretStr("")
    integration_token: SecretStr = SecretStr("")
    # Sendlane allows 240/min per account; stay under it by default.
    budget_per_minute: int = 200  # 0 = no client-side budget (a sandbox without limits only)
    # The budget's window: 60 s at the real vendor; tests and benchmarks scale it down.
    budget_window_s: float = 60.0
    list_id: str | None = None
    # "resend": send again only what the vendor's contract makes safe (order events by event + id,
    # products, list contacts; pipeline/senders.py), hold the rest; "hold": hold every unknown outcome.
    unknown_outcome: str = "resend"
    # Held checkout_started / customer_added rows (docs/exactly-once.md): "newer_or_order" settles
    # one as superseded once Sendlane accepted a newer version of its entity or, for a checkout, an
    # order of the same contact placed after it; "off" leaves them to a person.
    supersede_held: str = "newer_or_order"
    # The contact read (GET /contacts/search, undocumented; docs/exactly-once.md): "presence" (the
    # default) resends an event whose contact is not found on a proven path, and takes a found
    # contact as arrival when it was created while the held event could have made it and no other
    # storesync delivery of the person was sent (the person's deliveries wait for the read);
    # "absence" only resends on not-found (an account where forms or snippets make contacts);
    # "off": no reads.
    contact_read: str = "presence"
    # A contact read is trusted only this long after the request: Sendlane processes asynchronously.
    unknown_grace_s: float = 600.0
    event_paths: dict = field(default_factory=lambda: dict(DEFAULT_SENDLANE_EVENT_PATHS))
    # The account's own id: keys the ledger and the shared budget. Unset: a fingerprint of the
    # API token (so a rotated token looks like a new account: set this before rotating).
    account_id: str | None = None

    def __post_init__(self) -> None:
        _secrets(self, "api_token", "integration_token")
        _normalise_account_id(self)
        _http_url("sendlane", "base_url", self.base_url)
        object.__setattr__(self, "budget_per_minute", _number(
            "sendlane", "budget_per_minute", self.budget_per_minute, whole=True, low=0, allowed=BUDGET_ALLOWED))
        object.__setattr__(self, "budget_window_s", _number(
            "sendlane", "budget_window_s", self.budget_window_s, whole=False, low=0, low_open=True,
            allowed="a number of seconds > 0 (60 at the real vendor)"))
        _choice("sendlane", "unknown_outcome", self.unknown_outcome, SENDLANE_UNKNOWN_OUTCOMES)
        _choice("sendlane", "supersede_held", self.supersede_held, SENDLANE_SUPERSEDE_HELD)
        _choice("sendlane", "contact_read", self.contact_read, SENDLANE_CONTACT_READS)
        object.__setattr__(self, "unknown_grace_s", _number(
            "sendlane", "unknown_grace_s", self.unknown_grace_s, whole=False, low=0,
            allowed="a number of seconds >= 0"))
        _check_event_paths(self.event_paths)

    @property
    def account(self) -> str:
        """The ledger's account key: ``account_id``, else the token's fingerprint."""
        return account_key(self.account_id, self.api_token)


@dataclass(frozen=True)
class SailthruSettings:
    base_url: str = "http://127.0.0.1:8765/sailthru"
    api_key: SecretStr = SecretStr("")
    secret: SecretStr = SecretStr("")
    # Per endpoint and method, per minute; the response headers refine these at run time.
    budget_per_minute: int = 40
    reminder_template: str = "abandoned-cart"
    reminder_time: str = "+3 hours"
    unknown_outcome: str = "lookup"  # GET /purchase by extid resolves an unknown purchase
    # A lookup that finds nothing is trusted only this long after the request was sent: a
    # gateway may still be handing the request on, or the vendor still be recording it.
    unknown_grace_s: float = 120.0
    # The account's own id (see SendlaneSettings.account_id); unset: the API key's fingerprint.
    account_id: str | None = None

    def __post_init__(self) -> None:
        _secrets(self, "api_key", "secret")
        _normalise_account_id(self)
        _http_url("sailthru", "base_url", self.base_url)
        object.__setattr__(self, "budget_per_minute", _number(
            "sailthru", "budget_per_minute", self.budget_per_minute, whole=True, low=0, allowed=BUDGET_ALLOWED))
        if hasattr(self, "budget_window_s"):
            object.__setattr__(self, "budget_window_s", _number(
                "sailthru", "budget_window_s", self.budget_window_s, whole=False, low=0, low_open=True,
                allowed="a number of seconds > 0 (60 at the real vendor)"))
        _choice("sailthru", "unknown_outcome", self.unknown_outcome, SAILTHRU_UNKNOWN_OUTCOMES)
        object.__setattr__(self, "unknown_grace_s", _number(
            "sailthru", "unknown_grace_s", self.unknown_grace_s, whole=False, low=0,
            allowed="a number of seconds >= 0"))

    @property
    def account(self) -> str:
        """The ledger's account key: ``account_id``, else the API key's fingerprint."""
        return account_key(self.account_id, self.api_key)


@dataclass(frozen=True)
class RetentionSettings:
    """[retention]: how long personal data is kept (storesync.privacy.retention)."""

    # Payloads of deliveries accepted this many days ago, and quarantine rows resolved this many
    # days ago, are scrubbed of personal data by `storesync retention` (the maintenance DAG).
    days: int = 30

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", _number("retention", "days", self.days, whole=True, low=1,
                                                 allowed="a whole number of days >= 1"))


@dataclass(frozen=True)
class Settings:
    warehouse_url: str = ""
    ledger_url: str = ""
    models_dir: Path = DEFAULT_MODELS_DIR
    data_dir: Path = DEFAULT_DATA_DIR
    chunk_size: int = 20_000  # rows a read and a gate batch: GX costs ~0.5 s a batch, whatever its size
    # Sending threads per vendor account (each keeps one pooled connection). 16 threads send
    # ~260 events/s to a vendor 50 ms away. Under a budget (Sendlane 200/min, Sailthru 40/min
    # by default) fewer would do; more cost nothing there: a row is claimed only once its budget
    # is secured, so no claimed row waits for budget. Raise it for a distant, unbudgeted vendor.
    concurrency: int = 16
    # Quarantine share (0..1) above which a batch fails the run, per entity.
    quarantine_thresholds: dict = field(
        default_factory=lambda: {
            "orders": 0.05,
            "order_lines": 0.05,
            "products": 0.10,
            "customers": 0.05,
            "checkouts": 0.10,
        }
    )
    sendlane: SendlaneSettings = field(default_factory=SendlaneSettings)
    sailthru: SailthruSettings = field(default_factory=SailthruSettings)
    ltv: LtvSettings = field(default_factory=LtvSettings)  # [ltv]: see core/ltv_settings.py
    retention: RetentionSettings = field(default_factory=RetentionSettings)  # [retention]

    def __post_init__(self) -> None:
        data_dir = Path(self.data_dir)
        object.__setattr__(self, "data_dir", data_dir)
        object.__setattr__(self, "models_dir", Path(self.models_dir))
        if not self.warehouse_url:
            object.__setattr__(self, "warehouse_url", f"sqlite:///{data_dir / 'demo_store.db'}")
        if not self.ledger_url:
            object.__setattr__(self, "ledger_url", f"sqlite:///{data_dir / 'storesync_ledger.db'}")
        _database_url("warehouse_url", self.warehouse_url)
        _database_url("ledger_url", self.ledger_url)
        for name in ("chunk_size", "concurrency"):
            object.__setattr__(self, name, _number("", name, getattr(self, name), whole=True, low=1,
                                                   allowed="a whole number >= 1"))
        object.__setattr__(self, "quarantine_thresholds", _quarantine_thresholds(self.quarantine_thresholds))

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)


def _quarantine_thresholds(value) -> dict:
    """Shares in [0, 1] per quality-gate entity (or "*"): a typo'd entity would silently fall
    back to the default, and a share above 1 would never fail a run."""
    if not isinstance(value, dict):
        raise SettingError("quarantine_thresholds", value, "a table of entity = share, e.g. {orders = 0.05}")
    checked = {}
    for entity, share in value.items():
        if entity not in (*QUARANTINE_ENTITIES, "*"):
            raise SettingError(f"quarantine_thresholds.{entity}", share,
                               f"an entity of the quality gate ({', '.join(QUARANTINE_ENTITIES)}) or \"*\"")
        checked[entity] = _number("quarantine_thresholds", entity, share, whole=False, low=0, high=1,
                                  allowed="a share between 0 and 1 (0.05 = 5% of a batch)")
    return checked


def _check_event_paths(paths) -> None:
    if not isinstance(paths, dict):
        raise SettingError("sendlane.event_paths", paths, "a table of event = path")
    for event, path in paths.items():
        if event not in DEFAULT_SENDLANE_EVENT_PATHS:
            raise SettingError(f"sendlane.event_paths.{event}", path,
                               "an event of " + ", ".join(DEFAULT_SENDLANE_EVENT_PATHS))
        if not isinstance(path, str) or not path.startswith("/") or " " in path:
            raise SettingError(f"sendlane.event_paths.{event}", path, "a path starting with '/', e.g. "
                                                                       "/tracking/order-fulfilled")


def _suggest(name: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(cls, raw: dict, env_prefix: str, *, section: str = "", origin: str = "the settings file"):
    """Build a settings dataclass from a TOML table, then STORESYNC_* variables over it. A bad
    value fails here, naming the key, the value, what is allowed and where it came from."""
    known = {f.name: f for f in fields(cls)}
    values, sources = {}, {}
    dotted = f"{section}." if section else ""
    for key, value in raw.items():
        if key not in known:
            raise ConfigurationError(
                f"unknown setting {dotted}{key} in {origin}{_suggest(key, known)} "
                f"(known: {', '.join(sorted(known))})")
        values[key], sources[key] = value, origin
    for name, f in known.items():
        variable = f"{env_prefix}{name.upper()}"
        env_value = os.environ.get(variable)
        if env_value is not None and f.type not in ("dict",) and not name.endswith("_paths"):
            values[name], sources[name] = env_value, f"environment variable {variable}"
    for name, value in list(values.items()):
        ftype = str(known[name].type)
        if not isinstance(value, str) or ftype not in ("int", "float"):
            if ftype == "SecretStr":
                values[name] = SecretStr(value)
            continue
        try:  # text (an environment variable) to the field's type; a TOML number stays as it is
            values[name] = int(value) if ftype == "int" else float(value)
        except ValueError:
            kind = "a whole number" if ftype == "int" else "a number"
            raise SettingError(f"{dotted}{name}", value, kind).came_from(sources[name]) from None
    try:
        return cls(**values)
    except SettingError as exc:
        name = exc.key[len(dotted):].split(".", 1)[0] if exc.key.startswith(dotted) else exc.key
        raise exc.came_from(sources.get(name, "the defaults")) from None


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    config_path = Path(path or os.environ.get("STORESYNC_CONFIG", "storesync.toml"))
    raw: dict = {}
    if config_path.exists():
        try:
            raw = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_path}: not valid TOML: {exc}") from exc
    origin = str(config_path) if config_path.exists() else "the defaults"
    for name in ("sendlane", "sailthru", "ltv", "retention"):
        if name in raw and not isinstance(raw[name], dict):
            raise SettingError(name, raw[name], f"a [{name}] table").came_from(origin)
    sendlane_raw = dict(raw.pop("sendlane", {}))
    if isinstance(sendlane_raw.get("event_paths"), dict):  # a partial map overrides the defaults path by path
        sendlane_raw["event_paths"] = {**DEFAULT_SENDLANE_EVENT_PATHS, **sendlane_raw["event_paths"]}
    sendlane = _coerce(SendlaneSettings, sendlane_raw, "STORESYNC_SENDLANE_", section="sendlane",
                       origin=f"{origin} [sendlane]")
    sailthru = _coerce(SailthruSettings, raw.pop("sailthru", {}), "STORESYNC_SAILTHRU_", section="sailthru",
                       origin=f"{origin} [sailthru]")
    ltv = _coerce(LtvSettings, raw.pop("ltv", {}), "STORESYNC_LTV_", section="ltv", origin=f"{origin} [ltv]")
    retention = _coerce(RetentionSettings, raw.pop("retention", {}), "STORESYNC_RETENTION_", section="retention",
                        origin=f"{origin} [retention]")
    base = _coerce(
        Settings,
        {k: v for k, v in raw.items() if k not in ("sendlane", "sailthru")},
        "STORESYNC_", origin=origin,
    )
    return replace(base, sendlane=sendlane, sailthru=sailthru, ltv=ltv, retention=retention)


MAX_ACCOUNT_ID_LENGTH = 40  # the ledger's account column


def _normalise_account_id(settings) -> None:
    """``account_id``: None or empty means unset; numbers (TOML) become text; it must fit the
    ledger's account column and must not contain the delivery key's separator."""
    value = settings.account_id
    value = None if value is None or not str(value).strip() else str(value).strip()
    if value is not None and (len(value) > MAX_ACCOUNT_ID_LENGTH or "|" in value):
        raise ConfigurationError(
            f"account_id must be at most {MAX_ACCOUNT_ID_LENGTH} characters, without '|': {value!r}")
    object.__setattr__(settings, "account_id", value)


def account_of(settings: "Settings", vendor: str) -> str:
    """The account key of ``vendor`` under ``settings``: what every ledger row, shared budget,
    historical checkpoint and report of that vendor is keyed by. The one place that picks it."""
    try:
        return getattr(settings, vendor).account
    except AttributeError:
        raise ValueError(f"unknown vendor {vendor!r}; known: sendlane, sailthru") from None


def account_key(account_id: str | None, secret: str) -> str:
    """Which vendor account a ledger row and a shared budget belong to: the configured
    ``account_id`` when there is one, else a fingerprint of the credential (the old default)."""
    if account_id is not None and str(account_id).strip():
        return str(account_id).strip()
    return fingerprint(secret)


def fingerprint(secret: str) -> str:
    """A stable, non-reversible account id from a credential: keys ledgers and shared budgets."""
    import hashlib

    raw = secret.reveal() if isinstance(secret, SecretStr) else str(secret or "")
    return hashlib.sha256(raw.encode()).hexdigest()[:16] if raw else "unconfigured"
