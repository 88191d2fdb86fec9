"""SMS encoding and segment arithmetic (3GPP TS 23.038), as carriers and Twilio count it.

One character outside GSM-7 switches the whole message to UCS-2. Capital Ç is in the basic
table; lowercase ç is not (Twilio's own calculator agrees).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Each of these costs two septets (ESC + code).
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsSize:
    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text) else "UCS-2"


def measure(text: str) -> SmsSize:
    """Encoding, length in that encoding's units, and the number of segments billed."""
    encoding = encoding_of(text)
    if encoding == "GSM-7":
        units = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        single, part = GSM7_SINGLE, GSM7_PART
    else:
        units = len(text.encode("utf-16-le", "surrogatepass")) // 2
        single, part = UCS2_SINGLE, UCS2_PART
    if units == 0:
        return SmsSize(encoding, 0, 0)
    segments = 1 if units <= single else -(-units // part)
    return SmsSize(encoding, units, segments)


def fits_one_segment(text: str) -> bool:
    return measure(text).segments <= 1


# Typographic characters and their GSM-7 stand-ins (what Twilio's Smart Encoding would do).
GSM_PUNCTUATION = str.maketrans({
    "—": "-", "–": "-", "‑": "-", "’": "'", "‘": "'", "ʼ": "'", "“": '"', "”": '"', "«": '"', "»": '"',
    "…": "...", "\u00a0": " ", "\u202f": " ", "\u2009": " ",
})


def to_gsm_punctuation(text: str) -> str:
    return text.translate(GSM_PUNCTUATION)
