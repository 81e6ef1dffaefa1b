"""Settings: where the warehouse, the ledger and the vendors are, and how hard to push them.

Read from ``STORESYNC_*`` environment variables over an optional TOML file
(``STORESYNC_CONFIG``, default ``./storesync.toml``). Inside Airflow, vendor credentials come from
the ``sendlane_default`` / ``sailthru_default`` connections instead; everything else is the same.
Secrets are kept in ``SecretStr`` so that a settings object printed or logged never shows them.
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
    event_paths: dict = field(default_factory=lambda: dict(DEFAULT_SENDLANE_EVENT_PATHS))
    # The account's own id: keys the ledger and the shared budget. Unset: a fingerprint of the
    # API token (so a rotated token looks like a new account: set this before rotating).
    account_id: str | None = None

    def __post_init__(self) -> None:
        _secrets(self, "api_token", "integration_token")
        _normalise_account_id(self)

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
        if self.unknown_grace_s < 0:
            raise ConfigurationError("sailthru.unknown_grace_s must not be negative")

    @property
    def account(self) -> str:
        """The ledger's account key: ``account_id``, else the API key's fingerprint."""
        return account_key(self.account_id, self.api_key)


@dataclass(frozen=True)
class Settings:
    warehouse_url: str = ""
    ledger_url: str = ""
    models_dir: Path = DEFAULT_MODELS_DIR
    data_dir: Path = DEFAULT_DATA_DIR
    chunk_size: int = 20_000  # rows a read and a gate batch: GX costs ~0.5 s a batch, whatever its size
    # Sending threads per vendor account (each keeps one pooled connection). 16 threads send
    # ~260 events/s to a vendor 50 ms away. Under a budget (Sendlane 200/min, Sailthru 40/min
    # by default) fewer would do: a claimed delivery waits for the budget inside its thread, so
    # up to this many rows sit ``sending``, and a crash there turns them unknown (looked up at
    # Sailthru, held at Sendlane). Lower it to shrink that; raise it for a distant, unbudgeted vendor.
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

    def __post_init__(self) -> None:
        data_dir = Path(self.data_dir)
        object.__setattr__(self, "data_dir", data_dir)
        object.__setattr__(self, "models_dir", Path(self.models_dir))
        if not self.warehouse_url:
            object.__setattr__(self, "warehouse_url", f"sqlite:///{data_dir / 'demo_store.db'}")
        if not self.ledger_url:
            object.__setattr__(self, "ledger_url", f"sqlite:///{data_dir / 'storesync_ledger.db'}")
        if self.chunk_size < 1 or self.concurrency < 1:
            raise ConfigurationError("chunk_size and concurrency must be at least 1")

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)


def _coerce(cls, raw: dict, env_prefix: str):
    """Build a settings dataclass from a TOML table, then STORESYNC_* variables over it."""
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigurationError(f"unknown setting {env_prefix.lower()}{key!r}")
        values[key] = value
    for name, f in known.items():
        env_value = os.environ.get(f"{env_prefix}{name.upper()}")
        if env_value is not None and f.type not in ("dict",) and not name.endswith("_paths"):
            values[name] = env_value
    for name, value in list(values.items()):
        ftype = str(known[name].type)
        try:
            if ftype == "int":
                values[name] = int(value)
            elif ftype == "float":
                values[name] = float(value)
            elif ftype == "SecretStr":
                values[name] = SecretStr(value)
        except ValueError as exc:
            raise ConfigurationError(f"setting {env_prefix}{name.upper()} must be a whole number") from exc
    return cls(**values)


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    config_path = Path(path or os.environ.get("STORESYNC_CONFIG", "storesync.toml"))
    raw: dict = {}
    if config_path.exists():
        try:
            raw = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_path}: not valid TOML: {exc}") from exc
    sendlane_raw = dict(raw.pop("sendlane", {}))
    if "event_paths" in sendlane_raw:  # a partial map overrides the defaults path by path
        sendlane_raw["event_paths"] = {**DEFAULT_SENDLANE_EVENT_PATHS, **sendlane_raw["event_paths"]}
    sendlane = _coerce(SendlaneSettings, sendlane_raw, "STORESYNC_SENDLANE_")
    sailthru = _coerce(SailthruSettings, raw.pop("sailthru", {}), "STORESYNC_SAILTHRU_")
    ltv = _coerce(LtvSettings, raw.pop("ltv", {}), "STORESYNC_LTV_")
    base = _coerce(
        Settings,
        {k: v for k, v in raw.items() if k not in ("sendlane", "sailthru")},
        "STORESYNC_",
    )
    return replace(base, sendlane=sendlane, sailthru=sailthru, ltv=ltv)


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
