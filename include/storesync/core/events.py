"""Canonical store events: what happened in the store, before any vendor's shape.

Extract turns warehouse rows into these; each vendor's mapper turns them into that vendor's
payloads. Money is ``Decimal`` in currency units everywhere here: vendors that want cents
(Sailthru) convert exactly in their mapper, never through float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

OrderEventKind = Literal["placed", "fulfilled", "cancelled", "refunded"]
ORDER_EVENT_KINDS: tuple[str, ...] = ("placed", "fulfilled", "cancelled", "refunded")


@dataclass(slots=True, frozen=True)
class Address:
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    company: str | None = None
    address_1: str | None = None
    address_2: str | None = None
    city: str | None = None
    state: str | None = None
    state_code: str | None = None
    country: str | None = None
    country_code: str | None = None
    postal_code: str | None = None
    phone: str | None = None


@dataclass(slots=True, frozen=True)
class LineItem:
    product_id: int | str
    sku: str
    product_name: str
    quantity: int
    unit_price: Decimal
    total: Decimal
    product_url: str | None = None
    image_url: str | None = None
    variant_id: int | str | None = None
    categories: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class OrderEvent:
    """One change of an order's life: placed, then at most one each of fulfilled/cancelled/refunded."""

    kind: OrderEventKind
    order_id: int | str
    customer_id: int | str | None
    email: str | None
    status: str
    currency: str
    subtotal: Decimal
    total_tax: Decimal
    total_discounts: Decimal
    total: Decimal
    occurred_at: datetime
    created_at: datetime
    line_items: tuple[LineItem, ...] = ()
    discount_code: str | None = None
    billing_address: Address | None = None
    shipping_address: Address | None = None
    accepts_marketing: bool | None = None
    message_id: str | None = None  # Sailthru's sailthru_bid cookie, for revenue attribution
    payment_method: str | None = None
    historical: bool = False  # part of a historical sync: vendors must not fire live flows
    seq: int = 0  # order of this change among the order's changes
    # The warehouse's stable id of this change: the event's identity at the vendors. (``seq`` only
    # orders; a late, backdated history row would shift it.)
    change_id: int | str | None = None

    @property
    def total_items(self) -> int:
        return sum(item.quantity for item in self.line_items)


@dataclass(slots=True, frozen=True)
class CustomerEvent:
    customer_id: int | str
    email: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    accepts_marketing: bool
    created_at: datetime
    updated_at: datetime
    address: Address | None = None
    # Custom profile fields (LTV figures etc.); names must fit the vendors' limits.
    vars: dict = field(default_factory=dict)
    historical: bool = False


@dataclass(slots=True, frozen=True)
class ProductVariant:
    variant_id: int | str
    sku: str
    title: str
    price: Decimal


@dataclass(slots=True, frozen=True)
class ProductEvent:
    product_id: int | str
    sku: str
    title: str
    url: str | None
    image_url: str | None
    price: Decimal
    updated_at: datetime
    description: str | None = None
    compare_at_price: Decimal | None = None
    brand: str | None = None
    categories: tuple[str, ...] = ()
    variants: tuple[ProductVariant, ...] = ()
    inventory: int | None = None
    historical: bool = False


@dataclass(slots=True, frozen=True)
class CheckoutEvent:
    """An open cart/checkout. ``completed`` means an order was placed from it: clear the reminder."""

    checkout_id: int | str
    customer_id: int | str | None
    email: str | None
    status: str
    checkout_url: str | None
    currency: str
    subtotal: Decimal
    total_tax: Decimal
    total: Decimal
    created_at: datetime
    updated_at: datetime
    line_items: tuple[LineItem, ...] = ()
    completed: bool = False
    order_id: int | str | None = None
    message_id: str | None = None

    @property
    def total_items(self) -> int:
        return sum(item.quantity for item in self.line_items)


StoreEvent = OrderEvent | CustomerEvent | ProductEvent | CheckoutEvent
