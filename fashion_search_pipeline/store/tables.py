"""LanceDB embedding tables: connection, schema, idempotent upserts and deletions.

One table per model and modality, named `<model>__<modality>`, keyed by item_id.
Writes are merge-inserts keyed by item_id, so re-running a write never duplicates
rows. Concurrent writers (threads, processes, two Dagster deployments, machines sharing
an s3:// database) are serialised per table by `store.locking`: Lance lets two merge-inserts
of the same new ids both commit, which duplicated every id. A writer whose rows lack
attribute columns another writer added null-fills them, and commit conflicts with writers
outside this code are retried with backoff. Storage errors come back as TableStoreError
naming the table and the database URI.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import polars as pl
import pyarrow as pa

from fashion_search_pipeline.columns import (
    ATTRIBUTES,
    CONTENT_HASH,
    DESCRIPTION,
    DROP_ID,
    IMAGE_URI,
    ITEM_ID,
    KEYWORD_TEXT,
    MODEL,
    MODEL_VERSION,
    RESERVED_COLUMNS,
    VECTOR,
)
from fashion_search_pipeline.store.locking import table_lock

if TYPE_CHECKING:
    import lancedb
    from lancedb.table import Table

TEXT_COLUMNS = (ITEM_ID, DROP_ID, IMAGE_URI, DESCRIPTION, CONTENT_HASH, MODEL, MODEL_VERSION, ATTRIBUTES)
# Columns derived from the others, which every embedding table has: a writer may leave them out
# (they are null then, and ensure_indexes fills them).
DERIVED_COLUMNS = (KEYWORD_TEXT,)
KEY_COLUMNS = (ITEM_ID, CONTENT_HASH, MODEL_VERSION)

MAX_WRITE_ATTEMPTS = 8
DELETE_CHUNK = 2_000
_RETRYABLE_MARKERS = ("conflict", "concurrent", "already exists", "was not found", "retry")
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)

T = TypeVar("T")
log = logging.getLogger(__name__)


class ModelTablesMissingError(LookupError):
    """The database lacks the embedding tables a search or an evaluation needs for a model."""


class SchemaMismatchError(ValueError):
    """Rows that cannot be written to a table without losing or inventing data."""


class TableStoreError(RuntimeError):
    """LanceDB could not reach or change a table; the message names the table and the database URI."""


def _store_error(db_uri: str, name: str | None, action: str, error: Exception) -> TableStoreError:
    where = f"table {name!r} in {db_uri}" if name else f"the LanceDB database {db_uri}"
    detail = str(error).split(" { ", 1)[0].strip() or type(error).__name__  # Rust debug dumps run for pages
    return TableStoreError(
        f"cannot {action} {where}: {detail} (check the URI, the S3 endpoint and credentials, and the network)"
    )


@contextmanager
def _store_errors(db_uri: str, name: str | None, action: str) -> Iterator[None]:
    """Re-raise LanceDB's storage errors as TableStoreError naming `name` and `db_uri`."""
    try:
        yield
    except (SchemaMismatchError, TableStoreError, TypeError, KeyError):
        raise
    except (OSError, RuntimeError, ValueError) as error:
        raise _store_error(db_uri, name, action, error) from error


def connect(
    db_uri: str,
    storage_options: dict | None = None,
    *,
    read_consistency_interval: timedelta | None = None,
) -> lancedb.DBConnection:
    """Open the LanceDB database at `db_uri` (a folder or s3://bucket/prefix).

    `storage_options`: LanceDB's S3 options (Settings.lancedb_options(db_uri)); none for local folders.
    `read_consistency_interval` makes open tables check for other writers' commits
    at most that often (None: a table handle sees its own writes only).
    """
    import lancedb

    with _store_errors(str(db_uri), None, "connect to"):
        return lancedb.connect(
            str(db_uri),
            storage_options=storage_options or None,
            read_consistency_interval=read_consistency_interval,
        )


@contextmanager
def write_lock(db: lancedb.DBConnection, name: str, report: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the write lock of table `name` (see store.locking): every commit to a table takes it.

    `report` hears, every few seconds, what a blocked writer waits for (default: this module's log).
    """
    with table_lock(db.uri, name, getattr(db, "storage_options", None), report=report or log.warning):
        yield


def table_name(model: str, modality: str) -> str:
    """The embedding table of one model and modality."""
    return f"{model}__{modality}"


def is_attribute_column(name: str) -> bool:
    """Whether `name` is a product-attribute column (stored as top-level Utf8)."""
    return name not in RESERVED_COLUMNS and name != ATTRIBUTES


def embedding_schema(dim: int, attribute_names: Sequence[str]) -> pa.Schema:
    """Schema of an embedding table: text columns, the attributes JSON, one Utf8
    column per attribute, and the float32 vector of size `dim`."""
    if dim < 1:
        raise ValueError(f"embedding dimension must be positive, got {dim}")
    names = list(attribute_names)
    clashing = [name for name in names if not is_attribute_column(name)]
    if clashing:
        raise ValueError(f"attribute names {clashing} clash with reserved embedding-table columns")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"attribute names repeated: {repeated}")
    fields = [pa.field(name, pa.utf8()) for name in TEXT_COLUMNS]
    fields += [pa.field(name, pa.utf8()) for name in names]
    fields.append(pa.field(VECTOR, pa.list_(pa.float32(), dim)))
    return pa.schema(fields)


def open_existing_table(db: lancedb.DBConnection, name: str) -> Table | None:
    """The table `name`, or None when the database has no such table."""
    with _store_errors(db.uri, name, "open"):
        try:
            return db.open_table(name)
        except ValueError:
            if name in db:
                raise
            return None


def embedded_keys(db: lancedb.DBConnection, name: str) -> pl.DataFrame:
    """item_id, content_hash and model_version of every row of table `name`
    (an empty frame with those columns when the table does not exist)."""
    empty = pl.DataFrame(schema={column: pl.Utf8 for column in KEY_COLUMNS})
    table = open_existing_table(db, name)
    if table is None:
        return empty
    missing = [column for column in KEY_COLUMNS if column not in table.schema.names]
    if missing:
        raise SchemaMismatchError(f"table {name!r} lacks the key columns {missing}")
    with _store_errors(db.uri, name, "read the keys of"):
        keys = table.search().select(list(KEY_COLUMNS)).limit(None).to_arrow()
    return pl.concat([empty, pl.from_arrow(keys).cast(pl.Utf8)], how="vertical")


def upsert_rows(
    db: lancedb.DBConnection, name: str, rows: pa.Table, *, report: Callable[[str], None] | None = None
) -> int:
    """Insert or replace `rows` in table `name` by item_id; returns the rows written.

    Creates the table on first write, adds attribute and derived columns the table lacks
    (null-filled Utf8), null-fills attribute and derived columns the rows lack, and retries
    commit conflicts with backoff. Re-running the same write changes nothing; each
    attempt holds the table's write lock, so concurrent writers never duplicate an id.
    """
    prepared = _prepared_rows(name, rows)
    if prepared.num_rows == 0:
        return 0

    def locked_upsert() -> int:
        with write_lock(db, name, report), _store_errors(db.uri, name, "write to"):
            return _upsert_once(db, name, prepared)

    return retry_commit_conflicts(locked_upsert)


def delete_items(
    db: lancedb.DBConnection, name: str, item_ids: Sequence[str], *, report: Callable[[str], None] | None = None
) -> int:
    """Delete the rows of table `name` whose item_id is in `item_ids`; returns how many.

    Ids are passed as typed literals, never spliced into SQL, so any id is safe.
    """
    ids = sorted({str(item_id) for item_id in item_ids if item_id is not None})
    if not ids:
        return 0
    table = open_existing_table(db, name)
    if table is None:
        return 0
    deleted = 0
    for start in range(0, len(ids), DELETE_CHUNK):
        chunk = ids[start : start + DELETE_CHUNK]

        def locked_delete(chunk=chunk):
            from lancedb.expr import col

            with write_lock(db, name, report), _store_errors(db.uri, name, "delete from"):
                table.checkout_latest()
                return table.delete(col(ITEM_ID).isin(chunk))

        deleted += retry_commit_conflicts(locked_delete).num_deleted_rows
    return deleted


def duplicated_item_ids(keys: pl.DataFrame) -> list[str]:
    """The item ids that occur more than once in `keys` (embedded_keys output), sorted."""
    counts = keys.group_by(ITEM_ID).len().filter(pl.col("len") > 1)
    return sorted(counts[ITEM_ID].to_list())


def repair_duplicates(db: lancedb.DBConnection, name: str, item_ids: Sequence[str]) -> int:
    """Keep one row per id of `item_ids` in table `name` (the last written); returns rows removed.

    For tables written before writes were serialised: a merge-insert updates every copy of a
    duplicated id, so duplicates never went away by themselves. One delete per 2,000 extra
    copies, under the write lock.
    """
    ids = sorted(set(item_ids))
    if not ids:
        return 0
    from lancedb.expr import col

    with write_lock(db, name), _store_errors(db.uri, name, "repair duplicates in"):
        table = db.open_table(name)

        found = table.search().where(col(ITEM_ID).isin(ids)).select([ITEM_ID]).with_row_id(True).limit(None)
        copies = pl.from_arrow(found.to_arrow()).sort("_rowid")
        extra = copies.filter(pl.col("_rowid") != pl.col("_rowid").max().over(ITEM_ID))["_rowid"].to_list()
        for start in range(0, len(extra), DELETE_CHUNK):  # row ids are integers: nothing to quote
            table.delete(f"_rowid IN ({', '.join(str(int(row)) for row in extra[start : start + DELETE_CHUNK])})")
    return len(extra)


def _upsert_once(db: lancedb.DBConnection, name: str, rows: pa.Table) -> int:
    """One write under the table's lock: create the table, or merge-insert into its latest version."""
    table = open_existing_table(db, name)
    if table is None:
        for column in DERIVED_COLUMNS:
            if column not in rows.column_names:
                rows = rows.append_column(pa.field(column, pa.utf8()), pa.nulls(rows.num_rows, pa.utf8()))
        db.create_table(name, data=rows)
        return rows.num_rows
    aligned = _aligned_to_table(table, name, rows)
    result = (
        table.merge_insert(ITEM_ID)
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute(aligned)
    )
    return result.num_inserted_rows + result.num_updated_rows


def _prepared_rows(name: str, rows: pa.Table) -> pa.Table:
    """Validate the key and normalise text-like columns to Utf8."""
    if not isinstance(rows, pa.Table):
        raise TypeError(f"rows for table {name!r} must be a pyarrow.Table, got {type(rows).__name__}")
    if ITEM_ID not in rows.column_names:
        raise SchemaMismatchError(f"rows for table {name!r} have no {ITEM_ID!r} column")
    repeated = [column for column in rows.column_names if rows.column_names.count(column) > 1]
    if repeated:
        raise SchemaMismatchError(f"rows for table {name!r} repeat columns {sorted(set(repeated))}")
    for index, field in enumerate(rows.schema):
        text_like = field.type in (pa.large_string(), pa.string_view(), pa.null())
        attribute = is_attribute_column(field.name) and not pa.types.is_string(field.type)
        if field.name != VECTOR and (text_like or attribute):
            try:
                rows = rows.set_column(index, pa.field(field.name, pa.utf8()), rows.column(index).cast(pa.utf8()))
            except _CAST_ERRORS as error:
                raise SchemaMismatchError(
                    f"column {field.name!r} of rows for table {name!r} is {field.type}, not text: {error}"
                ) from error
    if VECTOR in rows.column_names and not pa.types.is_fixed_size_list(rows.schema.field(VECTOR).type):
        raise SchemaMismatchError(
            f"the {VECTOR!r} column of rows for table {name!r} is {rows.schema.field(VECTOR).type}; "
            "vectors must be a fixed-size list of float32 (build rows with embedding_schema)"
        )
    ids = rows.column(ITEM_ID)
    if ids.null_count:
        raise SchemaMismatchError(f"rows for table {name!r} have {ids.null_count} null item_id(s)")
    counts = pl.from_arrow(rows.select([ITEM_ID])).group_by(ITEM_ID).len().filter(pl.col("len") > 1)
    if counts.height:
        sample = sorted(counts[ITEM_ID].to_list())[:5]
        raise SchemaMismatchError(
            f"rows for table {name!r} repeat {counts.height} item_id(s), e.g. {sample}; "
            "an upsert needs one row per item"
        )
    return rows


def _aligned_to_table(table: Table, name: str, rows: pa.Table) -> pa.Table:
    """`rows` in the table's schema: new attribute columns added to the table,
    attribute columns the rows lack filled with nulls, types cast to the table's."""
    new_columns = [column for column in rows.column_names if column not in table.schema.names]
    new_columns += [column for column in DERIVED_COLUMNS if column not in table.schema.names + new_columns]
    not_attributes = [
        column for column in new_columns if not is_attribute_column(column) and column not in DERIVED_COLUMNS
    ]
    if not_attributes:
        raise SchemaMismatchError(
            f"rows for table {name!r} have columns the table lacks: {not_attributes}; "
            f"only attribute columns and {list(DERIVED_COLUMNS)} are added automatically"
        )
    if new_columns:
        table.add_columns([pa.field(column, pa.utf8()) for column in new_columns])
    arrays = []
    for field in table.schema:
        if field.name in rows.column_names:
            column = rows.column(field.name)
            try:
                arrays.append(column.cast(field.type))
            except _CAST_ERRORS as error:
                raise SchemaMismatchError(
                    f"column {field.name!r} of rows for table {name!r} is {column.type}, "
                    f"the table stores {field.type}: {error}"
                ) from error
        elif is_attribute_column(field.name) or field.name in (ATTRIBUTES, *DERIVED_COLUMNS):
            arrays.append(pa.nulls(rows.num_rows, field.type))
        else:
            raise SchemaMismatchError(f"rows for table {name!r} lack the column {field.name!r}")
    return pa.Table.from_arrays(arrays, schema=table.schema)


def retry_commit_conflicts(write: Callable[[], T]) -> T:
    """Run `write`, retrying commit conflicts with jittered exponential backoff."""
    delay = 0.05
    attempt = 1
    while True:
        try:
            return write()
        except (ValueError, RuntimeError, OSError) as error:
            retryable = not isinstance(error, SchemaMismatchError) and any(
                marker in str(error).lower() for marker in _RETRYABLE_MARKERS
            )
            if not retryable or attempt >= MAX_WRITE_ATTEMPTS:
                raise
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 2.0)
        attempt += 1
