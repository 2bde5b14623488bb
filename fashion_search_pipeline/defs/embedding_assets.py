"""Embedding assets: one LanceDB table per model and modality, kept in line with the catalog."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    asset,
)

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.defs.metadata import markdown_table
from fashion_search_pipeline.defs.resources import CatalogStorage, ModelRegistry
from fashion_search_pipeline.embedding_sync import sync_embeddings
from fashion_search_pipeline.store.indexes import ensure_indexes

PREVIEW_COLUMNS = (C.ITEM_ID, C.DROP_ID, C.DESCRIPTION, C.MODEL_VERSION, C.CONTENT_HASH)


def embed_partition(
    context: AssetExecutionContext,
    catalog_items: pl.DataFrame,
    storage: CatalogStorage,
    models: ModelRegistry,
) -> MaterializeResult:
    """CLIP vectors for one model and modality in LanceDB table <model>__<modality>.

    Only items whose content hash this model version has not embedded yet are encoded;
    rows are merge-inserted by item_id, and items gone from the catalog are deleted.
    """
    dimensions = context.partition_key.keys_by_dimension
    model_name, modality = dimensions["model"], dimensions["modality"]
    clip = models.load(model_name)
    db = storage.connect_db()
    report = sync_embeddings(
        catalog_items, db, clip, modality, read_image=storage.read_bytes, log=context.log.info
    )
    metadata = {
        "table": report.table,
        "model_version": clip.version,
        "device": str(clip.device),
        "dagster/row_count": report.rows_after,
        "catalog_items": report.catalog_items,
        "embedded": report.embedded,
        "skipped_up_to_date": report.skipped,
        "removed": report.removed,
        "seconds": round(report.seconds, 3),
        "items_per_second": round(report.items_per_second, 2),
    }
    if report.rows_after:
        table = db.open_table(report.table)
        metadata["indexes"] = MetadataValue.json(ensure_indexes(table))
        preview = pl.from_arrow(table.head(10)).select(PREVIEW_COLUMNS)
        metadata["preview"] = markdown_table(preview)
    return MaterializeResult(metadata=metadata)


def build_embeddings_asset(partitions_def: MultiPartitionsDefinition) -> AssetsDefinition:
    """The `embeddings` asset over the given model x modality partitions."""
    return asset(
        name="embeddings",
        partitions_def=partitions_def,
        group_name="embeddings",
        kinds={"pytorch", "lancedb"},
        pool="embedding",
        automation_condition=AutomationCondition.eager(),
    )(embed_partition)
