"""Materialization metadata a Dagster UI user wants to see: counts, previews, column schemas."""

from __future__ import annotations

import polars as pl
from dagster import MetadataValue, TableColumn, TableSchema


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


def column_schema(frame: pl.DataFrame) -> MetadataValue:
    """The frame's columns and types, shown by the UI as the asset's schema."""
    return MetadataValue.table_schema(
        TableSchema(columns=[TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])
    )


def frame_metadata(frame: pl.DataFrame, preview: pl.DataFrame | None = None) -> dict:
    """Row count, column schema and a preview table for a DataFrame asset."""
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame),
        "preview": markdown_table(frame if preview is None else preview),
    }
