"""Money as integer minor units plus an ISO 4217 currency. Never floats.

Amounts in PSP files are decimal strings in major units; :func:`to_minor` turns them into integer
minor units by the currency's ISO 4217 exponent and refuses more decimals than the currency has.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that differ from 2, plus the common 2-digit ones we accept.
_EXPONENT_NOT_2: dict[str, int] = {
    # zero-decimal
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # three-decimal
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    # four-decimal
    "CLF": 4,
    "UYW": 4,
}
#: Currencies whose ISO 4217 exponent is not 2 (for vectorised lookups; 2 is the default).
NON_DEFAULT_EXPONENTS: dict[str, int] = _EXPONENT_NOT_2
_TWO_DIGIT: frozenset[str] = frozenset(
    [
        "AED",
        "ARS",
        "AUD",
        "BGN",
        "BRL",
        "CAD",
        "CHF",
        "CNY",
        "COP",
        "CZK",
        "DKK",
        "EGP",
        "EUR",
        "GBP",
        "GEL",
        "HKD",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "KZT",
        "MAD",
        "MXN",
        "MYR",
        "NGN",
        "NOK",
        "NZD",
        "PEN",
        "PHP",
        "PLN",
        "RON",
        "RSD",
        "SAR",
        "SEK",
        "SGD",
        "THB",
        "TRY",
        "TWD",
        "UAH",
        "USD",
        "ZAR",
    ]
)


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def exponent(currency: str) -> int:
    """ISO 4217 minor-unit digits of ``currency`` (upper-case alpha code)."""
    code = currency.upper()
    if code in _EXPONENT_NOT_2:
        return _EXPONENT_NOT_2[code]
    if code in _TWO_DIGIT:
        return 2
    raise MoneyError(f"unknown currency {currency!r}: not an ISO 4217 code this platform knows")


def known_currency(currency: str) -> bool:
    try:
        exponent(currency)
    except MoneyError:
        return False
    return True


def to_minor(value: str | Decimal, currency: str) -> int:
    """Decimal major-unit text (``"12.30"``, ``".11"``, ``"1000"``) to integer minor units.

    Raises :class:`MoneyError` when the text is not a decimal number or carries more decimals than
    the currency's exponent allows (``"1.234"`` EUR, ``"5.5"`` JPY).
    """
    exp = exponent(currency)
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise MoneyError(f"{value!r} is not a decimal amount") from exc
    if not number.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount")
    scaled = number.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"{value!r} has more decimals than {currency.upper()} allows ({exp} minor-unit digits)"
        )
    return int(scaled)


def to_major_str(amount_minor: int, currency: str) -> str:
    """Integer minor units to a plain decimal string with the currency's digits (``1230`` → ``"12.30"``)."""
    exp = exponent(currency)
    if exp == 0:
        return str(amount_minor)
    sign = "-" if amount_minor < 0 else ""
    digits = str(abs(amount_minor)).rjust(exp + 1, "0")
    return f"{sign}{digits[:-exp]}.{digits[-exp:]}"
