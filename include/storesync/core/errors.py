"""The error classes every vendor failure is sorted into.

The delivery engine acts on the class, never on a status code:

| class              | what happened                                  | what storesync does                          |
|--------------------|------------------------------------------------|----------------------------------------------|
| ``RetryableError`` | 429, 5xx, network failure *before* sending     | retry with backoff; re-driven on the next run |
| ``PermanentError`` | validation, bad email, unknown template        | dead-letter with the vendor's error          |
| ``AuthError``      | bad token / key / signature, IP not allowed, locked out | stop the run and alert               |
| ``SuppressedError``| the person opted out / is not emailable        | record as suppressed, never retry            |
| ``UnknownOutcomeError`` | the request left but no answer came back  | resolve by lookup, or hold for reconciliation |
"""

from __future__ import annotations


class StoresyncError(Exception):
    """Base of every error storesync raises on purpose."""


class ConfigurationError(StoresyncError):
    """A setting, connection or model is missing or malformed."""


class DeliveryError(StoresyncError):
    """A vendor request failed; carries what the vendor said, never the credentials."""

    error_class = "error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        vendor_code: int | str | None = None,
        vendor_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.vendor_code = vendor_code
        self.vendor_message = vendor_message
        self.retry_after = retry_after

    def as_record(self) -> dict:
        """What the ledger and the record log store about this failure."""
        return {
            "error_class": self.error_class,
            "http_status": self.http_status,
            "vendor_code": None if self.vendor_code is None else str(self.vendor_code),
            "vendor_error": (self.vendor_message or str(self))[:2000],
        }


class RetryableError(DeliveryError):
    error_class = "retryable"


class RateLimitedError(RetryableError):
    error_class = "rate_limited"


class PermanentError(DeliveryError):
    error_class = "permanent"


class AuthError(DeliveryError):
    error_class = "auth"


class SuppressedError(DeliveryError):
    error_class = "suppressed"


class UnknownOutcomeError(DeliveryError):
    error_class = "unknown_outcome"
