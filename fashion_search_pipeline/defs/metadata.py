"""Materialization metadata a Dagster UI user wants to see: counts, previews, column schemas."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pyarrow as pa
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from fashion_search_pipeline import columns as C

# What each column holds, shown in every asset's schema (attribute columns are described generically).
COLUMN_DESCRIPTIONS = {
    C.ITEM_ID: "stable product id (the captions.csv item_id, else the image file's stem)",
    C.DROP_ID: "the catalog drop the row came from (its folder name under drops/)",
    C.SOURCE_ROW: "line of the record in captions.csv (1 = first data row)",
    C.IMAGE_PATH: "image path as written in captions.csv, relative to the drop folder",
    C.IMAGE_URI: "full URI of the image file (local path or s3://)",
    C.DESCRIPTION: "product description, NFC- and whitespace-normalised",
    C.IMAGE_SHA256: "sha256 of the image file's bytes",
    C.CONTENT_HASH: "hash of image bytes + description: what an embedding was made from",
    C.STATUS: "accepted, or rejected (kept with its reason)",
    C.REJECT_REASON: "why the row was rejected (missing_image, empty_description, ...); null when accepted",
    C.REJECT_DETAIL: "the details of the rejection (file, error message)",
    C.PARSE_ERROR: "why the CSV record could not be read as a row; null when it could",
    C.ATTRIBUTES: "every product attribute as one JSON object (for display)",
    C.MODEL: "registry name of the model that made the vector",
    C.MODEL_VERSION: "version of the model that made the vector (checkpoint fingerprint or tag)",
    C.KEYWORD_TEXT: "description and text attributes in one column, full-text indexed: the keyword leg's text",
    "uri": "full URI of the file",
    "bytes": "file size in bytes",
    "sha256": "sha256 of the file's bytes",
    "width": "image width in pixels (null when undecodable)",
    "height": "image height in pixels (null when undecodable)",
    "decodable": "whether the file decodes as an image",
    "error": "why the file does not decode; null when it does",
}
ATTRIBUTE_DESCRIPTION = "product attribute from captions.csv (string), usable in `where` filters"


def markdown_table(frame: pl.DataFrame, limit: int = 10, max_chars: int = 60) -> MetadataValue:
    """The first `limit` rows as a markdown table (long cells shortened)."""
    head = frame.head(limit)
    if head.width == 0:
        return MetadataValue.md("_(no columns)_")

    def cell(value) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    if frame.height > limit:
        lines.append(f"\n_{limit} of {frame.height} rows_")
    return MetadataValue.md("\n".join(lines))


def describe_column(name: str) -> str:
    """What column `name` holds (an attribute column when it is none of the known ones)."""
    return COLUMN_DESCRIPTIONS.get(name, ATTRIBUTE_DESCRIPTION)


def column_schema(frame: pl.DataFrame) -> MetadataValue:
    """The frame's columns, types and descriptions, shown by the UI as the asset's schema."""
    return MetadataValue.table_schema(
        TableSchema(columns=[TableColumn(name, str(dtype), describe_column(name)) for name, dtype in frame.schema.items()])
    )


def lance_schema(schema: pa.Schema, model: str, model_version: str) -> MetadataValue:
    """A LanceDB embedding table's columns with descriptions (the vector's dimension, model and version)."""
    columns = []
    for field in schema:
        if field.name == C.VECTOR:
            description = f"{field.type.list_size}-dimensional CLIP embedding by {model} version {model_version} (cosine)"
        else:
            description = describe_column(field.name)
        columns.append(TableColumn(field.name, str(field.type), description))
    return MetadataValue.table_schema(TableSchema(columns=columns))


def embedding_table_schema() -> TableSchema:
    """The columns every embedding table has (attribute columns follow), for the asset's definition."""
    columns = [TableColumn(name, "string", describe_column(name)) for name in C.EMBEDDING_COLUMNS if name != C.VECTOR]
    columns.append(TableColumn(C.ATTRIBUTES, "string", describe_column(C.ATTRIBUTES)))
    columns.append(TableColumn("(attributes)", "string", "one column per product attribute (gender, colour, ...)"))
    columns.append(TableColumn(C.VECTOR, "fixed_size_list<float>", "the CLIP embedding (dimension: the model's)"))
    return TableSchema(columns=columns)


def table_preview(frame: pl.DataFrame, limit: int = 10, max_chars: int = 80) -> MetadataValue:
    """The first `limit` rows as Dagster table metadata (the UI renders it as a table)."""
    head = frame.head(limit)

    def cell(value):
        if value is None or isinstance(value, (bool, int, float)):
            return value
        text = str(value)
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    records = [TableRecord({name: cell(value) for name, value in row.items()}) for row in head.iter_rows(named=True)]
    schema = TableSchema(columns=[TableColumn(name, str(dtype), describe_column(name)) for name, dtype in head.schema.items()])
    return MetadataValue.table(records, schema=schema)


def relative_to_home(location: str | os.PathLike, home: str | os.PathLike | None) -> str:
    """A local path relative to the data folder `home` (CatalogStorage.home, Settings.home) when inside
    it; URIs, paths outside it and any path without a `home` as they are."""
    text = os.fspath(location)
    if "://" in text or home is None:
        return text
    try:
        return str(Path(text).resolve().relative_to(Path(home).resolve()))
    except ValueError:
        return text


def frame_metadata(frame: pl.DataFrame, preview: pl.DataFrame | None = None) -> dict:
    """Row count, column schema (with descriptions) and a preview table for a DataFrame asset."""
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame),
        "preview": table_preview(frame if preview is None else preview),
    }
