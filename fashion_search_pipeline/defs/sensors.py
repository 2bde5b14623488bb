"""The drop sensor: complete new drops become `catalog_drops` partitions and one run each."""

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)
from dagster_aws.s3 import S3Resource

from fashion_search_pipeline.catalog.discovery import DiscoveryCursor, discover_drops
from fashion_search_pipeline.catalog.drops import drop_listing
from fashion_search_pipeline.defs.catalog_assets import DROP_ASSETS
from fashion_search_pipeline.defs.partitions import catalog_drops
from fashion_search_pipeline.defs.resources import CatalogStorage

catalog_drop_job = define_asset_job(
    "catalog_drop_job",
    selection=list(DROP_ASSETS),
    description="Read, validate and clean one catalog drop.",
)


@sensor(
    job=catalog_drop_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Finds complete drops (with their _SUCCESS marker) it has not seen, adds each as a "
    "catalog_drops partition and requests one run for it.",
)
def catalog_drop_sensor(context: SensorEvaluationContext, storage: CatalogStorage, s3: S3Resource):
    """One tick: list drops after the cursor's high-water mark, re-check pending ones, request runs.

    Drops already cleaned (materialized by hand from the UI or the CLI) are not run again.
    """
    client = s3.get_client() if storage.landing_uri.startswith("s3://") else None
    found = discover_drops(drop_listing(storage.landing_uri, client), DiscoveryCursor.from_json(context.cursor))
    for drop_id, reason in found.invalid.items():
        context.log.error(f"drop folder {drop_id!r} ignored: {reason}")
    known = set(context.instance.get_dynamic_partitions(catalog_drops.name))
    cleaned = context.instance.get_materialized_partitions(AssetKey("cleaned_captions")) if known and found.ready else set()
    ready = [drop_id for drop_id in found.ready if drop_id not in cleaned]
    new = [drop_id for drop_id in ready if drop_id not in known]
    if found.cursor.pending:
        context.log.info(f"waiting for _SUCCESS in: {', '.join(found.cursor.pending)}")
    if not ready:
        return SensorResult(skip_reason=SkipReason("no new complete drops"), cursor=found.cursor.to_json())
    return SensorResult(
        run_requests=[RunRequest(run_key=f"drop:{drop_id}", partition_key=drop_id) for drop_id in ready],
        dynamic_partitions_requests=[catalog_drops.build_add_request(new)] if new else [],
        cursor=found.cursor.to_json(),
    )


catalog_automation_sensor = AutomationConditionSensorDefinition(
    "catalog_automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    # Evaluated in the code location's process: the embeddings condition looks at the model files there.
    use_user_code_server=True,
    description="Evaluates the assets' automation conditions: a new cleaned drop refreshes catalog_items, "
    "which refreshes the embeddings partitions of every model whose weights are here (only new or changed "
    "items are embedded); a retrained domain_clip re-embeds domain-clip; evaluation and fusion_choices follow.",
)
