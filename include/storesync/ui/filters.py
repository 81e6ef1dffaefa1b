"""The view's filters (store part shown: vendor, account, days), checked before any query runs.

Light on purpose: the app imports this at plugin load, the queries only on a request.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DAYS = 92
MAX_ACCOUNT_LENGTH = 40  # the ledger's account column
VENDORS = ("sendlane", "sailthru")


class BadRequest(ValueError):
    """A filter the view cannot use (unknown vendor, days out of range...): answered with 400."""


@dataclass(frozen=True)
class Filters:
    """Which part of a store's ledger to show. Empty vendor/account: all of them."""

    vendor: str | None = None
    account: str | None = None
    days: int = 14

    def __post_init__(self) -> None:
        vendor = (self.vendor or "").strip() or None
        account = (self.account or "").strip() or None
        if vendor is not None and vendor not in VENDORS:
            raise BadRequest(f"vendor must be sendlane or sailthru, not {vendor!r}")
        if account is not None and len(account) > MAX_ACCOUNT_LENGTH:
            raise BadRequest("account is longer than any account key")
        if not isinstance(self.days, int) or not 1 <= self.days <= MAX_DAYS:
            raise BadRequest(f"days must be a whole number from 1 to {MAX_DAYS}")
        object.__setattr__(self, "vendor", vendor)
        object.__setattr__(self, "account", account)

    def where(self, table) -> list:
        clauses = []
        if self.vendor:
            clauses.append(table.c.vendor == self.vendor)
        if self.account:
            clauses.append(table.c.account == self.account)
        return clauses


@dataclass(frozen=True)
class StoreScope:
    """The rows of a (possibly shared) ledger that belong to one store.

    ``accounts``: the store's (vendor, account key) pairs, from its vendor connections; None
    reads every delivery. ``sync_prefix``: ``"outlet."`` for a named store's syncs, ``""`` for the
    default store's (names without a dot), None for every sync."""

    accounts: tuple[tuple[str, str], ...] | None = None
    sync_prefix: str | None = None
