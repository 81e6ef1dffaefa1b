"""The ``[ltv]`` table of ``storesync.toml``: what LTV reads and how it counts (docs/ltv.md).

Kept apart from ``core.config`` (which holds it as ``Settings.ltv``) because it is LTV's own
vocabulary; it imports nothing heavy, so reading the settings stays cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storesync.core.errors import ConfigurationError

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _statuses(value, name: str) -> tuple[str, ...]:
    """A TOML list, or (from a STORESYNC_LTV_* variable) comma-separated text."""
    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
        raise ConfigurationError(f"ltv.{name} must be a list of status names, got {value!r}")
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class LtvSettings:
    """What LTV reads (SQL models in ``models_dir``) and how it counts.

    Status classes: an order whose (as-of) status is in ``valid_statuses`` counts in order
    count and net revenue; ``reversed_statuses`` count in gross revenue only (placed, then taken
    back); ``excluded_statuses`` and every status in none of the three lists (unknown) count
    nowhere. Money is in ``currency``: orders in another currency are converted through the
    ``fx_rates_model`` (rate of the order's day), never added as they are.
    """

    orders_model: str = "ltv_orders"
    # "" when the store keeps no status history: orders.status is then taken as it is now.
    status_history_model: str = "ltv_order_status_changes"
    # "" for a single-currency store: orders in any other currency are left out (and counted).
    fx_rates_model: str = "fx_rates"
    currency: str = "USD"  # the reporting currency every figure is in
    valid_statuses: tuple[str, ...] = ("pending", "processing", "completed", "fulfilled")
    reversed_statuses: tuple[str, ...] = ("cancelled", "refunded")
    excluded_statuses: tuple[str, ...] = ("failed",)
    initial_status: str = "pending"  # an order's status before its first history row
    horizon_days: int = 365
    time_unit_days: float = 7.0
    discount_rate: float = 0.0
    discount_period_days: float = 30.0
    penalizer: float = 0.0

    def __post_init__(self) -> None:
        classes = {}
        for name in ("valid_statuses", "reversed_statuses", "excluded_statuses"):
            value = _statuses(getattr(self, name), name)
            object.__setattr__(self, name, value)
            for status in value:
                if status in classes:
                    raise ConfigurationError(
                        f"ltv: status {status!r} is in both {classes[status]} and {name}: give it one class")
                classes[status] = name
        if not self.valid_statuses:
            raise ConfigurationError("ltv.valid_statuses is empty: no order would ever count")
        if self.initial_status not in classes:
            raise ConfigurationError(
                f"ltv.initial_status {self.initial_status!r} is in no status class: add it to valid_statuses")
        currency = str(self.currency or "").strip().upper()
        if not _CURRENCY.match(currency):
            raise ConfigurationError(f"ltv.currency must be a 3-letter ISO 4217 code, got {self.currency!r}")
        object.__setattr__(self, "currency", currency)
        for name in ("orders_model", "status_history_model", "fx_rates_model"):
            value = str(getattr(self, name) or "").strip()
            if value.endswith(".sql"):
                value = value[:-4]
            if value and not _MODEL_NAME.match(value):
                raise ConfigurationError(f"ltv.{name} must be a model file name in models_dir, got {value!r}")
            object.__setattr__(self, name, value)
        if not self.orders_model:
            raise ConfigurationError("ltv.orders_model must name the orders model (e.g. ltv_orders)")
        numbers = {"horizon_days": int, "time_unit_days": float, "discount_rate": float,
                   "discount_period_days": float, "penalizer": float}
        for name, kind in numbers.items():
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except (TypeError, ValueError):
                raise ConfigurationError(f"ltv.{name} must be a number, got {getattr(self, name)!r}") from None
        if self.horizon_days < 0 or self.discount_rate < 0 or self.penalizer < 0:
            raise ConfigurationError("ltv.horizon_days, discount_rate and penalizer must not be negative")
        if self.time_unit_days <= 0 or self.discount_period_days <= 0:
            raise ConfigurationError("ltv.time_unit_days and discount_period_days must be positive")

    def predict_options(self) -> dict:
        """The keyword arguments of ``predict_ltv``."""
        return {"horizon_days": self.horizon_days, "time_unit_days": self.time_unit_days,
                "discount_rate": self.discount_rate, "discount_period_days": self.discount_period_days,
                "penalizer": self.penalizer}
