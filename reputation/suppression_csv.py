"""Suppression lists as CSV: reading an import file and writing the export.

An import is UTF-8 (a byte-order mark, as Excel writes it, is fine), comma-separated (or
semicolon- or tab-separated, as the first line shows). Either its first line is a header
naming an ``address`` column (``email`` works too) and maybe a ``note`` column, other
columns being ignored, so an export reads back in; or it has no header and each line is
an address, then maybe a note. Rows are numbered by their line in the file.

The export has the columns ``address, reason, note, created_at`` (ISO 8601, UTC). A cell
that a spreadsheet would run as a formula gets a leading ``'`` (as in the events export),
which an import takes off again.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import IO

from reputation.models import Suppression
from reputation.suppressions import ImportRow, SuppressionError, check_rows

EXPORT_COLUMNS = ["address", "reason", "note", "created_at"]
ADDRESS_COLUMNS = frozenset({"address", "email", "email address", "email_address", "e-mail"})
NOTE_COLUMNS = frozenset({"note", "notes"})
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Columns:
    address: int
    note: int | None
    header: bool


def read_csv(file: IO[bytes], *, limit: int) -> list[ImportRow]:
    """The rows of an import file; SuppressionError when it cannot be read as one (nothing
    is imported then), ImportTooLarge past ``limit`` rows (reading stops there)."""
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    reader = None
    try:
        lines = iter(text)
        first = next(lines, "")
        reader = csv.reader(itertools.chain([first], lines), delimiter=_delimiter(first))
        columns: Columns | None = None
        rows: list[ImportRow] = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank lines, a spreadsheet's empty rows
            if columns is None:
                columns = _columns(record)
                if columns.header:
                    continue
            if len(rows) == limit:
                check_rows(limit + 1)
            rows.append(
                ImportRow(
                    reader.line_num,
                    _cell(record, columns.address),
                    _cell(record, columns.note),
                )
            )
        return rows
    except UnicodeDecodeError:
        raise SuppressionError(
            "The file is not UTF-8 text: save it as “CSV UTF-8” and try again.", field="file"
        ) from None
    except csv.Error as exc:
        line = reader.line_num if reader is not None else 1
        raise SuppressionError(
            f"Line {line} of the file is not CSV: {exc}.", field="file"
        ) from None
    finally:
        text.detach()  # the upload is its owner's to close


def _delimiter(first_line: str) -> str:
    if "," in first_line:
        return ","
    return next((d for d in (";", "\t") if d in first_line), ",")


def _columns(record: list[str]) -> Columns:
    names = [cell.strip().lower() for cell in record]
    address = next((i for i, name in enumerate(names) if name in ADDRESS_COLUMNS), None)
    if address is not None:
        note = next((i for i, name in enumerate(names) if name in NOTE_COLUMNS), None)
        return Columns(address, note, header=True)
    if "@" in names[0]:
        return Columns(0, 1, header=False)
    raise SuppressionError(
        "The first line is neither a header with an “address” column nor an address. Start "
        "the file with a header line (address,note) or list one address a line.",
        field="file",
    )


def _cell(record: list[str], index: int | None) -> str:
    if index is None or index >= len(record):
        return ""
    value = record[index].strip()
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]  # our own export's guard against formulas
    return value


# -- the export ----------------------------------------------------------------------------


class _Line:
    """What csv.writer writes to: each writerow() returns its line instead of storing it."""

    def write(self, line: str) -> str:
        return line


def _safe(value: str) -> str:
    # A note is the tenant's text and an address may start with "=" or "-": neither
    # may become a formula in a spreadsheet (CSV injection).
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def export_lines(chunks: Iterable[list[Suppression]]) -> Iterator[str]:
    """The export, a header line first, then one line per entry, a chunk at a time."""
    writer = csv.writer(_Line())
    yield writer.writerow(EXPORT_COLUMNS)
    for chunk in chunks:
        yield "".join(
            writer.writerow(
                [
                    _safe(entry.address),
                    entry.reason,
                    _safe(entry.note),
                    entry.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                ]
            )
            for entry in chunk
        )
