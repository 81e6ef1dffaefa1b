"""The extraction window: the run's data interval, half-open ``[start, end)`` in naive UTC.

Airflow hands every run its data interval; extracting exactly that interval (never "since the
last run") is what makes schedules, catch-up and backfills exact and reruns repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from storesync.core.errors import ConfigurationError

EPOCH = datetime(1970, 1, 1)


def to_naive_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    # A plain datetime, whatever subclass came in (Airflow hands pendulum's, which sqlite3 can't bind).
    return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                    value.microsecond)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_naive_utc(self.start))
        object.__setattr__(self, "end", to_naive_utc(self.end))
        if self.end <= self.start:
            raise ConfigurationError(f"empty data interval: {self.start} .. {self.end}")

    @classmethod
    def everything_before(cls, end: datetime) -> "Window":
        """The whole past up to ``end``: nightly full syncs and historical backfills."""
        return cls(EPOCH, end)

    def params(self) -> dict:
        return {"window_start": self.start, "window_end": self.end}

    def __str__(self) -> str:
        return f"[{self.start.isoformat()} .. {self.end.isoformat()})"
