"""Turning raw caption rows into catalog items: joined to their images, normalised, deduplicated.

Every raw row comes back; a row that cannot become an item is marked
rejected with one of the REJECT_* reasons and a human-readable detail.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import PurePosixPath

import polars as pl

from ..columns import (
    ACCEPTED,
    CLEANING_COLUMNS,
    CONTENT_HASH,
    DESCRIPTION,
    DROP_ID,
    IMAGE_PATH,
    IMAGE_SHA256,
    IMAGE_URI,
    ITEM_ID,
    PARSE_ERROR,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECTED,
    SOURCE_ROW,
    STATUS,
    attribute_columns,
)

REJECT_MALFORMED_ROW = "malformed_row"
REJECT_MISSING_IMAGE_PATH = "missing_image_path"
REJECT_UNSAFE_PATH = "unsafe_path"
REJECT_MISSING_IMAGE = "missing_image"
REJECT_UNDECODABLE_IMAGE = "undecodable_image"
REJECT_EMPTY_DESCRIPTION = "empty_description"
REJECT_DUPLICATE_ITEM_ID = "duplicate_item_id"
REJECT_REASONS = (
    REJECT_MALFORMED_ROW,
    REJECT_MISSING_IMAGE_PATH,
    REJECT_UNSAFE_PATH,
    REJECT_MISSING_IMAGE,
    REJECT_UNDECODABLE_IMAGE,
    REJECT_EMPTY_DESCRIPTION,
    REJECT_DUPLICATE_ITEM_ID,
)

CLEANED_COLUMNS = (
    DROP_ID,
    SOURCE_ROW,
    ITEM_ID,
    IMAGE_PATH,
    IMAGE_URI,
    DESCRIPTION,
    IMAGE_SHA256,
    CONTENT_HASH,
    STATUS,
    REJECT_REASON,
    REJECT_DETAIL,
)
_DRIVE_LETTER = re.compile(r"[A-Za-z]:")


class UnsafePathError(ValueError):
    """An image path that could point outside its drop folder."""


def normalize_text(s: str | None) -> str:
    """`s` in Unicode NFC with runs of whitespace collapsed to one space and the ends stripped ("" for None)."""
    if s is None:
        return ""
    return " ".join(unicodedata.normalize("NFC", s).split())


def content_hash(image_sha256: str, description: str) -> str:
    """sha256 hex of an image hash and a description: what an embedding of the item depends on."""
    digest = hashlib.sha256()
    digest.update(image_sha256.encode("ascii"))
    digest.update(b"\x00")
    digest.update(description.encode("utf-8"))
    return digest.hexdigest()


def normalize_image_path(path: str) -> str:
    """A caption's image path as a clean posix path relative to the drop folder ("" when blank).

    Raises UnsafePathError for absolute paths, drive letters, URLs,
    backslashes, control characters and '..' segments.
    """
    path = unicodedata.normalize("NFC", path.strip())
    if "\\" in path:
        raise UnsafePathError("backslash in path")
    if any(unicodedata.category(char) == "Cc" for char in path):
        raise UnsafePathError("control character in path")
    if path.startswith(("/", "~")):
        raise UnsafePathError("absolute path")
    if _DRIVE_LETTER.match(path) or "://" in path:
        raise UnsafePathError("drive letter or URL")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError("'..' in path")
    return "/".join(parts)


def clean_captions(raw: pl.DataFrame, manifest: pl.DataFrame) -> pl.DataFrame:
    """Every row of `raw` (parse_captions output) checked against `manifest` (build_manifest output).

    Columns: drop_id, source_row, item_id (given, or the image file's stem),
    image_path (normalised; as given when unsafe), image_uri, description,
    image_sha256, content_hash (set once image and description are valid),
    status, reject_reason, reject_detail, then the attribute columns
    (normalised, null when blank). Checks run in REJECT_REASONS order; among
    rows that pass them all, the last record of an item id wins and the
    earlier ones are rejected as duplicates.
    """
    images = {
        unicodedata.normalize("NFC", row[IMAGE_PATH]): row for row in manifest.iter_rows(named=True)
    }
    attributes = attribute_columns(raw.columns)
    rows = [_clean_row(record, images) for record in raw.iter_rows(named=True)]
    _reject_superseded(rows)
    columns = {column: [row[column] for row in rows] for column in CLEANED_COLUMNS}
    for attribute in attributes:
        columns[attribute] = [normalize_text(value) or None for value in raw.get_column(attribute).to_list()]
    schema = {column: pl.Int64 if column == SOURCE_ROW else pl.Utf8 for column in columns}
    return pl.DataFrame(columns, schema=schema)


def _clean_row(record: dict, images: dict[str, dict]) -> dict:
    raw_path = (record.get(IMAGE_PATH) or "").strip()
    description = normalize_text(record.get(DESCRIPTION))
    try:
        path, unsafe = normalize_image_path(raw_path), None
    except UnsafePathError as error:
        path, unsafe = None, str(error)
    given_id = normalize_text(record.get(ITEM_ID))
    row = {
        DROP_ID: record[DROP_ID],
        SOURCE_ROW: record[SOURCE_ROW],
        ITEM_ID: given_id or (PurePosixPath(path).stem if path else None),
        IMAGE_PATH: raw_path if unsafe else path or None,
        IMAGE_URI: None,
        DESCRIPTION: description,
        IMAGE_SHA256: None,
        CONTENT_HASH: None,
        STATUS: REJECTED,
        REJECT_REASON: None,
        REJECT_DETAIL: None,
    }
    if record.get(PARSE_ERROR):
        return row | {REJECT_REASON: REJECT_MALFORMED_ROW, REJECT_DETAIL: record[PARSE_ERROR]}
    if not raw_path:
        return row | {REJECT_REASON: REJECT_MISSING_IMAGE_PATH, REJECT_DETAIL: "no image_path given"}
    if unsafe:
        return row | {REJECT_REASON: REJECT_UNSAFE_PATH, REJECT_DETAIL: f"{unsafe}: {raw_path!r}"}
    if not path:
        return row | {REJECT_REASON: REJECT_MISSING_IMAGE_PATH, REJECT_DETAIL: f"image_path {raw_path!r} names no file"}
    image = images.get(path)
    if image is None:
        return row | {REJECT_REASON: REJECT_MISSING_IMAGE, REJECT_DETAIL: f"no file {path} in the drop"}
    row |= {IMAGE_URI: image[IMAGE_URI], IMAGE_SHA256: image["sha256"]}
    if not image["decodable"]:
        return row | {REJECT_REASON: REJECT_UNDECODABLE_IMAGE, REJECT_DETAIL: image["error"]}
    if not description:
        return row | {REJECT_REASON: REJECT_EMPTY_DESCRIPTION, REJECT_DETAIL: "description is blank"}
    return row | {STATUS: ACCEPTED, CONTENT_HASH: content_hash(image["sha256"], description)}


def _reject_superseded(rows: list[dict]) -> None:
    """Among accepted rows sharing an item id, keep the last record; reject the earlier ones."""
    winners: dict[str, dict] = {}
    for row in sorted((row for row in rows if row[STATUS] == ACCEPTED), key=lambda row: row[SOURCE_ROW]):
        winners[row[ITEM_ID]] = row
    for row in rows:
        winner = winners.get(row[ITEM_ID]) if row[STATUS] == ACCEPTED else None
        if winner is not None and winner is not row:
            row.update(
                {
                    STATUS: REJECTED,
                    REJECT_REASON: REJECT_DUPLICATE_ITEM_ID,
                    REJECT_DETAIL: f"superseded by row {winner[SOURCE_ROW]}",
                }
            )


def accepted_items(cleaned: pl.DataFrame) -> pl.DataFrame:
    """The accepted rows of `cleaned`, without the status / reject columns."""
    return cleaned.filter(pl.col(STATUS) == ACCEPTED).drop(CLEANING_COLUMNS)


def reject_counts(cleaned: pl.DataFrame) -> dict[str, int]:
    """Number of rejected rows per reason, every reason listed (0 when none)."""
    counts = dict.fromkeys(REJECT_REASONS, 0)
    for reason in cleaned.filter(pl.col(STATUS) == REJECTED).get_column(REJECT_REASON).to_list():
        counts[reason] = counts.get(reason, 0) + 1
    return counts
