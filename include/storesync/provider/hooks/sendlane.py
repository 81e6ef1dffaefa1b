"""Airflow hook for Sendlane: builds a ``SendlaneClient`` from an Airflow connection.

The connection (``conn_type="sendlane"``, default ``sendlane_default``):

| field                     | holds                                                         |
|---------------------------|---------------------------------------------------------------|
| host ("Base URL")         | empty for ``https://api.sendlane.com/v2``; a whole URL (the emulator's ``http://127.0.0.1:PORT/sendlane/v2``) or a host name (``https`` is assumed, port and schema appended) |
| password ("API token")    | the API v2 token (``Authorization: Bearer``)                   |
| extra ``integration_token`` | the custom integration token (body ``token`` of tracking events) |
| extra ``budget_per_minute`` | requests per minute for the account, default 200 (Sendlane allows 240) |
| extra ``account_id``      | the Sendlane account's id: keys the ledger and the shared budget; unset: a fingerprint of the API token (set it before rotating tokens, or when several tokens share one account) |

As env vars: ``AIRFLOW_CONN_SENDLANE_DEFAULT='{"conn_type": "sendlane", "password": "...",
"extra": {"integration_token": "..."}}'`` or the URI form
``sendlane://:<api token>@api.sendlane.com/v2?integration_token=<token>``.

The budget is shared: unless a limiter is passed in, the client gets a ``SharedWindowLimiter``
in the ledger database keyed by the account (``account_id``, else the token's fingerprint), so every DAG, worker and host that
syncs this Sendlane account draws on the one per-minute budget.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.hook import BaseHook
from airflow.sdk.log import mask_secret

from storesync.clients.http import DEFAULT_TIMEOUT, RetryPolicy, base_url_from_parts
from storesync.clients.sendlane import DEFAULT_BUDGET_PER_MINUTE, SENDLANE_BASE_URL, SendlaneClient
from storesync.core.config import account_key
from storesync.core.errors import ConfigurationError, StoresyncError
from storesync.core.throttle import RateLimiter, SharedWindowLimiter
from storesync.provider.get_provider_info import ui_field_behaviour


class SendlaneHook(BaseHook):
    """Connection, authentication, rate limit and retries for one Sendlane account.

    :param sendlane_conn_id: the Airflow connection to use.
    :param limiter: overrides the shared per-account budget (e.g. ``Unlimited`` for benchmarks).
    :param ledger_url: database holding the shared budget; default: the ``storesync_ledger``
        connection's, else the settings' ledger.
    """

    conn_name_attr = "sendlane_conn_id"
    default_conn_name = "sendlane_default"
    conn_type = "sendlane"
    hook_name = "Sendlane"

    def __init__(
        self,
        sendlane_conn_id: str = default_conn_name,
        *,
        limiter: RateLimiter | None = None,
        ledger_url: str | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        pool_size: int = 8,
    ) -> None:
        super().__init__()
        self.sendlane_conn_id = sendlane_conn_id
        self.limiter = limiter
        self.ledger_url = ledger_url
        self.retry_policy = retry_policy
        self.timeout = timeout
        self.pool_size = pool_size
        self._client: SendlaneClient | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour(cls.conn_type)

    def get_conn(self) -> SendlaneClient:
        """The client for this connection, built on first use and then reused."""
        if self._client is None:
            conn = self.get_connection(self.sendlane_conn_id)
            extra = conn.extra_dejson
            api_token = conn.password or ""
            integration_token = extra.get("integration_token") or ""
            for secret in (api_token, integration_token):
                if secret:
                    mask_secret(secret)
            if not api_token:
                raise ConfigurationError(f"connection {self.sendlane_conn_id!r} has no API token (password)")
            try:
                budget = int(extra.get("budget_per_minute") or DEFAULT_BUDGET_PER_MINUTE)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"connection {self.sendlane_conn_id!r}: budget_per_minute must be a whole number"
                ) from None
            self._client = SendlaneClient(
                base_url=base_url_from_parts(conn.host, conn.port, conn.schema, SENDLANE_BASE_URL),
                api_token=api_token,
                integration_token=integration_token,
                limiter=self.limiter or self._shared_budget(account_key(extra.get("account_id"), api_token),
                                                            budget),
                retry_policy=self.retry_policy,
                timeout=self.timeout,
                pool_size=self.pool_size,
            )
        return self._client

    def _shared_budget(self, account: str, budget: int) -> SharedWindowLimiter:
        if self.ledger_url is None:
            from storesync.provider.connections import LEDGER_CONN_ID, resolve_ledger_url

            self.ledger_url = resolve_ledger_url(LEDGER_CONN_ID)
        return SharedWindowLimiter(
            self.ledger_url,
            key=f"sendlane:{account}",
            limit=budget,
        )

    def test_connection(self) -> tuple[bool, str]:
        """Used by the Airflow UI's "Test" button: one authenticated read, no retries."""
        try:
            return self.get_conn().test_connection()
        except StoresyncError as error:
            return False, str(error)
