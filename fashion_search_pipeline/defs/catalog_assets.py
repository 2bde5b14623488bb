"""Catalog assets: one drop's captions, images and cleaned rows, and the current catalog."""

import polars as pl
from dagster import AssetExecutionContext, AutomationCondition, MetadataValue, Output, asset

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.catalog.captions import read_captions
from fashion_search_pipeline.catalog.cleaning import accepted_items, clean_captions, reject_counts
from fashion_search_pipeline.catalog.drops import DropLocation, validate_drop_id
from fashion_search_pipeline.catalog.images import build_manifest
from fashion_search_pipeline.catalog.state import DropChanges, apply_drops, read_deletions
from fashion_search_pipeline.defs.metadata import frame_metadata, markdown_table, relative_to_home
from fashion_search_pipeline.defs.partitions import catalog_drops
from fashion_search_pipeline.defs.resources import CatalogStorage

GROUP = "catalog"
OWNERS = ["team:catalog"]
DROP_ASSETS = ("raw_captions", "image_manifest", "catalog_deletions", "cleaned_captions")


def _drop(context: AssetExecutionContext, storage: CatalogStorage) -> DropLocation:
    return DropLocation(storage.landing_uri, validate_drop_id(context.partition_key))


@asset(partitions_def=catalog_drops, group_name=GROUP, kinds={"polars", "s3"}, owners=OWNERS, tags={"stage": "ingest"})
def raw_captions(context: AssetExecutionContext, storage: CatalogStorage) -> Output[pl.DataFrame]:
    """The drop's captions.csv rows as written: every column, the source line, and a parse error if any."""
    drop = _drop(context, storage)
    frame = read_captions(drop, storage.landing_options())
    errors = frame.filter(pl.col(C.PARSE_ERROR).is_not_null())
    return Output(
        frame,
        metadata={
            **frame_metadata(frame),
            "source": MetadataValue.path(relative_to_home(drop.captions_uri, storage.home)),
            "parse_errors": errors.height,
        },
    )


@asset(partitions_def=catalog_drops, group_name=GROUP, kinds={"polars", "s3"}, owners=OWNERS, tags={"stage": "ingest"})
def image_manifest(context: AssetExecutionContext, storage: CatalogStorage) -> Output[pl.DataFrame]:
    """Every file of the drop: uri, bytes, sha256, width, height, and whether it decodes (with the error)."""
    frame = build_manifest(_drop(context, storage), storage.landing_options())
    bad = frame.filter(~pl.col("decodable"))
    return Output(
        frame,
        metadata={
            **frame_metadata(frame),
            "decodable": frame.height - bad.height,
            "undecodable": bad.height,
            "total_bytes": int(frame["bytes"].sum() or 0),
            "undecodable_files": markdown_table(bad.select("image_path", "error")),
        },
    )


@asset(partitions_def=catalog_drops, group_name=GROUP, kinds={"polars"}, owners=OWNERS, tags={"stage": "ingest"})
def catalog_deletions(context: AssetExecutionContext, storage: CatalogStorage) -> Output[pl.DataFrame]:
    """Item ids the drop's deletions.csv removes from the catalog (none when the drop has no such file)."""
    ids = read_deletions(_drop(context, storage), storage.landing_options())
    frame = pl.DataFrame({C.ITEM_ID: ids}, schema={C.ITEM_ID: pl.Utf8})
    return Output(frame, metadata=frame_metadata(frame))


@asset(partitions_def=catalog_drops, group_name=GROUP, kinds={"polars"}, owners=OWNERS, tags={"stage": "ingest"})
def cleaned_captions(raw_captions: pl.DataFrame, image_manifest: pl.DataFrame) -> Output[pl.DataFrame]:
    """Caption rows joined to decodable images, normalised, with a stable item_id and content hash.

    Every row is kept: rejected ones carry status='rejected' and their reason.
    """
    frame = clean_captions(raw_captions, image_manifest)
    rejects = frame.filter(pl.col(C.STATUS) == C.REJECTED)
    counts = reject_counts(frame)
    accepted = frame.filter(pl.col(C.STATUS) == C.ACCEPTED)
    preview = accepted.select(C.ITEM_ID, C.DESCRIPTION, *C.attribute_columns(frame.columns))
    metadata = {
        **frame_metadata(frame, preview=preview),
        "accepted": accepted.height,
        "rejected": rejects.height,
        "rejects_by_reason": MetadataValue.json(counts),
        **{f"rejected/{reason}": count for reason, count in sorted(counts.items()) if count},
    }
    if rejects.height:
        columns = (C.SOURCE_ROW, C.ITEM_ID, C.IMAGE_PATH, C.REJECT_REASON, C.REJECT_DETAIL)
        metadata["rejected_rows"] = markdown_table(rejects.select(columns), limit=20)
    return Output(frame, metadata=metadata)


# Eager, but not blocked by drops that are missing (failed or not yet run): the catalog is built
# from the drops that exist, so one broken drop never holds the others back.
CATALOG_AUTOMATION = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())


@asset(group_name=GROUP, kinds={"polars"}, owners=OWNERS, tags={"stage": "catalog"}, automation_condition=CATALOG_AUTOMATION)
def catalog_items(
    context: AssetExecutionContext,
    cleaned_captions: dict[str, pl.DataFrame],
    catalog_deletions: dict[str, pl.DataFrame],
) -> Output[pl.DataFrame]:
    """The current catalog: every drop applied in drop order (later items replace, deletions remove)."""
    changes = [
        DropChanges(
            drop_id=drop_id,
            items=accepted_items(frame),
            deleted_item_ids=tuple(catalog_deletions.get(drop_id, pl.DataFrame({C.ITEM_ID: []}))[C.ITEM_ID].to_list()),
        )
        for drop_id, frame in cleaned_captions.items()
    ]
    frame = apply_drops(changes)
    per_drop = frame.group_by(C.DROP_ID).len().sort(C.DROP_ID) if frame.height else frame.select(C.DROP_ID)
    context.log.info(f"catalog: {frame.height} items from {len(changes)} drops")
    return Output(
        frame,
        metadata={
            **frame_metadata(frame),
            "drops": len(changes),
            "items_by_drop": markdown_table(per_drop, limit=50),
        },
    )
