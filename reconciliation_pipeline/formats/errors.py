"""Errors raised by parsers: what was wrong, where (file, row, field, value) and what to do."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    field: str | None
    value: str | None
    message: str
    hint: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.field:
            where += f", field {self.field!r}"
        shown = "" if self.value is None else f" (value {self.value!r})"
        return f"{where}: {self.message}{shown}. {self.hint}"


class FormatError(ValueError):
    """A file that is not a valid instance of the format it claims to be. It is refused whole."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem

    @classmethod
    def at(
        cls,
        file: str,
        message: str,
        *,
        row: int | None = None,
        field: str | None = None,
        value: object = None,
        hint: str = "Fix the file at its source (or ask the PSP to re-send it) and ingest it again.",
    ) -> FormatError:
        return cls(Problem(file, row, field, None if value is None else str(value), message, hint))
