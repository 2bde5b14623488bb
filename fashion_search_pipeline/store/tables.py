"""LanceDB embedding tables: connection, schema, idempotent upserts and deletions.

One table per model and modality, named `<model>__<modality>`, keyed by item_id.
Writes are merge-inserts keyed by item_id, so re-running a write never duplicates
rows, and concurrent writers (two Dagster runs, a backfill) are safe: table creation
is serialised (LanceDB's is not atomic), a writer whose rows lack attribute columns
another writer added null-fills them, and commit conflicts are retried with backoff.
"""

from __future__ import annotations

import fcntl
import hashlib
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import lancedb
import polars as pl
import pyarrow as pa
from lancedb.expr import col
from lancedb.table import Table

from fashion_search_pipeline.columns import (
    CONTENT_HASH,
    DESCRIPTION,
    DROP_ID,
    IMAGE_URI,
    ITEM_ID,
    MODEL,
    MODEL_VERSION,
    RESERVED_COLUMNS,
    VECTOR,
)
from fashion_search_pipeline.config import lancedb_options_for

# JSON object of an item's attribute columns, kept for display next to the
# top-level attribute columns that `where` filters use.
ATTRIBUTES = "attributes"

TEXT_COLUMNS = (ITEM_ID, DROP_ID, IMAGE_URI, DESCRIPTION, CONTENT_HASH, MODEL, MODEL_VERSION, ATTRIBUTES)
KEY_COLUMNS = (ITEM_ID, CONTENT_HASH, MODEL_VERSION)

MAX_WRITE_ATTEMPTS = 8
DELETE_CHUNK = 2_000
_RETRYABLE_MARKERS = ("conflict", "concurrent", "already exists", "was not found", "retry")
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)

T = TypeVar("T")


class ModelTablesMissingError(LookupError):
    """The database lacks the embedding tables a search or an evaluation needs for a model."""


class SchemaMismatchError(ValueError):
    """Rows that cannot be written to a table without losing or inventing data."""


def connect(
    db_uri: str,
    storage_options: dict | None = None,
    *,
    read_consistency_interval: timedelta | None = None,
) -> lancedb.DBConnection:
    """Open the LanceDB database at `db_uri` (a folder or s3://bucket/prefix).

    Without `storage_options`, S3 URIs use the S3 settings from the environment.
    `read_consistency_interval` makes open tables check for other writers' commits
    at most that often (None: a table handle sees its own writes only).
    """
    options = storage_options if storage_options is not None else lancedb_options_for(str(db_uri))
    return lancedb.connect(
        str(db_uri),
        storage_options=options or None,
        read_consistency_interval=read_consistency_interval,
    )


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
    keys = table.search().select(list(KEY_COLUMNS)).limit(None).to_arrow()
    return pl.concat([empty, pl.from_arrow(keys).cast(pl.Utf8)], how="vertical")


def upsert_rows(db: lancedb.DBConnection, name: str, rows: pa.Table) -> int:
    """Insert or replace `rows` in table `name` by item_id; returns the rows written.

    Creates the table on first write, adds attribute columns the table lacks
    (null-filled Utf8), null-fills attribute columns the rows lack, and retries
    commit conflicts with backoff. Re-running the same write changes nothing.
    """
    prepared = _prepared_rows(name, rows)
    if prepared.num_rows == 0:
        return 0
    return retry_commit_conflicts(lambda: _upsert_once(db, name, prepared))


def delete_items(db: lancedb.DBConnection, name: str, item_ids: Sequence[str]) -> int:
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
        result = retry_commit_conflicts(lambda: table.delete(col(ITEM_ID).isin(chunk)))
        deleted += result.num_deleted_rows
    return deleted


def _upsert_once(db: lancedb.DBConnection, name: str, rows: pa.Table) -> int:
    table = open_existing_table(db, name)
    if table is None:
        with _creation_lock(db.uri, name):
            table = open_existing_table(db, name)
            if table is None:
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


@contextmanager
def _creation_lock(db_uri: str, name: str) -> Iterator[None]:
    """Serialise table creation across threads and processes of this machine.

    LanceDB does not make creation atomic: of two writers that both find the
    table missing, the later create is committed as an overwrite of the first
    one's rows. Writers on other machines (a shared s3:// database) are not
    covered; create each table from one place first in that setting.
    """
    key = hashlib.sha256(f"{db_uri}\0{name}".encode()).hexdigest()[:32]
    folder = Path(tempfile.gettempdir()) / "fashion-search-table-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    not_attributes = [column for column in new_columns if not is_attribute_column(column)]
    if not_attributes:
        raise SchemaMismatchError(
            f"rows for table {name!r} have columns the table lacks: {not_attributes}; "
            "only attribute columns are added automatically"
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
        elif is_attribute_column(field.name) or field.name == ATTRIBUTES:
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
