"""The demo store: a realistic, deterministic e-commerce warehouse of any size.

``generate_demo_store(url, orders=N, seed=S)`` writes customers, products (with variants, URLs,
images and price changes), orders that move placed -> processing -> fulfilled (some cancelled or
refunded later, some failed), their lines and status history, and checkouts (completed and
abandoned). The same seed gives the same store. Orders are generated and written in chunks, so
10M orders never sit in memory at once; names come from small Faker pools combined with numpy.
Each chunk is drawn column-wise with numpy (no Python loop per order or line) and written through
``BulkWriter.write_columns``; secondary indexes are built once, after the load.

A configurable share of malformed rows (bad emails, totals that don't add up, unknown statuses or
currencies, future dates, lines pointing at missing products, products without URLs) feeds the
quality gate, as a real warehouse would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateTable

from storesync.warehouse import schema
from storesync.warehouse.bulk import BulkWriter

log = logging.getLogger(__name__)

DAY = 86_400
CURRENCIES = ("USD", "USD", "USD", "USD", "USD", "EUR", "GBP", "CAD")
CATEGORIES = ("Apparel", "Shoes", "Accessories", "Home", "Beauty", "Outdoors", "Kitchen", "Toys")
BRANDS = ("Northwind", "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne")
PAYMENT_METHODS = ("Visa", "Mastercard", "Amex", "PayPal", "Gift card")
DOMAINS = ("example.com", "mail.example.org", "shop.example.net", "example.co.uk")
STORE_URL = "https://demo-store.example.com"
# Orphan lines point at order ids past the store's last one by this much.
ORPHAN_ORDER_OFFSET = 1_000_000

# Kinds of malformed order, in the order they are drawn (see _write_orders).
ORDER_DEFECTS = ("bad_email", "negative_total", "total_mismatch", "unknown_status", "future_date",
                 "unknown_currency", "missing_product")


@dataclass(frozen=True)
class DemoStoreSpec:
    orders: int = 2_000
    seed: int = 42
    end: datetime = field(default_factory=lambda: datetime.utcnow().replace(minute=0, second=0, microsecond=0))
    days: int = 90
    bad_share: float = 0.005
    customers: int | None = None  # default: about one customer per 2.5 orders
    products: int | None = None
    chunk_size: int = 50_000

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)

    @property
    def customer_count(self) -> int:
        return self.customers or max(20, int(self.orders / 2.5))

    @property
    def product_count(self) -> int:
        return self.products or int(min(5_000, max(40, self.orders // 100)))


@dataclass
class DemoStoreStats:
    customers: int = 0
    products: int = 0
    variants: int = 0
    orders: int = 0
    order_lines: int = 0
    status_changes: int = 0
    checkouts: int = 0
    checkout_lines: int = 0
    malformed_orders: int = 0
    orphan_lines: int = 0
    site_events: int = 0  # lines whose order does not exist (one per chunk when bad_share > 0)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _NamePools:
    """Small pools of realistic values from Faker, combined by index: fast and deterministic."""

    def __init__(self, seed: int, size: int = 500) -> None:
        from faker import Faker

        fake = Faker("en_US")
        fake.seed_instance(seed)
        self.first = np.array([fake.first_name() for _ in range(size)], dtype=object)
        self.last = np.array([fake.last_name() for _ in range(size)], dtype=object)
        self.city = np.array([fake.city() for _ in range(size)], dtype=object)
        self.street = np.array([fake.street_address() for _ in range(size)], dtype=object)
        states = [fake.state_abbr(include_territories=False) for _ in range(size)]
        self.state_code = np.array(states, dtype=object)
        self.postcode = np.array([fake.postcode() for _ in range(size)], dtype=object)
        self.company = np.array([fake.company() for _ in range(size)], dtype=object)
        self.words = np.array([fake.word().capitalize() for _ in range(size)], dtype=object)
        self.sentences = np.array([fake.sentence(nb_words=10) for _ in range(50)], dtype=object)
        # Every (first, last) pair's email local part, cleaned once: "first.last" lower-cased,
        # without spaces or apostrophes (the customer id's digits are not touched by either).
        locals_ = [f"{f}.{la}".lower().replace(" ", "").replace("'", "") for f in self.first for la in self.last]
        self._local = np.array(locals_, dtype=object)

    def _name_index(self, customer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(customer_ids, dtype=np.int64)
        return ids * 7919 % len(self.first), ids * 104_729 % len(self.last)

    def customer_name(self, customer_id: int) -> tuple[str, str]:
        # Derived from the id, so orders can name their customer without keeping millions of names.
        return self.first[customer_id * 7919 % len(self.first)], self.last[customer_id * 104_729 % len(self.last)]

    def customer_email(self, customer_id: int) -> str:
        first, last = self.customer_name(customer_id)
        local = f"{first}.{last}{customer_id}".lower().replace(" ", "").replace("'", "")
        return f"{local}@{DOMAINS[customer_id % len(DOMAINS)]}"

    def customer_names(self, customer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fi, li = self._name_index(customer_ids)
        return self.first[fi], self.last[li]

    def customer_emails(self, customer_ids: np.ndarray) -> list[str]:
        """``customer_email`` for many ids at once."""
        fi, li = self._name_index(customer_ids)
        local = self._local[fi * len(self.last) + li].tolist()
        ids = np.asarray(customer_ids, dtype=np.int64)
        domain = np.array(DOMAINS, dtype=object)[ids % len(DOMAINS)].tolist()
        return [f"{a}{b}@{c}" for a, b, c in zip(local, ids.tolist(), domain)]


def _money(cents: int) -> Decimal:
    return Decimal(int(cents)).scaleb(-2)


def _units(cents: np.ndarray) -> np.ndarray:
    """Whole cents → currency units as float64 (exactly the double nearest the decimal amount)."""
    return np.asarray(cents, dtype=np.int64) / 100.0


class _Clock:
    """Seconds into the period → ``datetime64[us]``, rounded to the microsecond."""

    def __init__(self, start: datetime) -> None:
        self.start = np.datetime64(start, "us")

    def __call__(self, seconds) -> np.ndarray:
        micros = np.rint(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)
        return self.start + micros.astype("timedelta64[us]")


def _objects(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """An object array of ``values`` where ``keep``, None elsewhere."""
    out = np.full(len(keep), None, dtype=object)
    out[keep] = values[keep] if len(values) == len(keep) else values
    return out


def _group_offsets(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of ``counts`` items laid end to end: each group's first position, and each
    item's position within its group."""
    starts = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=starts[1:])
    within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
    return starts, within


def generate_demo_store(url_or_engine: str | Engine, spec: DemoStoreSpec | None = None, **kw) -> DemoStoreStats:
    """Create the demo schema at ``url_or_engine`` and fill it; returns row counts."""
    spec = spec or DemoStoreSpec(**kw)
    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    schema.metadata.drop_all(engine)
    tables = schema.metadata.sorted_tables
    # Tables first, secondary indexes after the load: building an index once is far cheaper
    # than keeping it up to date through tens of millions of inserts.
    with engine.begin() as conn:
        for table in tables:
            conn.execute(CreateTable(table))
    stats = DemoStoreStats()
    pools = _NamePools(spec.seed)
    with BulkWriter(engine) as writer:
        customer_weights = _write_customers(writer, spec, pools, stats)
        product_prices = _write_products(writer, spec, pools, stats)
        _write_orders(writer, spec, pools, customer_weights, product_prices, stats)
        writer.create_indexes(tables)
    log.info("demo store written: %s", stats.as_dict())
    return stats


def _write_customers(writer: BulkWriter, spec: DemoStoreSpec, pools: _NamePools, stats: DemoStoreStats):
    rng = np.random.default_rng([spec.seed, 1])
    n = spec.customer_count
    span = spec.days * DAY
    clock = _Clock(spec.start)
    for lo in range(0, n, spec.chunk_size):
        hi = min(n, lo + spec.chunk_size)
        k = hi - lo
        place = rng.integers(0, len(pools.city), k)
        # Customers sign up over the period; a fifth existed before it.
        created = np.sort(rng.uniform(-span * 0.25, span * 0.9, k))
        # About one in ten said no to marketing; some of them changed their mind later (opt-out).
        accepts = rng.random(k) >= 0.10
        opted_out_later = (rng.random(k) < 0.03) & accepts
        later = created + rng.uniform(DAY, 30 * DAY, k)
        updated = np.where(opted_out_later & (later < span), later, created)
        accepts = accepts & ~(opted_out_later & (later < span))
        bad = rng.random(k) < spec.bad_share
        cid = np.arange(lo + 1, hi + 1, dtype=np.int64)
        first, last = pools.customer_names(cid)
        emails = pools.customer_emails(cid)
        for i in np.flatnonzero(bad).tolist():
            emails[i] = emails[i].replace("@", " at ")  # a malformed email the gate must catch
        writer.write_columns(schema.customers, {
            "customer_id": cid, "email": emails, "first_name": first, "last_name": last,
            "phone": [f"555-{c % 10_000:04d}" for c in cid.tolist()], "company": [None] * k,
            "address_1": pools.street[place], "city": pools.city[place], "state": [None] * k,
            "state_code": pools.state_code[place], "country": ["United States"] * k,
            "country_code": ["US"] * k, "postal_code": pools.postcode[place], "accepts_marketing": accepts,
            "created_at": clock(created), "updated_at": clock(updated),
        })
    stats.customers = n
    # Heavy-tailed purchase propensity: a few customers buy often, most buy once.
    return rng.pareto(1.3, n) + 0.05


def _write_products(writer: BulkWriter, spec: DemoStoreSpec, pools: _NamePools, stats: DemoStoreStats):
    rng = np.random.default_rng([spec.seed, 2])
    n = spec.product_count
    prices_cents = (np.round(rng.lognormal(3.4, 0.7, n)).astype(np.int64) * 100 + 99).clip(199, 99_999)
    created = rng.uniform(-spec.days * DAY, 0, n)
    # A quarter of the products had a price change during the period.
    changed = rng.random(n) < 0.25
    change_at = rng.uniform(0, spec.days * DAY, n)
    old_prices = (prices_cents * rng.uniform(0.8, 1.2, n)).astype(np.int64) // 100 * 100 + 99
    missing_url = rng.random(n) < spec.bad_share * 2
    rows, variants = [], []
    variant_id = 0
    for i in range(n):
        pid = i + 1
        cat = CATEGORIES[i % len(CATEGORIES)]
        title = f"{pools.words[rng.integers(len(pools.words))]} {cat[:-1] if cat.endswith('s') else cat} {pid}"
        slug = title.lower().replace(" ", "-")
        price = int(prices_cents[i])
        updated = change_at[i] if changed[i] else created[i]
        rows.append((
            pid, f"SKU-{pid:06d}", title, pools.sentences[i % len(pools.sentences)],
            BRANDS[i % len(BRANDS)], cat, None if missing_url[i] else f"{STORE_URL}/products/{slug}",
            f"{STORE_URL}/images/{pid}.jpg", _money(price),
            _money(price + 1000) if i % 5 == 0 else None, int(rng.integers(0, 500)),
            spec.start + timedelta(seconds=float(created[i])), spec.start + timedelta(seconds=float(updated)),
        ))
        for size in ("S", "M", "L")[: 1 + i % 3]:
            variant_id += 1
            variants.append((variant_id, pid, f"SKU-{pid:06d}-{size}", f"{title} / {size}", _money(price)))
    writer.write(schema.products, rows)
    writer.write(schema.product_variants, variants)
    stats.products, stats.variants = n, variant_id
    # Orders before a product's price change paid the old price.
    return prices_cents, old_prices, np.where(changed, change_at, -np.inf)


# Order statuses by code, for the status paths drawn below.
_STATUS = np.array(["pending", "processing", "failed", "cancelled", "fulfilled", "refunded"], dtype=object)
_PENDING, _PROCESSING, _FAILED, _CANCELLED, _FULFILLED, _REFUNDED = range(6)


def _status_paths(fate, created, fulfil_after, refund_after, cancel_after, span):
    """Every order's status path, vectorised: (k, 3) arrays of status codes, times (seconds into
    the period) and whether the step was reached by the end of the period.

    fate < 1 %: pending → failed (2 min later); < 6 %: processing → cancelled; else processing →
    fulfilled, and above 96 % refunded after that. Only steps already reached (time <= span) count.
    """
    k = len(fate)
    failed = fate < 0.01
    cancelled = ~failed & (fate < 0.06)
    fulfilled_path = fate >= 0.06
    codes = np.empty((k, 3), dtype=np.int8)
    times = np.empty((k, 3), dtype=np.float64)
    codes[:, 0] = np.where(failed, _PENDING, _PROCESSING)
    times[:, 0] = created
    codes[:, 1] = np.where(failed, _FAILED, np.where(cancelled, _CANCELLED, _FULFILLED))
    fulfilled_at = created + fulfil_after
    times[:, 1] = np.where(failed, created + 120, np.where(cancelled, created + cancel_after, fulfilled_at))
    codes[:, 2] = _REFUNDED
    times[:, 2] = fulfilled_at + refund_after
    reached = times <= span
    reached[:, 2] &= fulfilled_path & (fate > 0.96)
    return codes, times, reached


def _write_orders(writer, spec: DemoStoreSpec, pools: _NamePools, customer_weights, product_prices, stats: DemoStoreStats):
    prices, old_prices, change_at = product_prices
    cum_weights = np.cumsum(customer_weights)
    cum_weights /= cum_weights[-1]
    n_products = len(prices)
    span = spec.days * DAY
    clock = _Clock(spec.start)
    future_at = np.datetime64(spec.end + timedelta(days=30), "us")
    currencies = np.array(CURRENCIES, dtype=object)
    payment_methods = np.array(PAYMENT_METHODS, dtype=object)
    sku = np.array([f"SKU-{p:06d}" for p in range(1, n_products + 1)], dtype=object)
    product_name = np.array([f"Product {p}" for p in range(1, n_products + 1)], dtype=object)
    defect_code = {name: i for i, name in enumerate(ORDER_DEFECTS)}
    line_id = history_id = checkout_id = checkout_line_id = 0
    for chunk_index, lo in enumerate(range(0, spec.orders, spec.chunk_size)):
        rng = np.random.default_rng([spec.seed, 3, chunk_index])
        hi = min(spec.orders, lo + spec.chunk_size)
        k = hi - lo
        oid = np.arange(lo + 1, hi + 1, dtype=np.int64)
        # Order ids rise with time: chunk c covers its slice of the period.
        t0, t1 = span * lo / spec.orders, span * hi / spec.orders
        created = np.sort(rng.uniform(t0, t1, k))
        customer = np.searchsorted(cum_weights, rng.random(k)) + 1
        n_lines = np.minimum(rng.geometric(0.55, k), 6)
        currency = rng.integers(0, len(CURRENCIES), k)
        discounted = rng.random(k) < 0.2
        has_bid = rng.random(k) < 0.3
        payment = rng.integers(0, len(PAYMENT_METHODS), k)
        fate = rng.random(k)
        fulfil_after = rng.uniform(0.5 * DAY, 5 * DAY, k)
        refund_after = rng.uniform(3 * DAY, 30 * DAY, k)
        cancel_after = rng.uniform(600, DAY, k)
        defect = np.where(rng.random(k) < spec.bad_share, rng.integers(0, len(ORDER_DEFECTS), k), -1)

        def is_defect(name: str) -> np.ndarray:
            return defect == defect_code[name]

        # ---- lines: 1-6 per order, random products, the price of the day
        n_total = int(n_lines.sum())
        line_order = np.repeat(np.arange(k), n_lines)
        first_line, _ = _group_offsets(n_lines)
        product = rng.integers(0, n_products, n_total)
        qty = rng.integers(1, 4, n_total)
        unit = np.where(created[line_order] < change_at[product], old_prices[product], prices[product])
        line_total = qty * unit
        subtotal = np.add.reduceat(line_total, first_line)
        line_product_id = product + 1
        missing = np.flatnonzero(is_defect("missing_product"))
        line_product_id[first_line[missing]] = n_products + 1_000_000 + oid[missing]  # a product never sold
        line_ids = np.arange(line_id + 1, line_id + n_total + 1, dtype=np.int64)
        line_id += n_total

        # ---- totals, statuses, defects
        discount = np.where(discounted, subtotal // 10, 0)
        tax = (subtotal - discount) * 8 // 100
        total = subtotal - discount + tax
        total = np.where(is_defect("negative_total"), -total, total)
        total = np.where(is_defect("total_mismatch"), total + 500, total)
        codes, times, reached = _status_paths(fate, created, fulfil_after, refund_after, cancel_after, span)
        last_step = reached.sum(axis=1) - 1  # step 0 (placement) is always reached
        rows = np.arange(k)
        status = _STATUS[codes[rows, last_step]]
        status[is_defect("unknown_status")] = "shipped-ish"
        c_at = clock(created)
        c_at[is_defect("future_date")] = future_at
        updated_at = np.maximum(clock(times[rows, last_step]), c_at)
        emails = pools.customer_emails(customer)
        for i in np.flatnonzero(is_defect("bad_email")).tolist():
            emails[i] = "not-an-email"
        currency_code = currencies[currency]
        currency_code[is_defect("unknown_currency")] = "XXQ"
        oid_list = oid.tolist()
        bid = np.full(k, None, dtype=object)
        for i in np.flatnonzero(has_bid).tolist():
            o = oid_list[i]
            bid[i] = f"{10_000 + o % 90_000}.{o % 997}"
        writer.write_columns(schema.orders, {
            "order_id": oid, "customer_id": customer, "email": emails, "status": status,
            "currency": currency_code, "subtotal": _units(subtotal), "total_tax": _units(tax),
            "total_discounts": _units(discount),
            "discount_code": np.where(discount > 0, "SAVE10", None).astype(object),
            "total": _units(total), "payment_method": payment_methods[payment], "sailthru_bid": bid,
            "created_at": c_at, "updated_at": updated_at,
        })
        writer.write_columns(schema.order_lines, {
            "line_id": line_ids, "order_id": oid[line_order], "product_id": line_product_id,
            "variant_id": [None] * n_total, "sku": sku[product], "product_name": product_name[product],
            "quantity": qty, "unit_price": _units(unit), "line_total": _units(line_total),
            "created_at": c_at[line_order],
        })
        if spec.bad_share > 0:
            # One orphan line per chunk, made with no random draw (the rest of the store stays as
            # it was): a copy of the chunk's last line, for an order that was never written.
            line_id += 1
            last = n_total - 1
            writer.write_columns(schema.order_lines, {
                "line_id": [line_id], "order_id": [spec.orders + ORPHAN_ORDER_OFFSET + chunk_index],
                "product_id": line_product_id[last:], "variant_id": [None], "sku": sku[product[last:]],
                "product_name": product_name[product[last:]], "quantity": qty[last:],
                "unit_price": _units(unit[last:]), "line_total": _units(line_total[last:]),
                "created_at": c_at[line_order[last:]],
            })
            stats.orphan_lines += 1

        # ---- status history: the reached steps, order by order
        h_order = np.repeat(rows[:, None], 3, axis=1)[reached]
        n_history = len(h_order)
        writer.write_columns(schema.order_status_history, {
            "history_id": np.arange(history_id + 1, history_id + n_history + 1, dtype=np.int64),
            "order_id": oid[h_order], "status": _STATUS[codes[reached]], "changed_at": clock(times[reached]),
        })
        history_id += n_history

        # ---- checkouts: half the orders came through a tracked one; about 0.4 per order were abandoned
        completed_started = created - rng.uniform(60, 1800, k)
        abandoned_started = created - rng.uniform(0, DAY, k)
        has_checkout = np.stack([fate < 0.5, rng.random(k) < 0.4], axis=1)  # (completed, abandoned)
        c_order = np.repeat(rows[:, None], 2, axis=1)[has_checkout]
        abandoned = np.tile(np.array([False, True]), (k, 1))[has_checkout]
        n_checkouts = len(c_order)
        c_ids = np.arange(checkout_id + 1, checkout_id + n_checkouts + 1, dtype=np.int64)
        checkout_id += n_checkouts
        started = np.maximum(0.0, np.where(abandoned, abandoned_started[c_order], completed_started[c_order]))
        # A completed checkout held the order's lines; an abandoned one its first line only.
        c_line_count = np.where(abandoned, 1, n_lines[c_order])
        c_sub = np.where(abandoned, line_total[first_line[c_order]], subtotal[c_order])
        c_tax = c_sub * 8 // 100
        c_status = np.where(abandoned, np.where(span - created[c_order] < 2 * DAY, "open", "expired"),
                            "completed").astype(object)
        c_created = clock(started)
        c_updated = np.where(abandoned, clock(started + 300), c_at[c_order])
        writer.write_columns(schema.checkouts, {
            "checkout_id": c_ids, "customer_id": customer[c_order],
            "email": np.array(emails, dtype=object)[c_order], "status": c_status,
            "checkout_url": [f"{STORE_URL}/checkout/{c}" for c in c_ids.tolist()],
            "currency": currency_code[c_order], "subtotal": _units(c_sub), "total_tax": _units(c_tax),
            "total": _units(c_sub + c_tax), "order_id": _objects(oid[c_order], ~abandoned),
            "sailthru_bid": bid[c_order], "created_at": c_created, "updated_at": c_updated,
        })
        c_first, within = _group_offsets(c_line_count)
        cl_line = np.repeat(first_line[c_order], c_line_count) + within
        n_checkout_lines = len(cl_line)
        writer.write_columns(schema.checkout_lines, {
            "checkout_line_id": np.arange(checkout_line_id + 1, checkout_line_id + n_checkout_lines + 1,
                                          dtype=np.int64),
            "checkout_id": np.repeat(c_ids, c_line_count), "product_id": line_product_id[cl_line],
            "sku": sku[product[cl_line]], "product_name": product_name[product[cl_line]],
            "quantity": qty[cl_line], "unit_price": _units(unit[cl_line]),
            "line_total": _units(line_total[cl_line]),
        })
        checkout_line_id += n_checkout_lines
        _write_site_events(writer, stats, c_ids, abandoned, clock(started),
                           np.array(emails, dtype=object)[c_order], line_product_id[first_line[c_order]],
                           sku[product[first_line[c_order]]], product_name[product[first_line[c_order]]],
                           unit[first_line[c_order]], qty[first_line[c_order]], currency_code[c_order])
        stats.orders += k
        stats.malformed_orders += int((defect >= 0).sum())
        log.debug("orders %d-%d written", lo + 1, hi)
    stats.order_lines, stats.status_changes = line_id, history_id
    stats.checkouts, stats.checkout_lines = checkout_id, checkout_line_id


def _write_site_events(writer, stats, c_ids, abandoned, started, emails, product_ids, skus, names, unit_cents,
                       quantities, currencies) -> None:
    """Storefront events as Segment's ``tracks`` table holds them, for one abandoned cart in ten (no
    random draw): the product viewed two minutes before the cart started, then added to it. A cart
    in four of those is a visitor's who had not logged in: no email, as trackers record them."""
    pick = np.flatnonzero(abandoned & (c_ids % 10 == 0))
    if not len(pick):
        return
    ids = c_ids[pick]
    known = ids % 4 != 0
    mail = np.where(known, emails[pick], None).astype(object)
    views_at = started[pick] - np.timedelta64(120, "s")
    for kind, event, at in (("v", "Product Viewed", views_at), ("a", "Product Added", started[pick])):
        is_add = kind == "a"
        n = len(pick)
        writer.write_columns(schema.tracks, {
            "id": [f"evt-{c}-{kind}" for c in ids.tolist()], "event": [event] * n,
            "anonymous_id": [f"anon-{c}" for c in ids.tolist()], "user_id": [None] * n,
            "context_traits_email": mail, "product_id": [str(p) for p in product_ids[pick].tolist()],
            "sku": skus[pick], "name": names[pick], "price": _units(unit_cents[pick]),
            "quantity": quantities[pick] if is_add else [None] * n,
            "currency": currencies[pick],
            "url": [f"{STORE_URL}/products/{p}" for p in product_ids[pick].tolist()],
            "cart_id": [str(c) for c in ids.tolist()] if is_add else [None] * n,
            "timestamp": at,
        })
        stats.site_events += n


def _status_path(fate: float, created: float, fulfil_after: float, refund_after: float,
                 cancel_after: float, span: float) -> list[tuple[str, float]]:
    """One order's statuses with their times (seconds into the period), only those already
    reached: the scalar form of ``_status_paths``."""
    codes, times, reached = _status_paths(np.array([fate]), np.array([created]), np.array([fulfil_after]),
                                          np.array([refund_after]), np.array([cancel_after]), span)
    return [(str(_STATUS[c]), float(t)) for c, t, r in zip(codes[0], times[0], reached[0]) if r]


def is_current_demo_store(url: str) -> bool:
    """Whether the database at ``url`` holds every table and column of this version's demo schema
    (a demo store written by an older storesync lacks, say, ``order_lines.created_at``)."""
    from sqlalchemy import inspect

    engine = create_engine(url)
    try:
        found = inspect(engine)
        names = set(found.get_table_names())
        return all(table.name in names
                   and {c.name for c in table.columns} <= {c["name"] for c in found.get_columns(table.name)}
                   for table in schema.metadata.sorted_tables)
    finally:
        engine.dispose()


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in schema.metadata.sorted_tables}
