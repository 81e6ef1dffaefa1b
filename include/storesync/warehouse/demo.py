"""The demo store: a realistic, deterministic e-commerce warehouse of any size.

``generate_demo_store(url, orders=N, seed=S)`` writes customers, products (with variants, URLs,
images and price changes), orders that move placed -> processing -> fulfilled (some cancelled or
refunded later, some failed), their lines and status history, and checkouts (completed and
abandoned). The same seed gives the same store. Orders are generated and written in chunks, so
10M orders never sit in memory at once; names come from small Faker pools combined with numpy.

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

# Kinds of malformed order, in the order they are drawn (see _inject_order_defects).
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

    def customer_name(self, customer_id: int) -> tuple[str, str]:
        # Derived from the id, so orders can name their customer without keeping millions of names.
        return self.first[customer_id * 7919 % len(self.first)], self.last[customer_id * 104_729 % len(self.last)]

    def customer_email(self, customer_id: int) -> str:
        first, last = self.customer_name(customer_id)
        local = f"{first}.{last}{customer_id}".lower().replace(" ", "").replace("'", "")
        return f"{local}@{DOMAINS[customer_id % len(DOMAINS)]}"


def _ts(base: datetime, seconds) -> list[datetime]:
    return [base + timedelta(seconds=float(s)) for s in seconds]


def _money(cents: int) -> Decimal:
    return Decimal(int(cents)).scaleb(-2)


def generate_demo_store(url_or_engine: str | Engine, spec: DemoStoreSpec | None = None, **kw) -> DemoStoreStats:
    """Create the demo schema at ``url_or_engine`` and fill it; returns row counts."""
    spec = spec or DemoStoreSpec(**kw)
    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    schema.metadata.drop_all(engine)
    schema.metadata.create_all(engine)
    stats = DemoStoreStats()
    pools = _NamePools(spec.seed)
    with BulkWriter(engine) as writer:
        customer_weights = _write_customers(writer, spec, pools, stats)
        product_prices = _write_products(writer, spec, pools, stats)
        _write_orders(writer, spec, pools, customer_weights, product_prices, stats)
    log.info("demo store written: %s", stats.as_dict())
    return stats


def _write_customers(writer: BulkWriter, spec: DemoStoreSpec, pools: _NamePools, stats: DemoStoreStats):
    rng = np.random.default_rng([spec.seed, 1])
    n = spec.customer_count
    span = spec.days * DAY
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
        rows = []
        for i in range(k):
            cid = lo + i + 1
            fn, ln = pools.customer_name(cid)
            email = pools.customer_email(cid)
            if bad[i]:
                email = email.replace("@", " at ")  # a malformed email the gate must catch
            c_at = spec.start + timedelta(seconds=float(created[i]))
            rows.append((
                cid, email, fn, ln, f"555-{cid % 10_000:04d}", None, pools.street[place[i]],
                pools.city[place[i]], None, pools.state_code[place[i]], "United States", "US",
                pools.postcode[place[i]], bool(accepts[i]), c_at,
                spec.start + timedelta(seconds=float(updated[i])),
            ))
        writer.write(schema.customers, rows)
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


def _write_orders(writer, spec: DemoStoreSpec, pools: _NamePools, customer_weights, product_prices, stats: DemoStoreStats):
    prices, old_prices, change_at = product_prices
    cum_weights = np.cumsum(customer_weights)
    cum_weights /= cum_weights[-1]
    n_products = len(prices)
    span = spec.days * DAY
    line_id = history_id = checkout_id = checkout_line_id = 0
    for chunk_index, lo in enumerate(range(0, spec.orders, spec.chunk_size)):
        rng = np.random.default_rng([spec.seed, 3, chunk_index])
        hi = min(spec.orders, lo + spec.chunk_size)
        k = hi - lo
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
        orders, lines, history, checkouts, checkout_lines = [], [], [], [], []
        for i in range(k):
            oid = lo + i + 1
            c_sec = float(created[i])
            c_at = spec.start + timedelta(seconds=c_sec)
            subtotal = 0
            kind = ORDER_DEFECTS[defect[i]] if defect[i] >= 0 else None
            order_lines = []
            for _ in range(int(n_lines[i])):
                line_id += 1
                p = int(rng.integers(0, n_products))
                qty = int(rng.integers(1, 4))
                unit = int(old_prices[p] if c_sec < change_at[p] else prices[p])
                subtotal += qty * unit
                product_id = p + 1
                if kind == "missing_product" and not order_lines:
                    product_id = n_products + 1_000_000 + oid  # a product the store never had
                order_lines.append((line_id, oid, product_id, None, f"SKU-{p + 1:06d}", f"Product {p + 1}",
                                    qty, _money(unit), _money(qty * unit)))
            discount = subtotal // 10 if discounted[i] else 0
            tax = (subtotal - discount) * 8 // 100
            total = subtotal - discount + tax
            email = pools.customer_email(int(customer[i]))
            status_seq = _status_path(fate[i], c_sec, fulfil_after[i], refund_after[i], cancel_after[i], span)
            status = status_seq[-1][0]
            currency_code = CURRENCIES[currency[i]]
            if kind == "bad_email":
                email = "not-an-email"
            elif kind == "negative_total":
                total = -total
            elif kind == "total_mismatch":
                total += 500
            elif kind == "unknown_status":
                status = "shipped-ish"
            elif kind == "future_date":
                c_at = spec.end + timedelta(days=30)
            elif kind == "unknown_currency":
                currency_code = "XXQ"
            updated_at = spec.start + timedelta(seconds=status_seq[-1][1])
            orders.append((
                oid, int(customer[i]), email, status, currency_code, _money(subtotal), _money(tax),
                _money(discount), "SAVE10" if discount else None, _money(total),
                PAYMENT_METHODS[payment[i]], f"{10_000 + oid % 90_000}.{oid % 997}" if has_bid[i] else None,
                c_at, max(updated_at, c_at),
            ))
            lines.extend(order_lines)
            for st, at in status_seq:
                history_id += 1
                history.append((history_id, oid, st, spec.start + timedelta(seconds=at)))
            # Half the orders came through a tracked checkout; about 0.4 per order were abandoned.
            for abandoned in (False, True):
                if (not abandoned and fate[i] < 0.5) or (abandoned and rng.random() < 0.4):
                    checkout_id += 1
                    started = c_sec - (rng.uniform(60, 1800) if not abandoned else rng.uniform(0, DAY))
                    co_lines = order_lines if not abandoned else order_lines[:1]
                    co_sub = sum(int(line[6]) * int(line[7] * 100) for line in co_lines)
                    co_tax = co_sub * 8 // 100
                    co_status = "completed" if not abandoned else ("open" if span - c_sec < 2 * DAY else "expired")
                    checkouts.append((
                        checkout_id, int(customer[i]), email, co_status,
                        f"{STORE_URL}/checkout/{checkout_id}", currency_code, _money(co_sub), _money(co_tax),
                        _money(co_sub + co_tax), None if abandoned else oid,
                        f"{10_000 + oid % 90_000}.{oid % 997}" if has_bid[i] else None,
                        spec.start + timedelta(seconds=max(0.0, started)),
                        c_at if not abandoned else spec.start + timedelta(seconds=max(0.0, started) + 300),
                    ))
                    for line in co_lines:
                        checkout_line_id += 1
                        checkout_lines.append((checkout_line_id, checkout_id, line[2], line[4], line[5],
                                               line[6], line[7], line[8]))
        writer.write(schema.orders, orders)
        writer.write(schema.order_lines, lines)
        writer.write(schema.order_status_history, history)
        writer.write(schema.checkouts, checkouts)
        writer.write(schema.checkout_lines, checkout_lines)
        stats.orders += k
        stats.malformed_orders += int((defect >= 0).sum())
        log.debug("orders %d-%d written", lo + 1, hi)
    stats.order_lines, stats.status_changes = line_id, history_id
    stats.checkouts, stats.checkout_lines = checkout_id, checkout_line_id


def _status_path(fate: float, created: float, fulfil_after: float, refund_after: float,
                 cancel_after: float, span: float) -> list[tuple[str, float]]:
    """An order's statuses with their times (seconds into the period), only those already reached."""
    path = [("processing", created)]
    if fate < 0.01:
        path = [("pending", created), ("failed", created + 120)]
    elif fate < 0.06:
        path.append(("cancelled", created + cancel_after))
    else:
        fulfilled = created + fulfil_after
        path.append(("fulfilled", fulfilled))
        if fate > 0.96:
            path.append(("refunded", fulfilled + refund_after))
    return [(status, at) for status, at in path if at <= span]


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in schema.metadata.sorted_tables}
