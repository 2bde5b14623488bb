"""product_clusters and product_tags: columns computed from the embeddings and written beside the
catalog attributes in the LanceDB tables; and the caption-image mismatch check (catalog QA)."""

from functools import partial

import polars as pl
import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.defs.resources import CatalogStorage, ModelRegistry
from fashion_search_pipeline.enrichment.caption_qa import DEFAULT_TOP, caption_mismatches
from fashion_search_pipeline.enrichment.clusters import DEFAULT_VARIANT_THRESHOLD, threshold_sweep
from fashion_search_pipeline.enrichment.clusters import product_clusters as cluster_items
from fashion_search_pipeline.enrichment.contact_sheet import contact_sheet
from fashion_search_pipeline.enrichment.tags import FacetReport, load_facets, tag_items
from fashion_search_pipeline.evaluation.held_out import HELD_OUT, card_subsets
from fashion_search_pipeline.evaluation.report import markdown_image
from fashion_search_pipeline.evaluation.vectors import ModelVectors, read_model_vectors
from fashion_search_pipeline.markdown import markdown_table
from fashion_search_pipeline.models.encoders import encode_texts
from fashion_search_pipeline.models.loading import ModelLoadError
from fashion_search_pipeline.models.published import training_cards
from fashion_search_pipeline.store.clusters import CLUSTER_ID, CLUSTER_SIZE
from fashion_search_pipeline.store.item_columns import write_item_columns
from fashion_search_pipeline.store.tables import ModelTablesMissingError, table_name

SHOWN_CLUSTERS = 6
SHOWN_MISMATCHES = 24
# After an embeddings run, never before one: a catalog change alone waits for the embeddings it
# triggers, and the partitions of a model that cannot load (missing for good) hold nothing back.
AFTER_EMBEDDINGS = (
    AutomationCondition.any_deps_updated().ignore(AssetSelection.assets("catalog_items")).since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after an embeddings run")


class ProductClustersConfig(Config):
    """Which model's image vectors cluster the products, and how close variants are."""

    model: str | None = Field(default=None, description="Registry model (default: the first with tables).")
    variant_threshold: float = Field(
        default=DEFAULT_VARIANT_THRESHOLD, gt=0, le=1,
        description="Image cosine at or above which two items of one article type are variants.",
    )


class ProductTagsConfig(Config):
    """The facet file of product_tags."""

    facets_file: str | None = Field(default=None, description="Facet YAML (default: the shipped facets.yaml).")


def _vectors(storage: CatalogStorage, models: ModelRegistry, name: str | None) -> ModelVectors:
    db = storage.connect_db()
    for candidate in [name] if name else sorted(models.specs()):
        try:
            return read_model_vectors(db, candidate)
        except ModelTablesMissingError:
            if name:
                raise
    raise ModelTablesMissingError("no registry model has embedding tables yet: materialize the embeddings first")


def _all_tables(models: ModelRegistry) -> list[str]:
    return [table_name(model, modality) for model in sorted(models.specs()) for modality in C.MODALITIES]


@asset(deps=[AssetKey("embeddings")], group_name="enrichment", kinds={"numpy", "lancedb"},
       automation_condition=AFTER_EMBEDDINGS)
def product_clusters(
    context: AssetExecutionContext,
    config: ProductClustersConfig,
    catalog_items: pl.DataFrame,
    storage: CatalogStorage,
    models: ModelRegistry,
) -> MaterializeResult:
    """Re-uploads (same image hash) and variants (image cosine >= threshold within an article type)
    get one cluster_id (and cluster_size), written into every embedding table: search's collapse=True."""
    vectors = _vectors(storage, models, config.model)
    hashes = catalog_items.select(C.ITEM_ID, C.IMAGE_SHA256) if C.IMAGE_SHA256 in catalog_items.columns else None
    items = vectors.items if hashes is None else vectors.items.join(hashes, on=C.ITEM_ID, how="left")
    clusters = cluster_items(items, vectors.image, config.variant_threshold)
    rows = pa.Table.from_pandas(clusters.select(C.ITEM_ID, CLUSTER_ID, CLUSTER_SIZE).to_pandas(), preserve_index=False)
    updated = write_item_columns(storage.connect_db(), _all_tables(models), rows)
    sizes = clusters.unique(CLUSTER_ID).sort([CLUSTER_SIZE, CLUSTER_ID], descending=[True, False])
    largest = sizes.filter(pl.col(CLUSTER_SIZE) > 1).head(SHOWN_CLUSTERS)[CLUSTER_ID].to_list()
    uris = dict(zip(vectors.items[C.ITEM_ID], vectors.items[C.IMAGE_URI]))
    sheet = contact_sheet(
        [(f"{size} items", [uris[i] for i in clusters.filter(pl.col(CLUSTER_ID) == cid)[C.ITEM_ID]])
         for cid, size in zip(largest, sizes.head(len(largest))[CLUSTER_SIZE])],
        storage.read_bytes,
    )
    joined = clusters["joined_by"].value_counts()
    return MaterializeResult(metadata={
        "model": vectors.model,
        "variant_threshold": config.variant_threshold,
        "items": clusters.height,
        "clusters": sizes.height,
        "clusters_with_variants": int((sizes[CLUSTER_SIZE] > 1).sum()),
        "largest_cluster": int(sizes[CLUSTER_SIZE].max() or 0),
        "joined_by": MetadataValue.json(dict(joined.iter_rows())),
        "tables_updated": MetadataValue.json(updated),
        "threshold_sweep": MetadataValue.json(threshold_sweep(items, vectors.image)),
        "largest_clusters": MetadataValue.md(markdown_image(sheet, "largest clusters")),
    })


@asset(deps=[AssetKey("embeddings")], group_name="enrichment", kinds={"numpy", "lancedb"},
       automation_condition=AFTER_EMBEDDINGS)
def product_tags(
    context: AssetExecutionContext,
    config: ProductTagsConfig,
    storage: CatalogStorage,
    models: ModelRegistry,
) -> MaterializeResult:
    """Zero-shot facets (pattern, sleeve, ... from the facet file) tagged from each item's image
    embedding, per model, written as `facet` and `facet_confidence` columns of its tables; mirrored
    facets abstain below the threshold that reaches the target precision, chosen for a trained model
    on the items its training held out (the ones it has not learned by heart)."""
    facets = load_facets(config.facets_file)
    db = storage.connect_db()
    metadata: dict = {"facets_file": facets.source, "target_precision": facets.target_precision}
    cards = training_cards(models.specs())
    for name in sorted(models.specs()):
        try:
            vectors = read_model_vectors(db, name)
            clip = models.load(name)
        except (ModelTablesMissingError, ModelLoadError) as error:
            context.log.warning(f"model {name}: not tagged: {str(error).splitlines()[0]}")
            continue
        subsets = card_subsets(cards.get(name), vectors.items[C.ITEM_ID].to_list())
        calibration = subsets[HELD_OUT] if subsets else None
        tags, reports = tag_items(vectors.items, vectors.image, facets, partial(encode_texts, clip), calibration)
        rows = pa.Table.from_pandas(tags.to_pandas(), preserve_index=False)
        write_item_columns(db, [table_name(name, modality) for modality in C.MODALITIES], rows)
        metadata[f"{name}/facets"] = MetadataValue.md(markdown_table(
            ["facet", "mirrors", "calibrated on", "threshold (margin)", "precision", "coverage",
             "accuracy (no abstain)"],
            [[r.facet, r.mirrors or "–", _calibrated_on(r, subsets is not None), f"{r.threshold:.3f}",
              _fmt(r.precision), _fmt(r.coverage), _fmt(r.accuracy)]
             for r in reports],
        ))
        metadata[f"{name}/label_counts"] = MetadataValue.json({r.facet: r.label_counts for r in reports})
    return MaterializeResult(metadata=metadata)


def _calibrated_on(report: FacetReport, held_out: bool) -> str:
    if not report.mirrors or report.coverage is None:  # no mirrored attribute among the items
        return "–"
    return f"{report.calibration_items} held-out items" if held_out else f"all {report.calibration_items} items"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


class CaptionQAConfig(Config):
    model: str | None = Field(default=None, description="Registry model (default: the first with tables).")
    top: int = Field(default=DEFAULT_TOP, ge=1, description="An item's description must be among its image's top N.")


@asset_check(asset=product_clusters, description="Items whose own description is not among their image's top 10 "
             "descriptions (caption-image mismatch), with thumbnails (a warning for merchandisers).")
def caption_image_mismatch(config: CaptionQAConfig, storage: CatalogStorage, models: ModelRegistry) -> AssetCheckResult:
    """List the caption-image mismatches of the catalog by the model's vectors."""
    vectors = _vectors(storage, models, config.model)
    mismatched = caption_mismatches(vectors.items, vectors.image, vectors.text, config.top)
    shown = mismatched.head(SHOWN_MISMATCHES)
    sheet = contact_sheet(
        [(f"rank {r}", [u]) for r, u in zip(shown["description_rank"], shown[C.IMAGE_URI])], storage.read_bytes, per_row=1
    ) if shown.height else None
    table = markdown_table(
        ["item", "description", "rank"], shown.select(C.ITEM_ID, C.DESCRIPTION, "description_rank").rows()
    ) if shown.height else None
    return AssetCheckResult(
        passed=mismatched.height == 0,
        severity=AssetCheckSeverity.WARN,
        description=f"{mismatched.height} of {vectors.items.height} items: own description outside the image's "
        f"top {config.top} ({vectors.model})",
        metadata={
            "mismatched": mismatched.height,
            "items": vectors.items.height,
            "model": vectors.model,
            "listed": MetadataValue.md(table or "_none_"),
            **({"thumbnails": MetadataValue.md(markdown_image(sheet, "mismatches"))} if sheet else {}),
        },
    )
