"""Reading a drop's captions.csv into one row per CSV record, keeping broken records.

The file is '#'-delimited with a header row; values may be quoted ("...",
with "" for a literal quote) and then contain the delimiter and line breaks.
Records are split on the raw bytes and decoded one by one, so a malformed
record or a byte that is not UTF-8 costs that record only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from ..columns import DESCRIPTION, DROP_ID, IMAGE_PATH, ITEM_ID, PARSE_ERROR, RESERVED_COLUMNS, SOURCE_ROW
from .drops import DropLocation, landing_error
from .storage import filesystem_for

DELIMITER = "#"
REQUIRED_COLUMNS = (IMAGE_PATH, DESCRIPTION)
ATTRIBUTE_PREFIX = "attr_"
# CSV columns that keep their reserved name; any other reserved name gets ATTRIBUTE_PREFIX.
CSV_KEY_COLUMNS = (ITEM_ID, IMAGE_PATH, DESCRIPTION)

_BOM = b"\xef\xbb\xbf"
_QUOTE = b'"'
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
UNTERMINATED_QUOTE = "malformed record: unterminated quote"


class CaptionsFileError(ValueError):
    """A captions file that cannot be read at all (missing, unreadable, bad header)."""


class MissingColumnError(CaptionsFileError):
    """A captions file without a required column; the message names drop, file and column."""

    def __init__(self, drop_id: str, source: str, column: str, columns: list[str]):
        super().__init__(
            f"drop {drop_id!r}: {source} has no {column!r} column (its columns: {', '.join(columns) or 'none'})"
        )
        self.drop_id = drop_id
        self.source = source
        self.column = column


@dataclass(frozen=True)
class CsvRecord:
    """One CSV record: the line it starts on (1-based), its fields, and why it is broken (None if it is not)."""

    line: int
    fields: list[str]
    error: str | None


def iter_records(data: bytes, delimiter: str = DELIMITER) -> Iterator[CsvRecord]:
    """The records of a delimited file, header first; blank lines are skipped.

    A record whose field count differs from the header's, that has text after
    a closing quote, or whose quote never closes, comes back with `error`
    set; if it spans several lines it is read as its first line alone (a
    stray quote must not swallow the records after it). A record with bytes
    that are not UTF-8 is decoded with replacement characters and its error
    names the byte offset in the file.
    """
    scanner = _RecordScanner(data, delimiter.encode("ascii"))
    position = len(_BOM) if data.startswith(_BOM) else 0
    line, counted_to = 1, position
    expected_fields: int | None = None
    while position < len(data):
        line += _count_line_breaks(data, counted_to, position)
        counted_to = position
        fields, end, next_position, error = scanner.scan(position)
        if error is None and expected_fields is not None and len(fields) != expected_fields:
            error = f"malformed record: expected {expected_fields} fields, got {len(fields)}"
        if error is not None and _LINE_BREAK.search(data, position, end):
            # Only a quoted value spans lines: a broken record that does most likely has a stray quote.
            fields, end, next_position = scanner.first_line(position)
            error = UNTERMINATED_QUOTE
        if end > position:
            if expected_fields is None:
                expected_fields = len(fields)
            yield _decode_record(data, position, end, line, fields, error)
        position = next_position


class _RecordScanner:
    """Finds the extent and raw fields of the record starting at a byte offset."""

    def __init__(self, data: bytes, delimiter: bytes):
        self.data = data
        self.delimiter = delimiter
        self.field_end = re.compile(b"[" + re.escape(delimiter) + rb"\r\n]")

    def scan(self, start: int) -> tuple[list[bytes], int, int, str | None]:
        """(raw fields, end of the record, start of the next one, error)."""
        data, size = self.data, len(self.data)
        fields: list[bytes] = []
        error = None
        position = start
        while True:
            if data.startswith(_QUOTE, position):
                value, position = self._quoted_value(position + 1)
                if value is None:
                    return [*fields, data[position:]], size, size, UNTERMINATED_QUOTE
                stop = self._field_stop(position)
                if stop > position and error is None:
                    error = f"malformed record: text after the closing quote of field {len(fields) + 1}"
                value += data[position:stop]
            else:
                stop = self._field_stop(position)
                value = data[position:stop]
            fields.append(value)
            position = stop
            if position >= size:
                return fields, size, size, error
            if data.startswith(self.delimiter, position):
                position += 1
                continue
            line_break = _LINE_BREAK.match(data, position)
            return fields, position, line_break.end(), error

    def first_line(self, start: int) -> tuple[list[bytes], int, int]:
        """The physical line at `start`, split naively: (raw fields, end, start of the next line)."""
        line_break = _LINE_BREAK.search(self.data, start)
        if line_break is None:
            return self.data[start:].split(self.delimiter), len(self.data), len(self.data)
        return self.data[start : line_break.start()].split(self.delimiter), line_break.start(), line_break.end()

    def _quoted_value(self, position: int) -> tuple[bytes | None, int]:
        """A quoted field's unescaped value (None if the quote never closes) and the offset after it.

        `position` is just after the opening quote.
        """
        parts = []
        while True:
            close = self.data.find(_QUOTE, position)
            if close == -1:
                return None, position
            parts.append(self.data[position:close])
            if not self.data.startswith(_QUOTE, close + 1):
                return b"".join(parts), close + 1
            parts.append(_QUOTE)
            position = close + 2

    def _field_stop(self, position: int) -> int:
        found = self.field_end.search(self.data, position)
        return found.start() if found else len(self.data)


def _count_line_breaks(data: bytes, start: int, end: int) -> int:
    return data.count(b"\n", start, end) + data.count(b"\r", start, end) - data.count(b"\r\n", start, end)


def _decode_record(data: bytes, start: int, end: int, line: int, fields: list[bytes], error: str | None) -> CsvRecord:
    try:
        data[start:end].decode("utf-8")
    except UnicodeDecodeError as bad:
        not_utf8 = f"not UTF-8 at byte {start + bad.start}"
        error = not_utf8 if error is None else f"{error}; {not_utf8}"
    return CsvRecord(line, [field.decode("utf-8", errors="replace") for field in fields], error)


def normalize_column_name(name: str) -> str:
    """A header as a column name: NFKC, stripped, lower-case, anything but a letter, digit or '_' as '_'.

    Letters of every script stay ('Größe' -> 'größe', '颜色' -> '颜色'). A name the project or
    LanceDB reserves (`vector`, `score`, `_distance`, ...), or any name starting with '_', gets
    the prefix 'attr_' ('_distance' -> 'attr__distance'); item_id, image_path, description keep theirs.
    """
    folded = unicodedata.normalize("NFKC", name).strip().lower()
    column = "".join(char if char == "_" or unicodedata.category(char)[0] in "LMN" else "_" for char in folded)
    if column in CSV_KEY_COLUMNS:
        return column
    if column in RESERVED_COLUMNS or column.startswith("_"):
        column = ATTRIBUTE_PREFIX + column
    return column


def parse_captions(data: bytes, *, drop_id: str, source: str) -> pl.DataFrame:
    """One row per caption record of `data` (the bytes of `source`, a captions file of drop `drop_id`).

    Columns: drop_id, source_row (the line the record starts on; the header
    is line 1), item_id, image_path, description, the other CSV columns, all
    Utf8, and parse_error (null for a record that parsed cleanly).
    """
    records = iter_records(data)
    header = next(records, None)
    if header is None:
        return _captions_frame(drop_id, [], [], {})
    if header.error is not None:
        raise CaptionsFileError(
            f"drop {drop_id!r}: {source} has a malformed header on line {header.line}: {header.error}"
        )
    columns = _header_columns(header.fields, drop_id, source)
    for required in REQUIRED_COLUMNS:
        if required not in columns:
            raise MissingColumnError(drop_id, source, required, columns)
    values: dict[str, list[str | None]] = {column: [] for column in columns}
    source_rows: list[int] = []
    errors: list[str | None] = []
    for record in records:
        source_rows.append(record.line)
        errors.append(record.error)
        for index, column in enumerate(columns):
            values[column].append(record.fields[index] if index < len(record.fields) else None)
    return _captions_frame(drop_id, source_rows, errors, values)


def _header_columns(names: list[str], drop_id: str, source: str) -> list[str]:
    headers: dict[str, str] = {}
    for position, name in enumerate(names, start=1):
        column = normalize_column_name(name) or f"column_{position}"
        if column in headers:
            raise CaptionsFileError(
                f"drop {drop_id!r}: {source} has headers {headers[column]!r} and {name!r} "
                f"that both become column {column!r}; rename one of them"
            )
        headers[column] = name
    return list(headers)


def _captions_frame(
    drop_id: str, source_rows: list[int], errors: list[str | None], values: dict[str, list[str | None]]
) -> pl.DataFrame:
    text_columns = [ITEM_ID, IMAGE_PATH, DESCRIPTION] + [c for c in values if c not in CSV_KEY_COLUMNS]
    empty = [None] * len(source_rows)
    data = {DROP_ID: [drop_id] * len(source_rows), SOURCE_ROW: source_rows}
    data.update({column: values.get(column, empty) for column in text_columns})
    data[PARSE_ERROR] = errors
    schema = {column: pl.Int64 if column == SOURCE_ROW else pl.Utf8 for column in data}
    return pl.DataFrame(data, schema=schema)


def read_captions(drop: DropLocation, storage_options: dict | None = None) -> pl.DataFrame:
    """The caption rows of `drop` (see parse_captions); CaptionsFileError if the file is missing or unreadable."""
    fs, path = filesystem_for(drop.captions_uri, storage_options)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise CaptionsFileError(f"drop {drop.drop_id!r}: {drop.captions_uri} does not exist") from None
    except Exception as error:  # OSError, and botocore / aiohttp errors that are not OSErrors
        raise CaptionsFileError(str(landing_error(drop.captions_uri, error, drop.drop_id))) from error
    return parse_captions(data, drop_id=drop.drop_id, source=drop.captions_uri)
