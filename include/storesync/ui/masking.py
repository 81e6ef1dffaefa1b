"""Personal data out of what the view shows: emails, names, phones, addresses, IP addresses.

The rules are the dry-run sample's (``storesync.pipeline.syncs.mask_sample``): emails keep their
first letter and domain (``b***@example.com``), other personal fields become ``***``, and ids,
amounts, products, dates, cities and countries stay readable, so a dead letter still shows what
was sent and why it failed. Free text (a vendor's error message) gets the email and IP masks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _maskers():
    # Imported on first use: storesync.pipeline pulls pandas in (~0.5 s), not needed at plugin load.
    from storesync.pipeline.syncs import mask_sample

    return mask_sample


def mask(value: Any) -> Any:
    """A JSON value (payload, quarantined row, run counts) with its personal data masked."""
    if value is None:
        return None
    return _maskers()(value)


def mask_text(text: str) -> str:
    """Free text with emails and IP addresses masked (a vendor may quote the address it refused)."""
    return _maskers()(str(text))
