"""The current catalog: drops applied in order, each removing its deleted items and upserting its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from ..columns import CATALOG_COLUMNS, ITEM_ID, SOURCE_ROW
from .captions import iter_records, normalize_column_name
from .cleaning import normalize_text
from .drops import DropLocation, list_drops
from .storage import filesystem_for


class DeletionsFileError(ValueError):
    """A deletions file that cannot be trusted; the message names the drop and the file."""


@dataclass(frozen=True)
class DropChanges:
    """What one drop does to the catalog: the items it adds or replaces and the item ids it deletes."""

    drop_id: str
    items: pl.DataFrame
    deleted_item_ids: tuple[str, ...]


def parse_deletions(data: bytes, *, drop_id: str, source: str) -> list[str]:
    """The item ids listed in a deletions file (',' or '#' delimited, with an item_id column), in file order.

    Blank ids and repeats are dropped. A malformed or non-UTF-8 record raises
    DeletionsFileError naming drop, file and line: a deletion must not be
    silently skipped.
    """
    first_line = data.split(b"\n", 1)[0]
    records = iter_records(data, delimiter="#" if b"#" in first_line else ",")
    header = next(records, None)
    if header is None:
        return []
    columns = [normalize_column_name(name) for name in header.fields]
    if ITEM_ID not in columns:
        raise DeletionsFileError(f"drop {drop_id!r}: {source} has no {ITEM_ID!r} column (its header: {columns})")
    position = columns.index(ITEM_ID)
    item_ids: dict[str, None] = {}
    for record in records:
        if record.error is not None:
            raise DeletionsFileError(f"drop {drop_id!r}: {source} line {record.line}: {record.error}")
        item_id = normalize_text(record.fields[position])
        if item_id:
            item_ids[item_id] = None
    return list(item_ids)


def read_deletions(drop: DropLocation, storage_options: dict | None = None) -> list[str]:
    """The item ids `drop` deletes ([] when it has no deletions file)."""
    fs, path = filesystem_for(drop.deletions_uri, storage_options)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise DeletionsFileError(f"drop {drop.drop_id!r}: cannot read {drop.deletions_uri}: {error}") from error
    return parse_deletions(data, drop_id=drop.drop_id, source=drop.deletions_uri)


def deleted_item_ids(landing_uri: str, storage_options: dict | None = None) -> set[str]:
    """Every item id that some drop under `landing_uri` lists in its deletions file."""
    ids: set[str] = set()
    for drop_id in list_drops(landing_uri, storage_options, require_marker=False):
        ids.update(read_deletions(DropLocation(landing_uri, drop_id), storage_options))
    return ids


def apply_drops(changes: Iterable[DropChanges]) -> pl.DataFrame:
    """The catalog after applying `changes` in drop_id order, sorted by item_id.

    Each drop first removes its deleted ids, then upserts its items (an item
    id already present is replaced; within one drop the last row of an id
    counts). Columns are the union over all drops, null where a drop lacks one.
    """
    schema = {column: pl.Int64 if column == SOURCE_ROW else pl.Utf8 for column in CATALOG_COLUMNS}
    catalog = pl.DataFrame(schema=schema)
    for change in sorted(changes, key=lambda change: change.drop_id):
        items = change.items.unique(subset=ITEM_ID, keep="last", maintain_order=True)
        replaced = pl.Series(list(change.deleted_item_ids), dtype=pl.Utf8).append(items.get_column(ITEM_ID))
        kept = catalog.filter(~pl.col(ITEM_ID).is_in(replaced.implode()))
        catalog = pl.concat([kept, items], how="diagonal_relaxed")
    return catalog.sort(ITEM_ID)
