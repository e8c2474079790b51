"""Which parser reads which PSP's files, content sniffing, and "parse as the PSP the user said"."""

from __future__ import annotations

from types import ModuleType

import polars as pl

from reconciliation_pipeline.formats import adyen, camt053, paypal, stripe
from reconciliation_pipeline.formats.errors import FormatError

#: ``--psp`` name → format module (``FORMAT``, ``looks_like(data)``, ``parse(data, source_file)``).
PARSERS: dict[str, ModuleType] = {
    "adyen": adyen,
    "stripe": stripe,
    "paypal": paypal,
    "bank": camt053,
}

_DESCRIPTION = {
    "adyen": "an Adyen settlement details report",
    "stripe": "a Stripe itemized payout reconciliation report",
    "paypal": "a PayPal settlement report (STL)",
    "bank": "a camt.053 bank statement",
}
#: Sniffing order: the XML check first (cheapest and most specific), then the record-type CSV.
_DETECT_ORDER = ("bank", "paypal", "adyen", "stripe")


def detect(data: bytes) -> str | None:
    """The ``--psp`` name whose format ``data`` looks like, or None."""
    for psp in _DETECT_ORDER:
        if PARSERS[psp].looks_like(data):
            return psp
    return None


def parse_as(psp: str, data: bytes, source_file: str, *, file_sha256: str | None = None) -> pl.DataFrame:
    """Parse ``data`` as the format of ``psp``, refusing content that is another (or no known) format.

    ``file_sha256``: the checksum of ``data`` when the caller has it (otherwise the parser computes it)."""
    name = adyen.basename(source_file)
    if psp not in PARSERS:
        raise FormatError.at(
            name,
            f"unknown PSP {psp!r}",
            field=None,
            value=psp,
            hint=f"Use --psp with one of: {', '.join(PARSERS)}.",
        )
    found = detect(data)
    if found != psp:
        if not data.strip():
            what = "an empty file"
        elif found is None:
            what = f"content that is none of the known formats (it starts with {_preview(data)!r})"
        else:
            what = _DESCRIPTION[found]
        hint = (
            f"Ingest it with --psp {found}."
            if found is not None
            else f"Check the file; for --psp {psp} it must be {_DESCRIPTION[psp]}."
        )
        raise FormatError.at(
            name, f"the file is not {_DESCRIPTION[psp]}: found {what}", field=None, hint=hint
        )
    frame: pl.DataFrame = PARSERS[psp].parse(data, source_file, file_sha256=file_sha256)
    return frame


def _preview(data: bytes) -> str:
    return adyen.first_line(data, 200)[:60]
