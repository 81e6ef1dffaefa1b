"""Airflow hook for Sailthru: builds a ``SailthruClient`` from an Airflow connection.

The connection (``conn_type="sailthru"``, default ``sailthru_default``):

| field               | holds                                                              |
|---------------------|--------------------------------------------------------------------|
| host ("Base URL")   | empty for ``https://api.sailthru.com``; a whole URL (the emulator's ``http://127.0.0.1:PORT/sailthru``) or a host name (``https`` assumed) |
| login ("API key")   | the API key                                                        |
| password ("Secret") | the shared secret: it signs every request and is never sent        |
| extra ``account_id`` | the Sailthru account's id: keys the ledger; unset: a fingerprint of the API key |

As env vars: ``AIRFLOW_CONN_SAILTHRU_DEFAULT='{"conn_type": "sailthru", "login": "<key>",
"password": "<secret>"}'`` or ``sailthru://<key>:<secret>@api.sailthru.com``.

Sailthru's limits are per account, endpoint and method and announced on every response. The
syncs share them through the ledger database (``storesync.pipeline.vendor_clients
.sailthru_limiters``: one sliding-window budget per account, endpoint and method, steered by the
headers); a client from this hook alone, without ``limiters``, throttles on the headers in its
own process (``HeaderThrottle`` per endpoint and method).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk.bases.hook import BaseHook
from airflow.sdk.log import mask_secret

from storesync.clients.http import DEFAULT_TIMEOUT, RetryPolicy, base_url_from_parts
from storesync.clients.sailthru import SAILTHRU_BASE_URL, SailthruClient
from storesync.core.errors import ConfigurationError, StoresyncError
from storesync.core.throttle import RateLimiter
from storesync.provider.get_provider_info import ui_field_behaviour


class SailthruHook(BaseHook):
    """Connection, request signing, rate limit and retries for one Sailthru account.

    :param sailthru_conn_id: the Airflow connection to use.
    :param limiters: (endpoint, method) → limiter, overriding the header-driven default.
    """

    conn_name_attr = "sailthru_conn_id"
    default_conn_name = "sailthru_default"
    conn_type = "sailthru"
    hook_name = "Sailthru"

    def __init__(
        self,
        sailthru_conn_id: str = default_conn_name,
        *,
        limiters: Callable[[str, str], RateLimiter] | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        pool_size: int = 8,
    ) -> None:
        super().__init__()
        self.sailthru_conn_id = sailthru_conn_id
        self.limiters = limiters
        self.retry_policy = retry_policy
        self.timeout = timeout
        self.pool_size = pool_size
        self._client: SailthruClient | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour(cls.conn_type)

    def get_conn(self) -> SailthruClient:
        """The client for this connection, built on first use and then reused."""
        if self._client is None:
            conn = self.get_connection(self.sailthru_conn_id)
            api_key, secret = conn.login or "", conn.password or ""
            for value in (api_key, secret):
                if value:
                    mask_secret(value)
            if not api_key or not secret:
                raise ConfigurationError(
                    f"connection {self.sailthru_conn_id!r} needs the API key (login) "
                    "and the secret (password)"
                )
            self._client = SailthruClient(
                base_url=base_url_from_parts(conn.host, conn.port, conn.schema, SAILTHRU_BASE_URL),
                api_key=api_key,
                secret=secret,
                limiters=self.limiters,
                retry_policy=self.retry_policy,
                timeout=self.timeout,
                pool_size=self.pool_size,
            )
        return self._client

    def test_connection(self) -> tuple[bool, str]:
        """Used by the Airflow UI's "Test" button: one signed read, no retries."""
        try:
            return self.get_conn().test_connection()
        except StoresyncError as error:
            return False, str(error)
