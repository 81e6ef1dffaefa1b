"""Creates storesync's Airflow connections once, for docker-compose.yaml (run by airflow-init).

    python docker/init_connections.py --check   # validate the environment only (no Airflow import)
    python docker/init_connections.py           # create what is missing: warehouse, ledger, vendors, alerts
    python docker/init_connections.py --demo    # the vendor connections at the emulator (profile demo)

A connection that exists is never changed: after the first start the Airflow UI (Admin ->
Connections) is where they are edited. To create one again from ``.env``, delete it in the UI and
run ``docker compose up airflow-init``. Nothing is an ``AIRFLOW_CONN_*`` variable, which would
override whatever a user saves in the UI.

Read from the environment (``.env`` through compose; given to this one-shot container only):

- ``WAREHOUSE_CONN_URI``, ``LEDGER_CONN_URI``: the warehouse and the ledger (``postgresql://...``).
- ``SENDLANE_BASE_URL``, ``SENDLANE_API_TOKEN``, ``SENDLANE_INTEGRATION_TOKEN``, ``SENDLANE_ACCOUNT_ID``;
  ``SAILTHRU_BASE_URL``, ``SAILTHRU_API_KEY``, ``SAILTHRU_SECRET``, ``SAILTHRU_ACCOUNT_ID``.
  Credentials need an explicit ``https://`` base URL that is not the emulator: storesync never
  guesses where real credentials go (an unset URL used to mean "the emulator", over plain HTTP).
- ``STORESYNC_SLACK_CONN``, ``STORESYNC_SMTP_CONN``: the alert channels, Airflow connection JSON.
- ``EMULATOR_URL`` (``--demo``): the emulator's address, default ``http://emulator:8765``.

Secrets are read from the environment and written through Airflow's ORM (encrypted with the
Fernet key): never on a command line, never printed. Exit 2 when the environment is wrong (nothing
is created then).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import urlsplit

# The emulator's test credentials (storesync.emulator.state): a sandbox's, not secrets.
EMULATOR_CREDENTIALS = {"sendlane": {"password": "test-sendlane-api-token",
                                     "integration_token": "test-sendlane-integration-token"},
                        "sailthru": {"login": "test-sailthru-key", "password": "test-sailthru-secret"}}
EMULATOR_HOSTS = {"emulator", "localhost", "127.0.0.1", "::1", "0.0.0.0"}


class EnvironmentProblem(ValueError):
    """The environment asks for something unsafe or incomplete."""


def _env(name: str) -> str:
    return (os.environ.get(name) or "").strip()


def _vendor_base_url(vendor: str, variable: str, credential_variables: tuple[str, ...]) -> str:
    """The base URL for real credentials: required, https, never the emulator."""
    url = _env(variable)
    given = ", ".join(credential_variables)
    if not url:
        raise EnvironmentProblem(
            f"{variable} is empty while {given} is set: set it to the vendor's API "
            f"({'https://api.sendlane.com/v2' if vendor == 'sendlane' else 'https://api.sailthru.com'}); "
            "storesync never guesses where real credentials go")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise EnvironmentProblem(f"{variable}={url!r}: real credentials go over https only; write an https:// URL")
    if parts.hostname in EMULATOR_HOSTS:
        raise EnvironmentProblem(f"{variable} points at the emulator ({parts.hostname}) while {given} is set: "
                                 "real credentials never go to the emulator; use the demo profile without them")
    return url.rstrip("/")


def vendor_connections() -> list[dict]:
    """The vendor connections the environment's credentials ask for (validated)."""
    connections = []
    token, integration = _env("SENDLANE_API_TOKEN"), _env("SENDLANE_INTEGRATION_TOKEN")
    if token or integration:
        if not (token and integration):
            raise EnvironmentProblem("set both SENDLANE_API_TOKEN and SENDLANE_INTEGRATION_TOKEN (or neither)")
        extra = {"integration_token": integration}
        if _env("SENDLANE_ACCOUNT_ID"):
            extra["account_id"] = _env("SENDLANE_ACCOUNT_ID")
        connections.append({
            "conn_id": "sendlane_default", "conn_type": "sendlane", "password": token, "extra": json.dumps(extra),
            "host": _vendor_base_url("sendlane", "SENDLANE_BASE_URL",
                                     ("SENDLANE_API_TOKEN", "SENDLANE_INTEGRATION_TOKEN")),
            "description": "Sendlane (from .env at the first start)"})
    key, secret = _env("SAILTHRU_API_KEY"), _env("SAILTHRU_SECRET")
    if key or secret:
        if not (key and secret):
            raise EnvironmentProblem("set both SAILTHRU_API_KEY and SAILTHRU_SECRET (or neither)")
        connections.append({
            "conn_id": "sailthru_default", "conn_type": "sailthru", "login": key, "password": secret,
            "extra": json.dumps({"account_id": _env("SAILTHRU_ACCOUNT_ID")} if _env("SAILTHRU_ACCOUNT_ID") else {}),
            "host": _vendor_base_url("sailthru", "SAILTHRU_BASE_URL", ("SAILTHRU_API_KEY", "SAILTHRU_SECRET")),
            "description": "Sailthru (from .env at the first start)"})
    return connections


def demo_connections() -> list[dict]:
    """The vendor connections at the emulator, with its test credentials."""
    base = (_env("EMULATOR_URL") or "http://emulator:8765").rstrip("/")
    sendlane, sailthru = EMULATOR_CREDENTIALS["sendlane"], EMULATOR_CREDENTIALS["sailthru"]
    return [
        {"conn_id": "sendlane_default", "conn_type": "sendlane", "host": f"{base}/sendlane/v2",
         "password": sendlane["password"], "extra": json.dumps({"integration_token": sendlane["integration_token"]}),
         "description": "Sendlane: the local emulator (demo profile)"},
        {"conn_id": "sailthru_default", "conn_type": "sailthru", "host": f"{base}/sailthru",
         "login": sailthru["login"], "password": sailthru["password"],
         "description": "Sailthru: the local emulator (demo profile)"},
    ]


def other_connections() -> list[dict]:
    """The warehouse, the ledger and the alert channels the environment names."""
    connections = []
    for conn_id, variable, what in (("storesync_warehouse", "WAREHOUSE_CONN_URI", "the store's warehouse"),
                                    ("storesync_ledger", "LEDGER_CONN_URI", "the delivery ledger")):
        uri = _env(variable)
        if uri:
            if "://" not in uri:
                raise EnvironmentProblem(f"{variable} must be a connection URI such as postgresql://user:pw@host/db")
            connections.append({"conn_id": conn_id, "uri": uri, "description": f"storesync: {what}"})
    for conn_id, variable in (("storesync_slack", "STORESYNC_SLACK_CONN"), ("storesync_smtp", "STORESYNC_SMTP_CONN")):
        value = _env(variable)
        if value:
            try:
                fields = json.loads(value)
            except ValueError:
                raise EnvironmentProblem(f"{variable} is not JSON: write Airflow connection JSON, e.g. "
                                         '{"conn_type": "smtp", "host": "...", ...}') from None
            if not isinstance(fields, dict) or not fields.get("conn_type"):
                raise EnvironmentProblem(f"{variable}: a JSON object with at least a conn_type")
            connections.append({"conn_id": conn_id, "json": value})
    return connections


def create_missing(wanted: list[dict]) -> list[str]:
    """Create each connection that does not exist yet; one report line each (no secret in it)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    lines = []
    with create_session() as session:
        for fields in wanted:
            conn_id = fields["conn_id"]
            if session.query(Connection).filter(Connection.conn_id == conn_id).one_or_none() is not None:
                lines.append(f"{conn_id}: kept (it exists; edit it in the UI)")
                continue
            if "uri" in fields:
                conn = Connection(conn_id=conn_id, uri=fields["uri"], description=fields.get("description"))
            elif "json" in fields:
                conn = Connection.from_json(fields["json"], conn_id=conn_id)
            else:
                # The vendor forms hide the port; the 3.3.2 UI's Test button then sends port 0 for a
                # stored NULL and is refused ("host or port differs"): store 0, which the hooks ignore.
                conn = Connection(**{"port": 0, **fields})
            session.add(conn)
            lines.append(f"{conn_id}: created ({conn.conn_type})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="validate the environment only")
    parser.add_argument("--demo", action="store_true", help="the vendor connections at the emulator")
    args = parser.parse_args(argv)
    try:
        wanted = demo_connections() if args.demo else [*other_connections(), *vendor_connections()]
    except EnvironmentProblem as problem:
        print(f"storesync connections: {problem} (in .env; nothing was created)", file=sys.stderr)
        return 2
    if args.check:
        print(f"storesync connections: the environment is consistent ({len(wanted)} to create if missing)")
        return 0
    for line in create_missing(wanted):
        print(f"storesync connections: {line}")
    if not args.demo and not any(c["conn_id"] in ("sendlane_default", "sailthru_default") for c in wanted):
        print("storesync connections: no vendor credentials in .env: create sendlane_default / sailthru_default "
              "in the UI (Admin -> Connections), or start the demo profile for the emulator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
