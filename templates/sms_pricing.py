"""Estimated SMS cost: the destination country (from the E.164 prefix) times segments."""

from __future__ import annotations

from decimal import Decimal

# Longest prefix first wins; NANP (+1) is billed as US.
_COUNTRY_PREFIXES = {
    "1": "US", "33": "FR", "44": "GB", "49": "DE", "34": "ES", "39": "IT", "32": "BE", "41": "CH",
    "31": "NL", "351": "PT", "352": "LU", "377": "MC", "262": "RE", "590": "GP", "596": "MQ",
}


def country_of(phone: str) -> str | None:
    digits = phone.lstrip("+")
    for size in (3, 2, 1):
        country = _COUNTRY_PREFIXES.get(digits[:size])
        if country:
            return country
    return None


def estimate(phone: str, segments: int, prices: dict[str, tuple[Decimal, str]]) -> tuple[Decimal, str] | None:
    """(amount, currency), or None when the country has no price in the table."""
    country = country_of(phone)
    if country is None or country not in prices:
        return None
    price, currency = prices[country]
    return price * segments, currency
