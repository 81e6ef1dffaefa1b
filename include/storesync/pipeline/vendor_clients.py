"""The vendor clients a sync sends with, and the rate limiters (budgets) they share.

Both vendors count their limits per *account*, whoever sends: every task, DAG and Celery worker
sending for one account must draw on one budget. With a ledger database (``limiter_engine``) the
budgets live there (``SharedWindowLimiter``, table ``storesync_rate_slots``), keyed by the
account key (``settings.account``: ``account_id``, else a fingerprint of the credential; never
the credential itself); alone, a process keeps its own.
"""

from __future__ import annotations

import hashlib

from storesync.core.config import SailthruSettings, SendlaneSettings

# The shared limiter's key column holds 80 characters, "#paused" included.
_MAX_KEY = 72


def budget_key(vendor: str, account: str, endpoint: str | None = None, method: str | None = None) -> str:
    """The shared budget's key: ``vendor:account`` (Sendlane: one budget per account), plus
    ``:METHOD /endpoint`` where the vendor budgets per endpoint and method (Sailthru). Too long
    for the column (a long ``account_id``): the tail becomes a hash, still one key per budget."""
    key = f"{vendor}:{account}"
    if endpoint is not None:
        key += f":{(method or 'POST').upper()} /{endpoint.strip('/')}"
    if len(key) <= _MAX_KEY:
        return key
    return f"{vendor}:#{hashlib.sha256(key.encode()).hexdigest()[:_MAX_KEY - len(vendor) - 2]}"


def default_sendlane_client(settings: SendlaneSettings, account: str, limiter_engine=None):
    """Sendlane's budget is per account, across every process that sends for it: with a ledger
    database to share, the limiter lives there; alone, an in-process bucket does."""
    from storesync.clients.sendlane import SendlaneClient
    from storesync.core.throttle import SharedWindowLimiter, TokenBucket, Unlimited

    if settings.budget_per_minute <= 0:
        limiter = Unlimited()  # 0 = no client-side budget: only for a sandbox without limits
    elif limiter_engine is not None:
        limiter = SharedWindowLimiter(limiter_engine, budget_key("sendlane", account), settings.budget_per_minute,
                                      window_s=settings.budget_window_s,
                                      margin_s=min(1.0, settings.budget_window_s / 20))
    else:
        limiter = TokenBucket(settings.budget_per_minute * 60.0 / settings.budget_window_s)
    return SendlaneClient(
        base_url=settings.base_url, api_token=settings.api_token.reveal(),
        integration_token=settings.integration_token.reveal(), limiter=limiter,
    )


def sailthru_limiters(settings: SailthruSettings, limiter_engine=None, *, window_s: float | None = None,
                      **shared_options):
    """Sailthru's budgets: one per account, endpoint and method. With a ledger database they are
    shared there (``SharedWindowLimiter``), so two DAGs posting ``/purchase`` on one account stay
    within ``budget_per_minute`` in any ``window_s`` together; the vendor's ``X-Rate-Limit-*``
    headers steer them too, and a 429 pauses every process on that endpoint. Without one, each
    process follows the headers alone (``HeaderThrottle``). ``shared_options`` go to each
    ``SharedWindowLimiter`` (a test's clock)."""
    from storesync.core.throttle import HeaderThrottle, PerEndpointLimiters, SharedWindowLimiter, Unlimited

    if settings.budget_per_minute <= 0:
        return PerEndpointLimiters(Unlimited)  # a sandbox without limits (benchmarks)
    if limiter_engine is None:
        return PerEndpointLimiters(lambda: HeaderThrottle(settings.budget_per_minute))
    account = settings.account
    if window_s is None:  # the vendor's minute; a test against a scaled-down emulator shortens it
        window_s = float(getattr(settings, "budget_window_s", 60.0))

    def shared(endpoint: str, method: str) -> SharedWindowLimiter:
        return SharedWindowLimiter(limiter_engine, budget_key("sailthru", account, endpoint, method),
                                   settings.budget_per_minute, window_s=window_s,
                                   margin_s=min(1.0, window_s / 20), **shared_options)

    return PerEndpointLimiters(shared, keyed=True)


def default_sailthru_client(settings: SailthruSettings, limiter_engine=None):
    """Sailthru's client, its budgets per endpoint and method (``sailthru_limiters``)."""
    from storesync.clients.sailthru import SailthruClient

    return SailthruClient(base_url=settings.base_url, api_key=settings.api_key.reveal(),
                          secret=settings.secret.reveal(), limiters=sailthru_limiters(settings, limiter_engine))
