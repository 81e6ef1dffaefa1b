"""storesync alerts: the Airflow notifier (``alert``), message builders (``messages``), ledger checks
(``checks``).

``messages`` and ``checks`` import no Airflow; this package imports ``alert`` (and so
``airflow.sdk``) only when one of its names is used, so the pure parts stay importable anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

_ALERT_NAMES = ("AlertDeliveryError", "StoresyncAlertNotifier", "alert_callbacks", "alert_on_ledger",
                "send_alert", "SLACK_CONN_ID", "SMTP_CONN_ID")

if TYPE_CHECKING:
    from storesync.provider.notifiers.alert import (  # noqa: F401
        SLACK_CONN_ID,
        SMTP_CONN_ID,
        AlertDeliveryError,
        StoresyncAlertNotifier,
        alert_callbacks,
        alert_on_ledger,
        send_alert,
    )


def __getattr__(name: str):
    if name in _ALERT_NAMES:
        from storesync.provider.notifiers import alert

        return getattr(alert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_ALERT_NAMES)
