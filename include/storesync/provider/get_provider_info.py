"""The provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

Airflow imports this module while it discovers providers (in every component, at start-up), so
it must stay cheap: no Airflow imports, no hook imports. Airflow 3.3 reads the connection forms
from here (``conn-fields`` and ``ui-field-behaviour`` per connection type) without importing the
hooks; the hooks' ``get_ui_field_behaviour`` returns the same data, derived from this module, for
anything that still asks the hook class.
"""

from __future__ import annotations

from storesync import __version__

SENDLANE_CONNECTION = {
    "connection-type": "sendlane",
    "hook-class-name": "storesync.provider.hooks.sendlane.SendlaneHook",
    "hook-name": "Sendlane",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port", "login"],
        "relabeling": {"host": "Base URL", "password": "API token"},
        "placeholders": {
            "host": "https://api.sendlane.com/v2 (leave empty for the real API)",
            "password": "Sendlane API v2 token",
            "integration_token": "custom integration token (body field 'token' of tracking events)",
            "budget_per_minute": "200",
            "list_id": "the list's id (optional)",
        },
    },
    "conn-fields": {
        "integration_token": {
            "label": "Custom integration token",
            "description": "Sent as the 'token' field of every /tracking/* event.",
            "schema": {"type": ["string", "null"], "format": "password"},
        },
        "budget_per_minute": {
            "label": "Budget per minute",
            "description": "Requests per minute for this Sendlane account, shared by every DAG and "
                           "worker using it (Sendlane allows 240 per account).",
            "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 240},
        },
        "list_id": {
            "label": "List id",
            "description": "The Sendlane list customers are added to as contacts (consent, LTV custom "
                           "fields). Empty: no list contacts, events only.",
            "schema": {"type": ["string", "integer", "null"]},
        },
        "account_id": {
            "label": "Account id",
            "description": "The Sendlane account's id: keys storesync's ledger and shared budget. "
                           "Empty: a fingerprint of the API token (a new token then looks like a new account).",
            "schema": {"type": ["string", "null"], "maxLength": 40},
        },
    },
}

SAILTHRU_CONNECTION = {
    "connection-type": "sailthru",
    "hook-class-name": "storesync.provider.hooks.sailthru.SailthruHook",
    "hook-name": "Sailthru",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"host": "Base URL", "login": "API key", "password": "Secret"},
        "placeholders": {
            "host": "https://api.sailthru.com (leave empty for the real API)",
            "login": "Sailthru API key",
            "password": "Sailthru shared secret (signs requests; never sent)",
        },
    },
    "conn-fields": {
        "account_id": {
            "label": "Account id",
            "description": "The Sailthru account's id: keys storesync's ledger. "
                           "Empty: a fingerprint of the API key (a new key then looks like a new account).",
            "schema": {"type": ["string", "null"], "maxLength": 40},
        },
    },
}


def get_provider_info() -> dict:
    return {
        "package-name": "storesync",
        "name": "storesync",
        "description": "Keeps the email-marketing vendors Sendlane and Sailthru in step with a store's "
                       "data warehouse, exactly once: connections, hooks, ledger-backed operators, alerts.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Sendlane", "external-doc-url": "https://api.sendlane.com/",
             "tags": ["service"]},
            {"integration-name": "Sailthru",
             "external-doc-url": "https://getstarted.sailthru.com/developers/api/", "tags": ["service"]},
        ],
        "hooks": [
            {"integration-name": "Sendlane", "python-modules": ["storesync.provider.hooks.sendlane"]},
            {"integration-name": "Sailthru", "python-modules": ["storesync.provider.hooks.sailthru"]},
        ],
        "operators": [
            {"integration-name": "Sendlane", "python-modules": ["storesync.provider.operators.sendlane",
                                                                "storesync.provider.operators.sync"]},
            {"integration-name": "Sailthru", "python-modules": ["storesync.provider.operators.sailthru",
                                                                "storesync.provider.operators.sync"]},
        ],
        "notifications": ["storesync.provider.notifiers.alert.StoresyncAlertNotifier"],
        "connection-types": [SENDLANE_CONNECTION, SAILTHRU_CONNECTION],
    }


def ui_field_behaviour(connection_type: str) -> dict:
    """The form behaviour of one connection type in the shape of ``BaseHook.get_ui_field_behaviour``
    (snake_case keys), from the declarative metadata above: one source for both."""
    connection = {c["connection-type"]: c for c in get_provider_info()["connection-types"]}[connection_type]
    behaviour = connection["ui-field-behaviour"]
    return {
        "hidden_fields": list(behaviour["hidden-fields"]),
        "relabeling": dict(behaviour["relabeling"]),
        "placeholders": dict(behaviour["placeholders"]),
    }
