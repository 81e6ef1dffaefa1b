"""ISO 4217 currency codes a store can charge in.

``ACTIVE`` is ISO 4217 list one (2025) without the codes no shop prices in: funds and units of
account (BOV CHE CHW CLF COU MXV USN UYI UYW XDR XSU XUA), precious metals (XAU XAG XPD XPT),
bond-market units (XBA XBB XBC XBD), and the testing / "no currency" codes (XTS XXX).
``RECENTLY_WITHDRAWN`` keeps codes withdrawn since 2015, because an order history can hold them
(a 2022 Croatian order is in HRK). Both are upper-case: ``usd`` is not a known code.
"""

from __future__ import annotations

ACTIVE: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP
    GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD
    KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN
    NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP
    SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES
    VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)

RECENTLY_WITHDRAWN: frozenset[str] = frozenset("ANG BYR CUC HRK LTL MRO SLL STD VEF ZWL".split())

KNOWN_CURRENCIES: tuple[str, ...] = tuple(sorted(ACTIVE | RECENTLY_WITHDRAWN))
