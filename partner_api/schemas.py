"""Request and response bodies of ``/v1`` (the OpenAPI document is generated from them)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reconciliation_pipeline.store.exceptions import ResolutionCode

from .service import DISPUTE_REASONS

Status = Literal["matched", "exception", "pending"]
DisputeReason = Literal["not_settled", "amount_mismatch", "duplicate", "not_recognised", "other"]
assert set(DisputeReason.__args__) == set(DISPUTE_REASONS)  # type: ignore[attr-defined]


class SettlementEvidence(BaseModel):
    """A settlement record matched with the transaction (same ``match_id``)."""

    psp: str | None
    source_file: str = Field(description="Basename of the PSP file")
    source_row: int | None = Field(description="1-based data row of the file (see the outcome export)")
    status: str | None
    amount_minor: int | None = Field(description="Integer minor units of `currency`")
    currency: str | None = Field(description="ISO 4217")
    booking_date: dt.date | None
    record_type: str | None
    batch_id: str | None


class OpenException(BaseModel):
    exception_id: int
    category: str
    opened_as_of: dt.date


class TransactionStatus(BaseModel):
    """A booked transaction, its reconciliation outcome and the evidence behind it."""

    transaction_id: str
    psp: str
    psp_reference: str | None
    original_transaction_id: str | None
    kind: str
    amount_minor: int = Field(description="Integer minor units of `currency` (never a float)")
    currency: str = Field(description="ISO 4217", examples=["EUR"])
    occurred_at: dt.datetime | None
    brand: str | None
    jurisdiction: str | None
    business_date: dt.date | None
    trace_id: str | None = Field(description="The payment's own trace id, from the booking event")
    status: Status | None = Field(description="`null` while the transaction is not reconciled yet")
    match_id: str | None
    rule_id: str | None = Field(description="The matching rule that paired it (docs/matching.md)")
    exception_category: str | None
    as_of_date: dt.date | None = Field(description="Business date of the run that decided the status")
    open_exception: OpenException | None
    settlements: list[SettlementEvidence]


class TransactionSummary(BaseModel):
    transaction_id: str
    psp: str
    psp_reference: str | None
    kind: str
    amount_minor: int
    currency: str
    business_date: dt.date | None
    status: Status | None
    exception_category: str | None


class TransactionPage(BaseModel):
    data: list[TransactionSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; `null` on the last")


class CurrencyTotal(BaseModel):
    currency: str
    lines: int
    amount_minor: int


class BatchFile(BaseModel):
    source_file: str
    sha256: str
    lines: int
    first_booking_date: dt.date | None
    last_booking_date: dt.date | None
    registered_at: dt.datetime | None


class SettlementBatchStatus(BaseModel):
    """Lines of a PSP settlement batch by reconciliation status (``unreconciled``: not run yet)."""

    batch_id: str
    psp: str
    lines: int
    by_status: dict[str, int]
    reconciled: bool = Field(description="Every line matched or an exception (none pending or unreconciled)")
    totals: list[CurrencyTotal]
    files: list[BatchFile]


class SettlementFileStatus(BaseModel):
    sha256: str
    psp: str
    name: str
    status: Literal["accepted", "quarantined"]
    reason: Any = Field(description="Why a quarantined file was refused (file, row, field, message, hint)")
    batch_key: str | None
    registered_at: dt.datetime
    lines_stored: int = Field(description="Lines stored in the outcome store so far (after a run)")


class UploadResult(BaseModel):
    """What became of an uploaded settlement file."""

    status: Literal["accepted", "duplicate"]
    sha256: str
    psp: str
    name: str
    message: str
    rows: int
    business_dates: list[dt.date]


class DisputeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transaction_id: str = Field(min_length=1, max_length=128)
    reason: DisputeReason
    amount_minor: int | None = Field(
        default=None,
        gt=0,
        le=10**15,
        description="Disputed amount in minor units of the transaction's currency; default its whole amount",
    )
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="Must be the transaction's currency when given"
    )
    note: str | None = Field(default=None, max_length=2000)


class DisputeOut(BaseModel):
    dispute_id: str
    transaction_id: str
    reason: str
    amount_minor: int
    currency: str
    note: str | None
    state: Literal["open", "resolved"]
    created_at: dt.datetime


class ExceptionOut(BaseModel):
    exception_id: int
    record_key: str
    record: str
    transaction_id: str | None
    psp: str | None
    source_file: str | None
    source_row: int | None
    category: str
    state: Literal["open", "resolved"]
    opened_as_of: dt.date
    evidence: Any
    resolution_code: str | None
    resolution_note: str | None
    resolved_by: str | None
    resolved_at: dt.datetime | None


class ExceptionPage(BaseModel):
    data: list[ExceptionOut]
    next_cursor: str | None


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution_code: ResolutionCode = Field(
        description="Why it is resolved: the reason codes of `recon exceptions codes`; `other` needs a note",
    )
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _other_needs_a_note(self) -> ResolveIn:
        if self.resolution_code is ResolutionCode.other and not (self.note and self.note.strip()):
            raise ValueError("resolution code 'other' needs a note saying why")
        return self


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
