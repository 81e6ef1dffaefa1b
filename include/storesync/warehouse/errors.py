"""What a database error means, said once for the CLI and the Airflow tasks.

A driver's error is sorted into what fixes it: the URL (a database or role that does not exist, a
password refused, a SQLite file that cannot be opened), the schema the models read (a table or
column missing), or the database's reachability (refused, timed out: a retry may do). The text
names the database (URL with its password hidden, the connection id inside Airflow) and the models
folder, and never the statement's parameters (the engines hide them).
"""

from __future__ import annotations

import re

URL, SCHEMA, UNREACHABLE, OTHER = "url", "schema", "unreachable", "other"

# SQLSTATEs (PostgreSQL; psycopg puts them on the error) and the drivers' words for the same.
_URL_STATES = {"3D000", "28000", "28P01"}  # invalid catalog (database), authorization, password
_SCHEMA_STATES = {"42P01", "42703", "3F000", "42883"}  # undefined table, column, schema, function
_URL_TEXT = re.compile(r'(database|role|user) "[^"]*" does not exist|password authentication failed|'
                       r"no password supplied|access denied for user|unknown database|"
                       r"unable to open database file|could not translate host name|"
                       r"name or service not known", re.IGNORECASE)
_SCHEMA_TEXT = re.compile(r"no such table|no such column|(relation|column|table|schema) \S+ does not exist|"
                          r"undefined(table|column)|catalog error: (table|column)|binder error",
                          re.IGNORECASE)
_UNREACHABLE_TEXT = re.compile(r"connection refused|could not connect|timeout expired|timed out|"
                               r"server closed the connection|connection reset", re.IGNORECASE)

HINTS = {
    URL: "check the URL: user, password, host, port and database name (the database and role must exist)",
    SCHEMA: ("a missing table or column means the warehouse does not have what the SQL models read: "
             "`storesync models check` shows which model; point the URL at the right database, adapt the "
             "models (models_dir), or run `storesync demo-store` for the demo store"),
    UNREACHABLE: ("check that the database is up and reachable from here (host, port, firewall); "
                  "a retry may do"),
    OTHER: "check that the database is reachable and the URL (user, password, host, database) is right",
}


def detail(exc: BaseException) -> str:
    """The driver's own message, first line (SQLAlchemy wraps it with the statement)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_problem(exc: BaseException) -> str:
    """``url``, ``schema``, ``unreachable`` or ``other`` for a SQLAlchemy / driver error."""
    from sqlalchemy.exc import NoSuchTableError

    if isinstance(exc, NoSuchTableError):
        return SCHEMA
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in _URL_STATES:
        return URL
    if state in _SCHEMA_STATES:
        return SCHEMA
    text = detail(exc)
    for kind, pattern in ((URL, _URL_TEXT), (SCHEMA, _SCHEMA_TEXT), (UNREACHABLE, _UNREACHABLE_TEXT)):
        if pattern.search(text):
            return kind
    return OTHER


def shown_url(url: str) -> str:
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as its scheme only
        return str(url).split(":", 1)[0] + ":..."


def where(warehouse_url: str, ledger_url: str, models_dir, *, warehouse_conn_id: str | None = None,
          ledger_conn_id: str | None = None) -> str:
    """Which databases (and, inside Airflow, connections) and which models a run used."""
    def named(what: str, url: str, conn_id: str | None) -> str:
        return f"{what} {shown_url(url)}" + (f" (connection {conn_id!r})" if conn_id else "")

    return (f"{named('warehouse', warehouse_url, warehouse_conn_id)}, "
            f"{named('ledger', ledger_url, ledger_conn_id)}, models in {models_dir}")


def describe(exc: BaseException, where_text: str) -> str:
    """One line: the driver's message, where, and what to check."""
    return f"database error: {detail(exc)} ({where_text}); {HINTS[database_problem(exc)]}"
