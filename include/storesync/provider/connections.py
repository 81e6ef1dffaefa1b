"""storesync settings for one task, from Airflow connections.

Inside Airflow everything a sync reaches comes from a connection, where Airflow users keep
credentials (and where secret backends serve them):

| what          | parameter           | default id             | connection type                                     |
|---------------|---------------------|------------------------|-----------------------------------------------------|
| the warehouse | ``warehouse_conn_id`` | ``storesync_warehouse`` | any whose hook is a common-sql ``DbApiHook`` (postgres, sqlite, mysql, duckdb...) |
| the ledger    | ``ledger_conn_id``    | ``storesync_ledger``    | the same (PostgreSQL in production; one ledger per deployment) |
| Sendlane      | ``sendlane_conn_id``  | ``sendlane_default``    | ``sendlane`` (``SendlaneHook``)                     |
| Sailthru      | ``sailthru_conn_id``  | ``sailthru_default``    | ``sailthru`` (``SailthruHook``)                     |

A database connection becomes a SQLAlchemy URL through its hook's ``sqlalchemy_url`` (else its
``get_uri()``), as ``DbApiHook.get_sqlalchemy_engine()`` does.

When a connection with the *default* id does not exist, the settings file applies instead
(``storesync.toml`` / ``STORESYNC_*``, what the CLI reads), so a deployment that configured
storesync before connections existed keeps working. A connection named explicitly (any other id)
that does not exist is a configuration error: a typo must not quietly sync another store.

Nothing depends on the task's working directory: a relative ``STORESYNC_CONFIG`` path and a
relative SQLite path (``sqlite:///var/store.db``, or a ``sqlite`` connection's relative host) are
resolved against :func:`project_root`: ``$STORESYNC_HOME`` when set, else the folder that holds
Airflow's dags folder (the project: ``dags/``, ``storesync.toml``, ``include/``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from typing import TYPE_CHECKING

from storesync.core.errors import ConfigurationError

if TYPE_CHECKING:  # loaded when a task runs, not while DAG files that name the ids are parsed
    from storesync.core.config import Settings

log = logging.getLogger(__name__)

WAREHOUSE_CONN_ID = "storesync_warehouse"
LEDGER_CONN_ID = "storesync_ledger"
SENDLANE_CONN_ID = "sendlane_default"
SAILTHRU_CONN_ID = "sailthru_default"
DEFAULT_CONN_IDS = frozenset({WAREHOUSE_CONN_ID, LEDGER_CONN_ID, SENDLANE_CONN_ID, SAILTHRU_CONN_ID})


@dataclass(frozen=True)
class ConnectionIds:
    """Which Airflow connections one sync uses. A vendor id of None: that vendor is not synced."""

    warehouse: str | None = WAREHOUSE_CONN_ID
    ledger: str | None = LEDGER_CONN_ID
    sendlane: str | None = SENDLANE_CONN_ID
    sailthru: str | None = SAILTHRU_CONN_ID

    def for_vendor(self, vendor: str) -> str | None:
        if vendor not in ("sendlane", "sailthru"):
            raise ConfigurationError(f"unknown vendor {vendor!r}; known: sendlane, sailthru")
        return getattr(self, vendor)

    @property
    def vendors(self) -> list[str]:
        return [v for v in ("sendlane", "sailthru") if getattr(self, v)]


# ---------------------------------------------------------------------------- paths
def project_root() -> Path:
    """Where relative paths point inside Airflow: ``$STORESYNC_HOME``, else the parent of Airflow's
    dags folder (``[core] dags_folder``), else the storesync checkout."""
    home = os.environ.get("STORESYNC_HOME")
    if home:
        return Path(home).expanduser().resolve()
    dags_folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if not dags_folder:
        try:
            from airflow.sdk.configuration import conf

            dags_folder = conf.get("core", "dags_folder", fallback=None)
        except Exception:  # noqa: BLE001 - outside Airflow: the checkout
            dags_folder = None
    if dags_folder:
        return Path(dags_folder).expanduser().resolve().parent
    from storesync.core.config import PROJECT_ROOT

    return PROJECT_ROOT


def absolute_sqlite_url(url: str, root: Path | None = None) -> str:
    """``url`` with a relative SQLite file path made absolute against ``root`` (other URLs and
    in-memory SQLite unchanged)."""
    from sqlalchemy.engine import make_url

    if not url.startswith("sqlite"):
        return url
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or os.path.isabs(database):
        return url
    path = (root or project_root()) / database
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def base_settings() -> Settings:
    """``load_settings()`` with its file found from :func:`project_root`, never the working directory."""
    from storesync.core.config import load_settings

    config = os.environ.get("STORESYNC_CONFIG") or "storesync.toml"
    path = Path(config).expanduser()
    if not path.is_absolute():
        path = project_root() / path
    current = load_settings(path)
    return replace(current, warehouse_url=absolute_sqlite_url(current.warehouse_url),
                   ledger_url=absolute_sqlite_url(current.ledger_url))


# ---------------------------------------------------------------------------- connections
def get_connection(conn_id: str | None, *, required: bool | None = None):
    """The connection, or None when it does not exist and may be absent (a default id).

    ``required`` None: required unless ``conn_id`` is one of the default ids."""
    if not conn_id:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        if required or (required is None and conn_id not in DEFAULT_CONN_IDS):
            raise ConfigurationError(
                f"Airflow connection {conn_id!r} does not exist: create it (Admin -> Connections, "
                f"or AIRFLOW_CONN_{conn_id.upper()}), or name the right one in the DAG") from None
        return None


def database_url(conn_id: str, conn=None) -> str:
    """The SQLAlchemy URL of a database connection, through its common-sql hook."""
    from airflow.sdk.log import mask_secret

    conn = conn or get_connection(conn_id, required=True)
    try:
        hook = conn.get_hook()
    except Exception as exc:  # noqa: BLE001 - an unknown type or a provider not installed
        raise ConfigurationError(
            f"connection {conn_id!r} (type {conn.conn_type!r}) has no database hook here "
            f"({type(exc).__name__}): install the provider of that type, or use a postgres/sqlite "
            "connection") from None
    url = None
    try:
        url = hook.sqlalchemy_url
    except (NotImplementedError, AttributeError):
        pass
    except Exception as exc:  # noqa: BLE001 - e.g. the URL form of a type without SQLAlchemy support
        log.debug("connection %r: no sqlalchemy_url (%s); using its URI", conn_id, type(exc).__name__)
    if url is None:
        get_uri = getattr(hook, "get_uri", None)
        if get_uri is None:
            raise ConfigurationError(f"connection {conn_id!r} (type {conn.conn_type!r}) is not a database "
                                     "connection: its hook gives no SQLAlchemy URL")
        url = get_uri()
    if not isinstance(url, str):
        if url.password:
            mask_secret(str(url.password))
        url = url.render_as_string(hide_password=False)
    if conn.password:
        mask_secret(conn.password)
    return absolute_sqlite_url(url)


def _vendor_overrides(base: Settings, conn_ids: ConnectionIds) -> dict:
    """The vendor settings from the vendor connections that exist; the settings file's otherwise.
    A connection without a Base URL means the vendor's real API, as its form says (never the
    settings' default, the local emulator: real credentials must not go there)."""
    from storesync.clients.http import base_url_from_parts
    from storesync.clients.sailthru import SAILTHRU_BASE_URL
    from storesync.clients.sendlane import SENDLANE_BASE_URL

    overrides = {}
    sendlane = get_connection(conn_ids.sendlane)
    if sendlane is not None:
        extra = sendlane.extra_dejson
        try:
            budget = int(extra.get("budget_per_minute") or base.sendlane.budget_per_minute)
        except (TypeError, ValueError):
            raise ConfigurationError(f"connection {conn_ids.sendlane!r}: extra budget_per_minute must be a "
                                     f"whole number, not {extra.get('budget_per_minute')!r}") from None
        list_id = extra.get("list_id")
        overrides["sendlane"] = replace(
            base.sendlane,
            base_url=base_url_from_parts(sendlane.host, sendlane.port, sendlane.schema, SENDLANE_BASE_URL),
            api_token=sendlane.password or "",
            integration_token=extra.get("integration_token") or "",
            budget_per_minute=budget,
            account_id=_account_id(extra, base.sendlane.account_id),
            list_id=str(list_id) if list_id not in (None, "") else base.sendlane.list_id,
        )
    sailthru = get_connection(conn_ids.sailthru)
    if sailthru is not None:
        overrides["sailthru"] = replace(
            base.sailthru,
            base_url=base_url_from_parts(sailthru.host, sailthru.port, sailthru.schema, SAILTHRU_BASE_URL),
            api_key=sailthru.login or "", secret=sailthru.password or "",
            account_id=_account_id(sailthru.extra_dejson, base.sailthru.account_id),
        )
    return overrides


def _account_id(extra: dict, default: str | None) -> str | None:
    """The connection's extra ``account_id`` (the ledger's account key), else the settings' one;
    neither: the ledger keys the account by a fingerprint of its credential."""
    value = extra.get("account_id")
    return str(value) if value not in (None, "") else default


def resolve_settings(conn_ids: ConnectionIds | None = None, base: Settings | None = None) -> Settings:
    """Settings for a task: the settings file, then the warehouse, ledger and vendor connections
    over it (those that exist; see the module doc)."""
    conn_ids = conn_ids or ConnectionIds()
    base = base or base_settings()
    overrides = _vendor_overrides(base, conn_ids)
    for field_name, conn_id in (("warehouse_url", conn_ids.warehouse), ("ledger_url", conn_ids.ledger)):
        conn = get_connection(conn_id)
        if conn is not None:
            overrides[field_name] = database_url(conn_id, conn)
    return replace(base, **overrides) if overrides else base


def resolve_ledger_url(conn_id: str | None = LEDGER_CONN_ID) -> str:
    """The ledger's URL: the connection's when it exists, else the settings'."""
    conn = get_connection(conn_id)
    return database_url(conn_id, conn) if conn is not None else base_settings().ledger_url


def known_secrets(conn_ids: ConnectionIds | None) -> list[str]:
    """The secrets of a sync's connections, for an alert to mask verbatim (never raises): passwords,
    vendor logins (Sailthru's API key) and token-like extras. A database login is a user name, not
    a secret: masked verbatim it would also cut words that contain it."""
    secrets: list[str] = []
    if conn_ids is None:
        return secrets
    for conn_id, is_vendor in ((conn_ids.warehouse, False), (conn_ids.ledger, False),
                               (conn_ids.sendlane, True), (conn_ids.sailthru, True)):
        try:
            conn = get_connection(conn_id, required=False)
        except Exception:  # noqa: BLE001 - masking is best effort on top of the patterns
            conn = None
        if conn is None:
            continue
        secrets += [v for v in (conn.password, conn.login if is_vendor else None) if v]
        extra = conn.extra_dejson or {}
        secrets += [str(v) for k, v in extra.items() if v and ("token" in k or "secret" in k or "key" in k)]
    return secrets
