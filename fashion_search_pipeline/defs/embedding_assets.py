"""Embedding assets: one LanceDB table per model and modality, kept in line with the catalog."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    asset,
)

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.catalog.state import deleted_item_ids
from fashion_search_pipeline.defs.automation import DOMAIN_CLIP_ASSET, embeddings_automation
from fashion_search_pipeline.defs.metadata import embedding_table_schema, lance_schema, relative_to_home, table_preview
from fashion_search_pipeline.defs.resources import CatalogStorage, EmbeddingEngine, ModelRegistry
from fashion_search_pipeline.embedding_sync import RemovalGuard, sync_embeddings
from fashion_search_pipeline.store.indexes import ensure_indexes
from fashion_search_pipeline.store.tables import write_lock

PREVIEW_COLUMNS = (C.ITEM_ID, C.DROP_ID, C.DESCRIPTION, C.MODEL_VERSION, C.CONTENT_HASH)
GROUP = "embeddings"
OWNERS = ["team:search"]


class EmbeddingsConfig(Config):
    """Guard against emptying a table when the catalog input shrank (see embedding_sync.RemovalGuard)."""

    max_removed_share: float = 0.10
    force_removals: bool = False


def embed_partition(
    context: AssetExecutionContext,
    config: EmbeddingsConfig,
    catalog_items: pl.DataFrame,
    storage: CatalogStorage,
    models: ModelRegistry,
    engine: EmbeddingEngine,
) -> MaterializeResult:
    """CLIP vectors for one model and modality in the LanceDB table `model__modality`.

    Only items whose content hash this model version has not embedded yet are encoded;
    rows are merge-inserted by item_id, and items gone from the catalog are deleted.
    A retrained domain-clip re-embeds its two partitions (see defs.automation).
    """
    dimensions = context.partition_key.keys_by_dimension
    model_name, modality = dimensions["model"], dimensions["modality"]
    clip = models.load(model_name)
    db = storage.connect_db()
    report = sync_embeddings(
        catalog_items,
        db,
        clip,
        modality,
        read_image=storage.read_bytes,
        log=context.log.info,
        engine=engine.engine_for(storage),
        removal_guard=RemovalGuard(
            config.max_removed_share,
            config.force_removals,
            lambda: deleted_item_ids(storage.landing_uri, storage.landing_options()),
        ),
    )
    metadata = {
        # Dagster's typed table metadata: the UI shows row counts and the table name in the catalog.
        "dagster/table_name": report.table,
        "dagster/row_count": report.rows_after,
        "dagster/partition_row_count": report.rows_after,
        "dagster/storage_kind": "lancedb",
        "dagster/uri": MetadataValue.text(relative_to_home(f"{storage.db_uri.rstrip('/')}/{report.table}.lance", storage.home)),
        "table": report.table,
        "model_version": clip.version,
        "device": str(clip.device),
        "engine": engine.kind,
        "catalog_items": report.catalog_items,
        "embedded": report.embedded,
        "skipped_up_to_date": report.skipped,
        "removed": report.removed,
        "removal_withheld": report.removal_withheld or "",
        "seconds": round(report.seconds, 3),
        "items_per_second": round(report.items_per_second, 2),
    }
    if report.rows_after:
        table = db.open_table(report.table)
        with write_lock(db, report.table):  # index builds commit too: one writer per table
            metadata["indexes"] = MetadataValue.json(ensure_indexes(table))
        metadata["dagster/column_schema"] = lance_schema(table.schema, model_name, clip.version)
        metadata["preview"] = table_preview(pl.from_arrow(table.head(10)).select(PREVIEW_COLUMNS))
    return MaterializeResult(metadata=metadata)


def build_embeddings_asset(
    partitions_def: MultiPartitionsDefinition, models_file: str | None, models_root: str,
    last_good_file: str | None = None,
) -> AssetsDefinition:
    """The `embeddings` asset over the given model x modality partitions (registry: `models_file`, published
    models under `models_root`)."""
    return asset(
        name="embeddings",
        partitions_def=partitions_def,
        deps=[AssetKey(DOMAIN_CLIP_ASSET)],
        metadata={"dagster/column_schema": embedding_table_schema()},
        group_name=GROUP,
        kinds={"pytorch", "lancedb"},
        owners=OWNERS,
        tags={"stage": "embed", "store": "lancedb"},
        pool="embedding",
        automation_condition=embeddings_automation(models_file, models_root, last_good_file),
    )(embed_partition)
