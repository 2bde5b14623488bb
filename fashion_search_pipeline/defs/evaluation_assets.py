"""retrieval_evaluation: MRR, recall@k and nDCG of every model, direction and fusion strategy; and its checks."""

from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AutomationCondition,
    Config,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    MaterializeResult,
    MetadataValue,
    RunConfig,
    asset,
    asset_check,
    materialize,
)
from pydantic import Field

from fashion_search_pipeline import columns as C
from fashion_search_pipeline import config as settings
from fashion_search_pipeline.defs.metadata import relative_to_home
from fashion_search_pipeline.defs.resources import CatalogStorage, ModelRegistry
from fashion_search_pipeline.evaluation.attributes import DEFAULT_ATTRIBUTES
from fashion_search_pipeline.evaluation.recommendation import fusion_choices as best_fusion_choices
from fashion_search_pipeline.evaluation.regression import metric_drops
from fashion_search_pipeline.evaluation.report import held_out_table, markdown_image, metric_rows, write_reports
from fashion_search_pipeline.evaluation.retrieval import DEFAULT_LABEL_COLUMNS
from fashion_search_pipeline.evaluation.suite import evaluate_catalog
from fashion_search_pipeline.models.availability import registry_availability
from fashion_search_pipeline.models.loading import LoadedClip, ModelLoadError
from fashion_search_pipeline.models.published import training_cards
from fashion_search_pipeline.store.fusion_choices import TABLE as CHOICES_TABLE
from fashion_search_pipeline.store.fusion_choices import FusionChoice, record_fusion_choices

ASSET = "retrieval_evaluation"
CHOICES_ASSET = "fusion_choices"
CHOICES_METADATA = "fusion_choices_by_model"
REPORT_FOLDER = "retrieval_evaluation"

# Eager on the embeddings, but not blocked by missing embeddings partitions: a registered model that
# cannot be loaded here never gets its tables, and the models that do should still be evaluated.
# catalog_items does not trigger it: the catalog changes before the embeddings are synced to it.
EVALUATION_AUTOMATION = (
    AutomationCondition.eager()
    .without(~AutomationCondition.any_deps_missing())
    .ignore(AssetSelection.assets("catalog_items"))
)


def default_report_folder(home: str | Path | None) -> Path:
    """Where retrieval_evaluation writes its reports unless configured otherwise: <home>/reports/..."""
    return Path(home or settings.Settings.from_env({}).home) / "reports" / REPORT_FOLDER


class RetrievalEvaluationConfig(Config):
    """What retrieval_evaluation measures, and where it writes its reports."""

    captions_files: list[str] = Field(
        default=[],
        description="Evaluation files with several captions per image (image,caption CSV; the image's file "
        "stem is the item id): local paths or s3:// URIs. Captions of unknown items are skipped and counted.",
    )
    label_columns: list[str] = Field(
        default=list(DEFAULT_LABEL_COLUMNS),
        description="Items sharing all these labels count as relevant to each other (image_to_image, search).",
    )
    zero_shot_attributes: list[str] = Field(
        default=list(DEFAULT_ATTRIBUTES), description="Attribute columns to classify zero-shot."
    )
    max_queries: int | None = Field(
        default=5000, description="Per task, evaluate a seeded sample of at most this many queries (null: all)."
    )
    reports_dir: str | None = Field(
        default=None, description="Folder for the report files (default: reports/retrieval_evaluation in the data folder)."
    )


@asset(
    deps=[AssetKey("embeddings")],
    group_name="evaluation",
    kinds={"numpy", "lancedb"},
    owners=["team:search"],
    tags={"stage": "evaluate"},
    automation_condition=EVALUATION_AUTOMATION,
)
def retrieval_evaluation(
    context: AssetExecutionContext,
    config: RetrievalEvaluationConfig,
    catalog_items: pl.DataFrame,
    storage: CatalogStorage,
    models: ModelRegistry,
) -> MaterializeResult:
    """Which model and which fusion to use: MRR, recall@k, nDCG@10 and median rank per model for
    text→image, image→text, image→image and fused search (raw, rrf, weighted, image, text), plus
    zero-shot attribute accuracy; written as reports (markdown, plots, per-query parquet)."""

    statuses = registry_availability(models.specs())
    unavailable = {name: status.describe().removeprefix("unavailable: ") for name, status in statuses.items()
                   if not status.available}

    def load(name: str) -> LoadedClip | None:
        if name in unavailable:
            return None
        try:
            return models.load(name)
        except ModelLoadError as error:
            context.log.warning(f"model {name} unavailable: {str(error).splitlines()[0]}")
            return None

    evaluation = evaluate_catalog(
        storage.connect_db(),
        sorted(models.specs()),
        load,
        catalog_ids=catalog_items[C.ITEM_ID].to_list(),
        captions={Path(uri).name: storage.read_bytes(uri) for uri in config.captions_files},
        label_columns=config.label_columns,
        attributes=config.zero_shot_attributes,
        max_queries=config.max_queries,
        unavailable=unavailable,
        training_cards=training_cards(models.specs()),
        log=context.log.info,
    )
    folder = Path(config.reports_dir) if config.reports_dir else default_report_folder(storage.home)
    files = write_reports(evaluation, folder, storage.read_bytes)
    choices = best_fusion_choices(evaluation.results)
    rows = metric_rows(evaluation.results)
    recommendation = files.recommendation
    metadata = {
        "summary": MetadataValue.md(files.markdown),
        "recommendation": MetadataValue.md(recommendation.sentence() if recommendation else "nothing was evaluated"),
        "recall_at_k": MetadataValue.md(markdown_image(files.recall_plot.read_bytes(), "recall@k")),
        "recall_at_k_png": MetadataValue.path(relative_to_home(files.recall_plot, storage.home)),
        "examples": MetadataValue.md(markdown_image(files.examples.read_bytes(), "example queries")),
        "examples_png": MetadataValue.path(relative_to_home(files.examples, storage.home)),
        "per_query_ranks": MetadataValue.path(relative_to_home(files.per_query, storage.home)),
        "report_folder": MetadataValue.path(relative_to_home(files.folder, storage.home)),
        "metrics": MetadataValue.json(rows),
        "models_evaluated": len(evaluation.items),
    }
    if recommendation is not None:
        metadata |= {"best_model": recommendation.model, "best_mrr": recommendation.mrr}
    if recommendation is not None and recommendation.strategy is not None:
        metadata["best_fusion"] = recommendation.strategy
    metadata[CHOICES_METADATA] = MetadataValue.json(
        {model: {"fusion": c.fusion, "mean_mrr": c.mean_mrr, "tasks": list(c.tasks)} for model, c in choices.items()}
    )
    if choices:
        metadata["fusion_choices"] = MetadataValue.md(
            "| model | CatalogSearch fusion | mean MRR |\n|---|---|---|\n"
            + "\n".join(f"| {model} | {choice.fusion} | {choice.mean_mrr:.3f} |" for model, choice in choices.items())
        )
    held_out = held_out_table(evaluation.results)
    if held_out:
        metadata["held_out_vs_in_sample"] = MetadataValue.md(held_out)
    for row in rows:
        if row["strategy"] is None and row["mrr"] is not None:
            subset = f"{row['subset']}/" if row["subset"] else ""
            metadata[f"mrr/{row['model']}/{subset}{row['task']}"] = row["mrr"]
    for note in evaluation.notes:
        context.log.warning(note)
    return MaterializeResult(metadata=metadata)


class RegressionCheckConfig(Config):
    """How far a metric may fall between two evaluations before the check warns."""

    margin: float = Field(default=0.02, ge=0, description="Largest allowed drop of a metric (absolute, e.g. 0.02 MRR).")


@asset_check(asset=ASSET, description="MRR, recall@1/5/10 and nDCG@10 did not drop by more than the margin "
             "against the previous materialization (a warning).")
def metrics_not_regressed(context: AssetCheckExecutionContext, config: RegressionCheckConfig) -> AssetCheckResult:
    """Compare the latest materialization's metrics with the one before it."""
    records = context.instance.fetch_materializations(AssetKey(ASSET), limit=2).records
    if len(records) < 2:
        return AssetCheckResult(passed=True, description="no earlier materialization to compare with")
    current, previous = (
        record.asset_materialization.metadata.get("metrics") for record in records
    )
    if current is None or previous is None:
        return AssetCheckResult(passed=True, description="a materialization without metrics: nothing to compare")
    drops = metric_drops(current.value, previous.value, config.margin)
    return AssetCheckResult(
        passed=not drops,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "margin": config.margin,
            "drops": len(drops),
            "dropped_metrics": MetadataValue.md("\n".join(f"- {d.describe()}" for d in drops) or "none"),
        },
        description=f"{len(drops)} metrics dropped by more than {config.margin}" if drops else "no metric dropped",
    )


# Published after every evaluation, unless a blocking check upstream failed (a broken table must not
# choose how search fuses its results).
CHOICES_AUTOMATION = (
    AutomationCondition.eager()
    & ~AutomationCondition.any_deps_match(
        AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)
    )
).with_label("eager unless a blocking check upstream failed")


@asset(
    deps=[AssetKey(ASSET)],
    group_name="evaluation",
    kinds={"lancedb"},
    owners=["team:search"],
    tags={"stage": "serve"},
    automation_condition=CHOICES_AUTOMATION,
)
def fusion_choices(context: AssetExecutionContext, storage: CatalogStorage) -> MaterializeResult:
    """Each model's fusion strategy for CatalogSearch: the best one of the latest retrieval evaluation,
    written to the LanceDB table `fusion_choices` that every CatalogSearch (and the service) reads."""
    event = context.instance.get_latest_materialization_event(AssetKey(ASSET))
    entry = event.asset_materialization.metadata.get(CHOICES_METADATA) if event else None
    chosen = entry.value if entry is not None else {}
    choices = {
        model: FusionChoice(value["fusion"], value["mean_mrr"], tuple(value["tasks"])) for model, value in chosen.items()
    }
    if choices:
        record_fusion_choices(storage.connect_db(), choices)
    else:
        context.log.warning("the latest retrieval evaluation chose no fusion: the recorded choices are kept")
    rows = "\n".join(f"| {model} | {c.fusion} | {c.mean_mrr:.3f} |" for model, c in sorted(choices.items()))
    return MaterializeResult(
        metadata={
            "dagster/table_name": CHOICES_TABLE,
            "dagster/row_count": len(choices),
            "dagster/storage_kind": "lancedb",
            "choices": MetadataValue.md("| model | fusion | mean MRR |\n|---|---|---|\n" + rows if rows else "_(none)_"),
        }
    )


def materialize_evaluation(
    defs: Definitions,
    instance: DagsterInstance,
    config: RetrievalEvaluationConfig,
    *,
    console_log_level: str = "WARNING",
) -> ExecuteInProcessResult:
    """Materialize retrieval_evaluation and fusion_choices with their checks in-process (the CLI; the UI runs the same)."""
    return materialize(
        [*defs.assets, *defs.asset_checks],
        instance=instance,
        resources=defs.resources,
        selection=[ASSET, CHOICES_ASSET],
        raise_on_error=False,
        run_config=RunConfig(
            ops={ASSET: config}, loggers={"console": {"config": {"log_level": console_log_level}}}
        ),
    )
