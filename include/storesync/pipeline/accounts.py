"""A vendor account under a new key: every row of the pipeline that names the old key, moved at once.

The ledger's deliveries carry the account key in their identity; the historical sync's chunks
and jobs and the unsubscribes read back from a vendor are kept per account too. A key changes
when an API key is rotated while the account key was its fingerprint, or an ``account_id`` is
set later: ``storesync ledger move-account`` re-keys all of them in one transaction.
"""

from __future__ import annotations

from sqlalchemy import exists, inspect, update
from sqlalchemy.engine import Connection

from storesync.delivery.ledger import Ledger
from storesync.pipeline.consent import unsubscribes
from storesync.pipeline.historical import chunks, jobs

__all__ = ["move_account", "move_bookkeeping"]


def move_account(ledger: Ledger, vendor: str, old: str, new: str, *,
                 merge_unsent: bool = False) -> dict[str, int]:
    """``Ledger.move_account`` with the pipeline's per-account tables; the rows moved per table
    (``merge_unsent``: drop ``old``'s rows that never left and ``new`` holds too)."""
    return ledger.move_account(vendor, old, new, also=_move_bookkeeping, merge_unsent=merge_unsent)


def move_bookkeeping(conn: Connection, vendor: str, old: str, new: str) -> dict[str, int]:
    """The pipeline's per-account rows re-keyed inside the ledger's transaction (what
    ``Ledger.account_bookkeeping`` calls when rows of an unproven key are adopted)."""
    return _move_bookkeeping(conn, vendor, old, new)


def _move_bookkeeping(conn: Connection, vendor: str, old: str, new: str) -> dict[str, int]:
    """The historical chunks and jobs and the unsubscribes, where their tables exist: a row the
    new account already has (a chunk, an unsubscribe read back from the vendor) is kept, the old
    one dropped."""
    moved = {}
    names = set(inspect(conn).get_table_names())
    for table, key in ((chunks, ("entity", "day")), (unsubscribes, ("email",)), (jobs, ())):
        if table.name not in names:
            continue
        mine = (table.c.vendor == vendor) & (table.c.account == old)
        if key:
            theirs = table.alias("theirs")
            conn.execute(table.delete().where(mine, exists().where(
                theirs.c.vendor == vendor, theirs.c.account == new, *[theirs.c[k] == table.c[k] for k in key])))
        moved[table.name] = conn.execute(update(table).where(mine).values(account=new)).rowcount
    return moved
