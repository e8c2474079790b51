"""Amounts for people: integer minor units shown with their currency's ISO 4217 digits.

The report queries keep every amount as integer minor units; only the writers (XLSX, HTML) turn them
into major units, here, exactly (``Decimal``), never through a float.
"""

from __future__ import annotations

from decimal import Decimal

from ..money import MoneyError, exponent


def digits(currency: str | None) -> int | None:
    """Minor-unit digits of ``currency``; ``None`` when there is no currency or it is unknown."""
    if currency is None:
        return None
    try:
        return exponent(currency)
    except MoneyError:
        return None


def to_major(amount_minor: int, currency: str | None) -> Decimal:
    """``12345`` EUR → ``Decimal('123.45')``; JPY keeps ``12345``; KWD gives ``Decimal('12.345')``.

    Unknown currencies are left in minor units (the report says which currency it is)."""
    exp = digits(currency)
    return Decimal(amount_minor) if not exp else Decimal(amount_minor).scaleb(-exp)


def display(amount_minor: int | None, currency: str | None) -> str:
    """Major units with thousands separators and exactly the currency's digits: ``-1,234.50``."""
    if amount_minor is None:
        return ""
    exp = digits(currency) or 0
    return f"{to_major(amount_minor, currency):,.{exp}f}"


def excel_format(currency: str | None) -> str:
    """An Excel number format showing the currency's digits (negative amounts in red)."""
    exp = digits(currency) or 0
    body = "#,##0" + ("." + "0" * exp if exp else "")
    return f"{body};[Red]-{body}"
