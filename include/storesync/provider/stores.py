"""Which stores the shipped DAGs sync, and to which vendor accounts: ``storesync_stores.toml``.

The file sits beside the DAGs (``dags/storesync_stores.toml``; ``$STORESYNC_STORES`` names
another). One table per store, each naming its Airflow connections::

    [stores.default]                          # DAG ids storesync_<sync>, e.g. storesync_order_events
    warehouse_conn_id = "storesync_warehouse"
    ledger_conn_id = "storesync_ledger"
    sendlane_conn_id = "sendlane_default"
    sailthru_conn_id = "sailthru_default"

    [stores.outlet]                           # DAG ids storesync_outlet_<sync>
    warehouse_conn_id = "outlet_warehouse"
    sendlane_conn_id = "sendlane_outlet"      # leave a vendor out: the store does not sync to it

Each DAG file makes its DAG once per store. The ``default`` store keeps the plain DAG ids and
ledger sync names (``order_events``); any other store's are prefixed (``storesync_outlet_...``,
``outlet.order_events``), so its watermarks and runs are its own. The ledger may be shared (one
per deployment is the rule: the vendor budgets live there); a vendor connection belongs to one
store only, since a vendor account's deliveries are keyed by the store's entity ids.

No file: one ``default`` store with the default connection ids. Parsing this file is part of
parsing every DAG file: it imports nothing but ``tomllib`` and is read once per process.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from storesync.core.errors import ConfigurationError

STORES_FILE = "storesync_stores.toml"
DEFAULT_STORE = "default"
KEYS = {"warehouse_conn_id", "ledger_conn_id", "sendlane_conn_id", "sailthru_conn_id", "description"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
_CONN_DEFAULTS = {"warehouse_conn_id": "storesync_warehouse", "ledger_conn_id": "storesync_ledger",
                  "sendlane_conn_id": "sendlane_default", "sailthru_conn_id": "sailthru_default"}


@dataclass(frozen=True)
class Store:
    """One store: its connection ids and the names its DAGs and syncs take."""

    name: str = DEFAULT_STORE
    warehouse_conn_id: str = "storesync_warehouse"
    ledger_conn_id: str = "storesync_ledger"
    sendlane_conn_id: str | None = "sendlane_default"
    sailthru_conn_id: str | None = "sailthru_default"
    description: str = ""

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_STORE

    def dag_id(self, sync: str) -> str:
        return f"storesync_{sync}" if self.is_default else f"storesync_{self.name}_{sync}"

    def sync_name(self, sync: str) -> str:
        return sync if self.is_default else f"{self.name}.{sync}"

    @property
    def vendors(self) -> list[str]:
        return [v for v in ("sendlane", "sailthru") if getattr(self, f"{v}_conn_id")]

    @property
    def conn_kwargs(self) -> dict:
        """The ``*_conn_id`` arguments every storesync operator of this store takes."""
        return {"warehouse_conn_id": self.warehouse_conn_id, "ledger_conn_id": self.ledger_conn_id}

    @property
    def tags(self) -> list[str]:
        return [] if self.is_default else [f"store:{self.name}"]


def stores_path(dags_dir: str | os.PathLike | None = None) -> Path:
    named = os.environ.get("STORESYNC_STORES")
    if named:
        return Path(named).expanduser()
    return Path(dags_dir or Path(__file__).resolve().parents[3] / "dags") / STORES_FILE


def load_stores(dags_dir: str | os.PathLike | None = None) -> tuple[Store, ...]:
    """The configured stores (a ``default`` one when there is no file). Raises
    ``ConfigurationError`` naming the file, the store and the key on anything wrong."""
    path = stores_path(dags_dir)
    stat = path.stat() if path.exists() else None
    return _load(str(path), stat.st_mtime_ns if stat else None)


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int | None) -> tuple[Store, ...]:
    if mtime_ns is None:
        if os.environ.get("STORESYNC_STORES"):
            raise ConfigurationError(f"STORESYNC_STORES names {path}, which does not exist")
        return (Store(),)
    try:
        raw = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(raw) - {"stores"}
    if unknown:
        raise ConfigurationError(f"{path}: unknown top-level keys {sorted(unknown)}; stores go in [stores.<name>]")
    tables = raw.get("stores") or {}
    if not isinstance(tables, dict) or not tables:
        raise ConfigurationError(f"{path}: no [stores.<name>] table")
    stores, owner_of = [], {}
    for name, table in tables.items():
        where = f"{path}: [stores.{name}]"
        if not _NAME.match(name):
            raise ConfigurationError(f"{where}: a store name is lower case letters, digits and _ "
                                     "(at most 30, starting with a letter)")
        if not isinstance(table, dict):
            raise ConfigurationError(f"{where} must be a table")
        bad = set(table) - KEYS
        if bad:
            raise ConfigurationError(f"{where}: unknown keys {sorted(bad)}; allowed: {sorted(KEYS)}")
        values = {}
        for key, default in _CONN_DEFAULTS.items():
            value = table.get(key, default if name == DEFAULT_STORE or key.startswith(("warehouse", "ledger"))
                              else None)
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{where}: {key} must be a connection id (text), not {value!r}")
            values[key] = value or None
        if not values["warehouse_conn_id"] or not values["ledger_conn_id"]:
            raise ConfigurationError(f"{where}: warehouse_conn_id and ledger_conn_id must not be empty")
        if not values["sendlane_conn_id"] and not values["sailthru_conn_id"]:
            raise ConfigurationError(f"{where}: names no vendor connection (sendlane_conn_id, sailthru_conn_id)")
        for key in ("sendlane_conn_id", "sailthru_conn_id"):
            conn_id = values[key]
            if conn_id and conn_id in owner_of:
                raise ConfigurationError(f"{where}: {key} {conn_id!r} is already store {owner_of[conn_id]!r}'s: "
                                         "a vendor account belongs to one store")
            if conn_id:
                owner_of[conn_id] = name
        stores.append(Store(name=name, description=str(table.get("description", "")), **values))
    return tuple(stores)
