"""Errors of the data-quality gate."""

from __future__ import annotations

from storesync.core.errors import StoresyncError


class QualityGateError(StoresyncError):
    """Too large a share of a batch failed its expectation suite: stop before anything is sent.

    The message names the entity, the share, the threshold and the checks that failed most; it
    never carries row values (no emails, no names), so it is safe for logs and alerts.
    """

    def __init__(
        self,
        message: str,
        *,
        entity: str | None = None,
        share: float | None = None,
        threshold: float | None = None,
        top_reasons: list[tuple[str, int]] | None = None,
    ) -> None:
        super().__init__(message)
        # Set only when known: the alert notifier tells a single-entity breach by the presence of
        # ``entity``/``share``/``threshold``; a run-wide summary error carries just the message.
        if entity is not None:
            self.entity = entity
        if share is not None:
            self.share = share
        if threshold is not None:
            self.threshold = threshold
        self.top_reasons = list(top_reasons or [])


class ValidationIncompleteError(StoresyncError):
    """The gate could not give every row a verdict: a column is missing, an expectation raised,
    or the rows in and the rows out do not add up. Never a reason to let a batch through."""
