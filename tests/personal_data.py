"""Finding personal data (the privacy tests, issue 22): in every non-null cell of every
``storesync_*`` table, a person's email, street address, phone, or first and last name together;
in the emulator's state, their email or customer id."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from sqlalchemy import create_engine, inspect, text


def storesync_rows(url: str) -> Iterable[tuple[str, dict]]:
    """(table, row as a dict) of every row of every storesync table in a database."""
    engine = create_engine(url)
    try:
        names = [n for n in inspect(engine).get_table_names() if n.startswith("storesync_")]
        with engine.connect() as conn:
            for name in names:
                for row in conn.execute(text(f'SELECT * FROM "{name}"')).mappings():
                    yield name, dict(row)
    finally:
        engine.dispose()


def needles(person: dict) -> dict:
    """What identifies a person in a cell: ``email``, ``address_1``, ``phone`` (any of them
    alone) and ``first_name`` with ``last_name`` (both in one cell)."""
    def low(key):
        value = person.get(key)
        return str(value).strip().lower() if value not in (None, "") else None

    return {"alone": [v for v in (low("email"), low("address_1"), low("phone")) if v],
            "together": [v for v in (low("first_name"), low("last_name")) if v]}


def holds(value: str, person_needles: dict) -> bool:
    low = value.lower()
    together = person_needles["together"]
    return (any(n in low for n in person_needles["alone"])
            or (len(together) == 2 and all(n in low for n in together)))


def traces(urls: Iterable[str], people: Iterable[dict],
           skip: Callable[[str, dict], bool] = lambda table, row: False) -> list[tuple[str, str, str]]:
    """(table, column, the cell's start) of every cell that names one of ``people``; rows for
    which ``skip(table, row)`` is true are not searched."""
    wanted = [needles(p) for p in people]
    found = []
    for url in urls:
        for table, row in storesync_rows(url):
            if skip(table, row):
                continue
            for column, value in row.items():
                if value is not None and any(holds(str(value), n) for n in wanted):
                    found.append((table, column, str(value)[:60]))
    return found


def emulator_holds(emulator, person) -> list[str]:
    """What of the emulator's state (both vendors) holds the person's email or customer id."""
    state = emulator.server.state
    email, cid = person["email"].lower(), str(person["customer_id"])
    with state.lock:
        held = {"users": list(state.users.values()), "purchases": list(state.purchases.values()),
                "returns": state.returns, "contacts": [list(b.values()) for b in state.contacts.values()],
                "unsubscribed": [list(b.values()) for b in state.unsubscribed.values()],
                "sendlane contacts": [list(b.values()) for b in state.sendlane_people.values()],
                "records": state.records}
        blob = {k: json.dumps(v, default=str).lower() for k, v in held.items()}
        extids = [u["keys"].get("extid") for u in state.users.values()]
    return [k for k, v in blob.items() if email in v] + (["users (extid)"] if cid in extids else [])
