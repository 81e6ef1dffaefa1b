"""The store's latest activity, found through its models (any schema): what ``storesync sync`` takes
as "now" when it is given no ``--end``.

The ``order_changes`` model is the one thing every store provides, so the latest status change
it returns is the store's last activity. It is found without reading the whole history: windows
walk back from the current hour, each twice the one before, until one holds a change; that window is
then halved, keeping the later half that holds one, down to an hour. A live store answers from the
last hour; a demo store generated days ago in a dozen small reads. Changes dated in the future (a
clock gone wrong) are not activity: the walk starts at the current hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from storesync.core.windows import Window
from storesync.warehouse.models import Warehouse

HOUR = timedelta(hours=1)
LOOK_BACK = timedelta(days=3660)  # ten years: a store with no change since has no activity
PROBE_CHUNK = 10_000


def _latest_in(warehouse: Warehouse, window: Window) -> datetime | None:
    latest = None
    for frame in warehouse.stream("order_changes", window, PROBE_CHUNK):
        if len(frame):
            top = max(frame["changed_at"].dropna(), default=None)
            if top is not None and (latest is None or top > latest):
                latest = top
    return latest


def latest_activity(warehouse: Warehouse, now: datetime) -> datetime | None:
    """The top of the hour after the store's latest status change at or before ``now`` (naive
    UTC), or None when the models return no change in the last ten years."""
    end = now.replace(minute=0, second=0, microsecond=0) + HOUR
    floor = end - LOOK_BACK
    span = HOUR
    while True:
        start = max(end - span, floor)
        if _any_in(warehouse, Window(start, end)):
            break
        if start <= floor:
            return None
        end, span = start, span * 2
    # [start, end) holds the latest change: halve it down to a few hours, keeping the later half
    # whenever it holds one, then read that last bit whole.
    while end - start > 4 * HOUR:
        middle = start + ((end - start) / 2 // HOUR) * HOUR
        if _any_in(warehouse, Window(middle, end)):
            start = middle
        else:
            end = middle
    latest = _latest_in(warehouse, Window(start, end))
    if latest is None:  # changed under us between the reads: the window's end is as good
        return end
    return latest.replace(minute=0, second=0, microsecond=0) + HOUR


def _any_in(warehouse: Warehouse, window: Window) -> bool:
    return any(len(frame) for frame in warehouse.stream("order_changes", window, PROBE_CHUNK))
