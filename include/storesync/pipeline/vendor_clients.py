"""The vendor clients a sync sends with, and the rate limiters (budgets) they share."""

from __future__ import annotations

from storesync.core.config import SailthruSettings, SendlaneSettings


def default_sendlane_client(settings: SendlaneSettings, account: str, limiter_engine=None):
    """Sendlane's budget is per account, across every process that sends for it: with a ledger
    database to share, the limiter lives there; alone, an in-process bucket does."""
    from storesync.clients.sendlane import SendlaneClient
    from storesync.core.throttle import SharedWindowLimiter, TokenBucket, Unlimited

    if settings.budget_per_minute <= 0:
        limiter = Unlimited()  # 0 = no client-side budget: only for a sandbox without limits
    elif limiter_engine is not None:
        limiter = SharedWindowLimiter(limiter_engine, f"sendlane:{account}", settings.budget_per_minute,
                                      window_s=settings.budget_window_s,
                                      margin_s=min(1.0, settings.budget_window_s / 20))
    else:
        limiter = TokenBucket(settings.budget_per_minute * 60.0 / settings.budget_window_s)
    return SendlaneClient(
        base_url=settings.base_url, api_token=settings.api_token.reveal(),
        integration_token=settings.integration_token.reveal(), limiter=limiter,
    )


def default_sailthru_client(settings: SailthruSettings):
    """Sailthru budgets are per endpoint and method; its headers steer them once answers arrive,
    the configured budget until then (and when a response carries no headers)."""
    from storesync.clients.sailthru import SailthruClient
    from storesync.core.throttle import HeaderThrottle, PerEndpointLimiters, Unlimited

    if settings.budget_per_minute <= 0:
        limiters = PerEndpointLimiters(Unlimited)  # a sandbox without limits (benchmarks)
    else:
        limiters = PerEndpointLimiters(lambda: HeaderThrottle(settings.budget_per_minute))
    return SailthruClient(base_url=settings.base_url, api_key=settings.api_key.reveal(),
                          secret=settings.secret.reveal(), limiters=limiters)
