"""Columns computed per item after embedding (product clusters, zero-shot tags), written into the
embedding tables beside the catalog attributes so they filter, facet and come back with results.

Only the named columns of existing rows are updated (a merge-insert keyed by item_id that never
inserts), so vectors and catalog attributes are untouched. A later embeddings run that rewrites
an item leaves these columns null for it until the enrichment assets run again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from fashion_search_pipeline.columns import ATTRIBUTES, ITEM_ID, RESERVED_COLUMNS
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
    aligned = rows.cast(pa.schema([table.schema.field(field.name) for field in rows.schema]))
    result = retry_commit_conflicts(lambda: table.merge_insert(ITEM_ID).when_matched_update_all().execute(aligned))
    return result.num_updated_rows
