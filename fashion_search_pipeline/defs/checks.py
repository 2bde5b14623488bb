"""Asset checks on the catalog and the embedding tables.

    cleaned_captions  drop_reject_rate              WARN   a drop rejects more than a configurable share of rows
    catalog_items     catalog_item_ids_unique       ERROR  blocking: one row per item id
    embeddings        tables_match_catalog          ERROR  blocking: each loadable model's tables hold exactly
                                                           the catalog's items, all at the model's current version
    embeddings        index_coverage                WARN   rows the vector or full-text index does not cover yet
    embeddings        ann_index_recall              ERROR  the ANN index finds >= 95% of the exact top 10
    embeddings        models_available              WARN   registry models whose weights cannot be found here, and a
                                                           registry file served from its last good copy

Checks of a partitioned asset run with each partition's run and look at that partition only; run by
themselves (no partition) they look at every partition.
"""


import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    AssetKey,
    Config,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.defs.resources import CatalogStorage, ModelRegistry
from fashion_search_pipeline.evaluation.ann_recall import ann_recall_at_k
from fashion_search_pipeline.markdown import markdown_table
from fashion_search_pipeline.models.availability import registry_availability
from fashion_search_pipeline.store.tables import open_existing_table, table_name

ANN_MIN_RECALL = 0.95
EMBEDDINGS = "embeddings"


def _markdown(header: tuple[str, ...], rows: list[tuple]) -> MetadataValue:
    return MetadataValue.md(markdown_table(header, rows) if rows else "_(none)_")


def _partitions(context: AssetCheckExecutionContext, models: ModelRegistry) -> list[tuple[str, str]]:
    """(model, modality) of the run's embeddings partition, else of every registered model."""
    if context.has_partition_key:
        dims = context.partition_key.keys_by_dimension
        return [(dims["model"], dims["modality"])]
    return [(model, modality) for model in sorted(models.specs()) for modality in C.MODALITIES]


class RejectRateConfig(Config):
    """How many of a drop's caption rows may be rejected before the check warns."""

    max_reject_share: float = Field(default=0.2, ge=0, le=1, description="Largest share of rejected rows (0.2: 20%).")


@asset_check(asset="cleaned_captions", description="A drop rejects at most a configurable share of its rows "
             "(default 20%); above it, a warning listing the reasons.")
def drop_reject_rate(context: AssetCheckExecutionContext, config: RejectRateConfig) -> AssetCheckResult:
    """Share of rejected rows of the drop materialized in this run (the latest one when run alone)."""
    records = context.instance.fetch_materializations(AssetKey("cleaned_captions"), limit=100).records
    mine = [r for r in records if r.run_id == context.run.run_id] or records[:1]
    if not mine:
        return AssetCheckResult(passed=True, description="no drop has been cleaned yet")
    record = mine[0]
    metadata = record.asset_materialization.metadata
    accepted, rejected = metadata["accepted"].value, metadata["rejected"].value
    share = rejected / (accepted + rejected) if accepted + rejected else 0.0
    reasons = {reason: n for reason, n in (metadata["rejects_by_reason"].value or {}).items() if n}
    return AssetCheckResult(
        passed=share <= config.max_reject_share,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "drop": record.partition_key or "",
            "reject_share": round(share, 4),
            "max_reject_share": config.max_reject_share,
            "rejected": rejected,
            "rows": accepted + rejected,
            "reasons": MetadataValue.json(reasons),
        },
        description=f"drop {record.partition_key}: {rejected} of {accepted + rejected} rows rejected "
        f"({share:.0%}; allowed {config.max_reject_share:.0%})"
        + (": " + ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) if reasons else ""),
    )


@asset_check(asset="catalog_items", blocking=True, description="Every item id appears once in the catalog "
             "(an error: duplicate ids would embed and search one product twice).")
def catalog_item_ids_unique(catalog_items: pl.DataFrame) -> AssetCheckResult:
    """Item ids that appear more than once in catalog_items."""
    counts = catalog_items.group_by(C.ITEM_ID).len().filter(pl.col("len") > 1).sort(C.ITEM_ID)
    return AssetCheckResult(
        passed=counts.height == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "items": catalog_items.height,
            "duplicated_ids": counts.height,
            "duplicates": _markdown(("item_id", "rows"), counts.head(20).rows()),
        },
        description=f"{counts.height} item ids appear more than once" if counts.height else "every item id is unique",
    )


@asset_check(
    asset=EMBEDDINGS,
    additional_ins={"catalog_items": AssetIn("catalog_items")},
    blocking=True,
    description="Each loadable model's tables hold exactly the catalog's items, every row made by the model's "
    "current version (an error: search would miss items, show deleted ones, or mix versions).",
)
def tables_match_catalog(
    context: AssetCheckExecutionContext, catalog_items: pl.DataFrame, storage: CatalogStorage, models: ModelRegistry
) -> AssetCheckResult:
    """Compare each table's item ids and model versions with the catalog."""
    catalog_ids = set(catalog_items[C.ITEM_ID].to_list())
    available = registry_availability(models.specs())
    db = storage.connect_db()
    rows, problems = [], []
    for model, modality in _partitions(context, models):
        name = table_name(model, modality)
        if model not in available or not available[model].available:
            rows.append((name, "–", "–", "–", "–", available[model].describe() if model in available else "not registered"))
            continue
        version = models.load(model).version
        table = open_existing_table(db, name)
        keys = table.to_arrow().select([C.ITEM_ID, C.MODEL_VERSION]) if table is not None else None
        ids = pl.from_arrow(keys) if keys is not None else pl.DataFrame(schema={C.ITEM_ID: pl.Utf8, C.MODEL_VERSION: pl.Utf8})
        table_ids = set(ids[C.ITEM_ID].to_list())
        missing, extra = len(catalog_ids - table_ids), len(table_ids - catalog_ids)
        stale = ids.filter(pl.col(C.MODEL_VERSION) != version).height
        duplicated = ids.height - len(table_ids)
        status = "ok" if not (missing or extra or stale or duplicated) else "mismatch"
        if status != "ok":
            problems.append(name)
        rows.append((name, missing, extra, stale, duplicated, status))
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "catalog_items": len(catalog_ids),
            "tables": _markdown(("table", "missing items", "extra items", "other version", "duplicate ids", "status"), rows),
        },
        description=f"out of line with the catalog: {', '.join(problems)}" if problems else f"{len(rows)} tables checked",
    )


class IndexCoverageConfig(Config):
    """How many rows may wait for the indexes before the check warns."""

    max_unindexed_share: float = Field(
        default=0.1, ge=0, le=1, description="Largest share of rows the vector or full-text index does not cover yet."
    )


@asset_check(asset=EMBEDDINGS, description="Rows not covered by the vector or full-text index stay under a share "
             "(a warning: LanceDB leaves new rows unindexed until the indexes are optimized; searches still find "
             "them by a slower flat scan).")
def index_coverage(
    context: AssetCheckExecutionContext, config: IndexCoverageConfig, storage: CatalogStorage, models: ModelRegistry
) -> AssetCheckResult:
    """Unindexed rows per index of each table (tables without an index are scanned exactly and count as covered)."""
    db = storage.connect_db()
    rows, worst = [], 0.0
    for model, modality in _partitions(context, models):
        table = open_existing_table(db, table_name(model, modality))
        if table is None:
            continue
        total = table.count_rows()
        for index in table.list_indices():
            stats = table.index_stats(index.name)
            unindexed = stats.num_unindexed_rows if stats is not None else 0
            share = unindexed / total if total else 0.0
            worst = max(worst, share)
            rows.append((table.name, index.name, index.index_type, unindexed, total, f"{share:.1%}"))
    return AssetCheckResult(
        passed=worst <= config.max_unindexed_share,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "max_unindexed_share": config.max_unindexed_share,
            "worst_unindexed_share": round(worst, 4),
            "indexes": _markdown(("table", "index", "type", "unindexed rows", "rows", "share"), rows),
        },
        description=f"worst index leaves {worst:.1%} of rows unindexed (allowed {config.max_unindexed_share:.0%})",
    )


@asset_check(asset=EMBEDDINGS, description=f"Each table's vector search (ANN index) finds at least {ANN_MIN_RECALL:.0%} "
             "of the exact top 10 (recall@10 against brute force).")
def ann_index_recall(context: AssetCheckExecutionContext, storage: CatalogStorage, models: ModelRegistry) -> AssetCheckResult:
    """recall@10 of each embedding table's vector search against exact cosine search."""
    db = storage.connect_db()
    recalls = []
    for model, modality in _partitions(context, models):
        table = open_existing_table(db, table_name(model, modality))
        if table is not None:
            recalls.append(ann_recall_at_k(table))
    measured = [r for r in recalls if r.recall is not None]
    failing = [r.table for r in measured if r.recall < ANN_MIN_RECALL]
    rows = [
        (r.table, r.rows, r.index_type or "none (exact scan)", "–" if r.recall is None else f"{r.recall:.3f}", r.queries)
        for r in recalls
    ]
    metadata = {"tables": _markdown(("table", "rows", "index", "recall@10", "queries"), rows), "threshold": ANN_MIN_RECALL}
    if measured:
        metadata["min_recall"] = min(r.recall for r in measured)
    return AssetCheckResult(
        passed=not failing,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=f"below {ANN_MIN_RECALL}: {', '.join(failing)}" if failing else f"{len(measured)} tables checked",
    )


@asset_check(asset=EMBEDDINGS, description="Every registry model's weights can be found here; the others are listed "
             "as 'unavailable: reason' with the fix, and automation does not launch their partitions. A registry "
             "file that no longer loads is named here, with its line, while its last good copy is served.")
def models_available(models: ModelRegistry) -> AssetCheckResult:
    """The availability of every registered model (a warning for each one that cannot be loaded here,
    and for a registry file served from its last good copy)."""
    statuses = registry_availability(models.specs())
    unavailable = {name: status for name, status in statuses.items() if not status.available}
    metadata = {
        "models": _markdown(("model", "status"), [(name, status.describe()) for name, status in statuses.items()]),
        "unavailable": MetadataValue.json({name: status.describe() for name, status in unavailable.items()}),
    }
    problems = [f"models file {models.problem}"] if models.problem else []
    if models.problem:
        metadata["models_file_problem"] = models.problem
    problems += [f"{name}: {status.describe()}" for name, status in unavailable.items()]
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
        description="; ".join(problems) or f"all {len(statuses)} models available",
    )


CHECKS = [drop_reject_rate, catalog_item_ids_unique, tables_match_catalog, index_coverage, ann_index_recall, models_available]
