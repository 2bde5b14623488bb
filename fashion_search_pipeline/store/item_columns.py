"""Columns computed per item after embedding (product clusters, zero-shot tags), written into the
embedding tables beside the catalog attributes so they filter, facet and come back with results.

Only the named columns of existing rows are updated (a merge-insert keyed by item_id that never
inserts), so vectors and catalog attributes are untouched; when a text column changes, so does
the items' keyword_text (the keyword leg finds zero-shot tags too). A later embeddings run that
rewrites an item leaves these columns null for it, and its keyword_text without them, until the
enrichment assets run again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from fashion_search_pipeline.columns import ATTRIBUTES, ITEM_ID, KEYWORD_TEXT, RESERVED_COLUMNS
from fashion_search_pipeline.store.keyword import keyword_texts, table_keyword_columns
from fashion_search_pipeline.store.tables import open_existing_table, retry_commit_conflicts, write_lock

if TYPE_CHECKING:
    import lancedb


def write_item_columns(db: lancedb.DBConnection, table_names, rows: pa.Table) -> dict[str, int]:
    """Set `rows`' columns (besides item_id) on the matching rows of each named table; adds the
    columns a table lacks. Returns rows updated per table (tables that do not exist are skipped)."""
    if ITEM_ID not in rows.column_names:
        raise ValueError(f"item columns need an {ITEM_ID!r} column, got {rows.column_names}")
    reserved = [
        name for name in rows.column_names if name != ITEM_ID and (name in RESERVED_COLUMNS or name == ATTRIBUTES)
    ]
    if reserved:
        raise ValueError(f"item columns {reserved} would overwrite reserved embedding-table columns")
    updated = {}
    for name in table_names:
        with write_lock(db, name):
            count = _write_columns(db, name, rows)
        if count is not None:
            updated[name] = count
    return updated


def _write_columns(db: lancedb.DBConnection, name: str, rows: pa.Table) -> int | None:
    """Rows of table `name` updated (None when the table does not exist); the caller holds its write lock."""
    table = open_existing_table(db, name)
    if table is None:
        return None
    missing = [field for field in rows.schema if field.name not in table.schema.names]
    if missing:
        retry_commit_conflicts(lambda: table.add_columns(missing))
    if rows.num_rows == 0:
        return 0
    aligned = _with_keyword_text(table, rows.cast(pa.schema([table.schema.field(field.name) for field in rows.schema])))
    result = retry_commit_conflicts(lambda: table.merge_insert(ITEM_ID).when_matched_update_all().execute(aligned))
    retry_commit_conflicts(table.optimize)  # the merge rewrote those rows: fold them back into the indexes
    return result.num_updated_rows


def _with_keyword_text(table, rows: pa.Table) -> pa.Table:
    """`rows` plus their items' keyword_text with the new values, when they set a text column the
    keyword leg searches; `rows` as they are otherwise."""
    searched = table_keyword_columns(table)
    changed = [name for name in rows.column_names if name in searched]
    if KEYWORD_TEXT not in table.schema.names or not changed:
        return rows
    from lancedb.expr import col
    ids = rows.column(ITEM_ID).to_pylist()
    current = table.search().select([ITEM_ID, *searched]).limit(None)
    if 2 * len(ids) < table.count_rows():  # a few items: look them up; most of the table: read it all
        current = current.where(col(ITEM_ID).isin(ids))
    current = pl.from_arrow(current.to_arrow())
    updated = current.drop(changed).join(pl.from_arrow(rows.select([ITEM_ID, *changed])), on=ITEM_ID, how="inner")
    texts = updated.select(ITEM_ID, pl.Series(KEYWORD_TEXT, keyword_texts(updated.select(searched)), dtype=pl.Utf8))
    ordered = pl.from_arrow(rows.select([ITEM_ID])).join(texts, on=ITEM_ID, how="left", maintain_order="left")
    return rows.append_column(table.schema.field(KEYWORD_TEXT), ordered[KEYWORD_TEXT].to_arrow().cast(pa.utf8()))
